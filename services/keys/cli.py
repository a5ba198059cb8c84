"""`signalbox keys create|list|revoke|expire`: operator CLI over the keys gRPC service.

Talks to `--addr` (default `SIGNALBOX_KEYS_ADDR`, else 127.0.0.1:50052) with
`SIGNALBOX_INTERNAL_TOKEN` when set (env only, so it never shows in `ps`). Prints JSON in
the admin-route shapes of keys.md §6. A generated token is printed once, to stdout only.

Exit status: 0 ok, 1 keys service unreachable or failing, 2 rejected input.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

import grpc
import orjson
from pydantic import ValidationError

from services.common.grpc_client import open_channel
from services.common.pb import keys_pb2, keys_pb2_grpc
from services.edge.admin_keys import (
    GenerateBatchBody,
    GenerateBody,
    generated_key_json,
    issue_fields,
    key_info_json,
)
from services.keys.service import ERROR_CODE_METADATA

DEFAULT_ADDR = "127.0.0.1:50052"
RPC_TIMEOUT_S = 10.0


class CliError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="signalbox", description="Signalbox operator tools.")
    groups = parser.add_subparsers(dest="group", required=True)
    keys = groups.add_parser("keys", help="manage API keys (keys service over gRPC)")
    keys.add_argument("--addr", default=os.environ.get("SIGNALBOX_KEYS_ADDR") or DEFAULT_ADDR)
    commands = keys.add_subparsers(dest="command", required=True)

    create = commands.add_parser("create", help="generate one key, or one per --labels entry")
    create.add_argument("--label")
    create.add_argument("--labels", help="comma-separated labels: a batch, one key each")
    create.add_argument("--label-prefix")
    create.add_argument("--ttl-seconds", type=int)
    create.add_argument("--expires-at", type=int, help="unix seconds")
    create.add_argument("--scope", action="append", dest="scopes", help="repeatable")
    create.add_argument("--rpm", type=int)
    create.add_argument("--tpm", type=int)
    create.add_argument("--budget-micro", type=int, help="spend budget in micro-USD")
    create.add_argument("--budget-period", choices=("day", "month"), default="month")
    create.add_argument("--tenant")
    create.add_argument("--project")

    listing = commands.add_parser("list", help="list keys, oldest first")
    listing.add_argument("--label")
    listing.add_argument("--label-prefix")
    listing.add_argument("--active", action="store_true", help="leave revoked keys out")

    revoke = commands.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id")

    expire = commands.add_parser("expire", help="set, or with neither option clear, an expiry")
    expire.add_argument("id")
    when = expire.add_mutually_exclusive_group()
    when.add_argument("--expires-at", type=int, help="unix seconds; may be in the past")
    when.add_argument("--ttl-seconds", type=int)
    return parser


def _create_body(args: argparse.Namespace) -> GenerateBody:
    fields: dict[str, Any] = {
        "ttl_seconds": args.ttl_seconds,
        "expires_at": args.expires_at,
        "scopes": args.scopes,
        "tenant": args.tenant,
        "project": args.project,
    }
    if args.rpm is not None or args.tpm is not None:
        fields["rate_limit"] = {"rpm": args.rpm, "tpm": args.tpm}
    if args.budget_micro is not None:
        fields["budget"] = {"limit_micro": args.budget_micro, "period": args.budget_period}
    try:
        if args.labels is not None:
            labels = args.labels.split(",")
            return GenerateBatchBody(labels=labels, label_prefix=args.label_prefix, **fields)
        return GenerateBody(label=args.label, **fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CliError(2, f"invalid_request: {where}: {first['msg']}") from None


async def _run(args: argparse.Namespace) -> Any:
    async with open_channel(args.addr, os.environ.get("SIGNALBOX_INTERNAL_TOKEN")) as channel:
        stub = keys_pb2_grpc.KeysStub(channel)
        if args.command == "create":
            body = _create_body(args)
            if isinstance(body, GenerateBatchBody):
                message = keys_pb2.GenerateBatchRequest(labels=body.labels, **issue_fields(body))
                batch = await stub.GenerateBatch(message, timeout=RPC_TIMEOUT_S)
                return [generated_key_json(k) for k in batch.keys]
            one = await stub.Generate(
                keys_pb2.GenerateRequest(**issue_fields(body)), timeout=RPC_TIMEOUT_S
            )
            return generated_key_json(one)
        if args.command == "list":
            fields: dict[str, Any] = {"include_revoked": not args.active}
            if args.label is not None:
                fields["label"] = args.label
            elif args.label_prefix is not None:
                fields["label_prefix"] = args.label_prefix
            listed = await stub.List(keys_pb2.ListRequest(**fields), timeout=RPC_TIMEOUT_S)
            return [key_info_json(k) for k in listed.keys]
        if args.command == "revoke":
            revoked = await stub.Revoke(keys_pb2.RevokeRequest(id=args.id), timeout=RPC_TIMEOUT_S)
            return {"revoked": revoked.revoked, "id": revoked.id}
        expiry = {"expires_at": args.expires_at, "ttl_seconds": args.ttl_seconds}
        message = keys_pb2.SetExpirationRequest(
            id=args.id, **{k: v for k, v in expiry.items() if v is not None}
        )
        reply = await stub.SetExpiration(message, timeout=RPC_TIMEOUT_S)
        if not reply.updated:
            return {"updated": False, "id": reply.id}
        expires_at = reply.expires_at if reply.HasField("expires_at") else None
        return {"updated": True, "id": reply.id, "expires_at": expires_at}


def _rpc_failure(exc: grpc.aio.AioRpcError) -> CliError:
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        code = dict(exc.trailing_metadata() or ()).get(ERROR_CODE_METADATA, "invalid_request")
        return CliError(2, f"{code}: {exc.details()}")
    return CliError(1, f"keys service at the given address failed: {exc.code().name}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = asyncio.run(_run(args))
    except grpc.aio.AioRpcError as exc:
        error = _rpc_failure(exc)
    except CliError as exc:
        error = exc
    else:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(f"signalbox: {error}", file=sys.stderr)
    return error.status


if __name__ == "__main__":
    raise SystemExit(main())
