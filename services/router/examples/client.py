"""Ask the router for a plan over gRPC and over HTTP, and print both as Schema 1.1 JSON.

    python -m services.router.examples.client --alias auto \\
        --grpc 127.0.0.1:50051 --http http://127.0.0.1:8090

Copy what you need: `grpc_plan` is the whole gRPC client (plus `route-error-bin` decoding),
`http_plan` the whole HTTP one.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import grpc
import httpx
import orjson

from services.common.grpc_client import open_channel
from services.common.pb import router_pb2, router_pb2_grpc
from services.router.pbjson import to_json


class RouterError(Exception):
    """A typed Schema 1.1 error (`code`, `message`, `retry_hint_ms`, …) from either surface."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(f"{body.get('code')}: {body.get('message')}")
        self.body = body


def route_request(alias: str, api: str, prompt_tokens: int) -> dict[str, Any]:
    return {
        "schema_version": "1.1",
        "alias": alias,
        "api": api,
        "privacy_mode": "features_only",
        "caps": ["text"],
        "estimates": {"prompt_tokens": prompt_tokens, "tokenizer_id": "chars4"},
    }


async def grpc_plan(
    addr: str, request: dict[str, Any], internal_token: str | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """`Router.Plan`: the plan as JSON and the plan headers (initial metadata)."""
    message = router_pb2.RouteRequest(**request)
    async with open_channel(addr, internal_token) as channel:
        call = router_pb2_grpc.RouterStub(channel).Plan(message, timeout=2.0)
        try:
            plan = await call
        except grpc.aio.AioRpcError as exc:
            for key, value in exc.trailing_metadata() or ():
                if key == "route-error-bin":
                    raise RouterError(to_json(router_pb2.RouteError.FromString(value))) from exc
            raise
        return to_json(plan), dict(await call.initial_metadata())


async def http_plan(
    base_url: str, request: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """`POST /route/plan`: the plan as JSON and the response headers."""
    async with httpx.AsyncClient(base_url=base_url, timeout=2.0) as client:
        response = await client.post("/route/plan", json=request)
    body = response.json()
    if "code" in body:
        raise RouterError(body)
    return body, dict(response.headers)


async def run(args: argparse.Namespace) -> int:
    request = route_request(args.alias, args.api, args.prompt_tokens)
    try:
        if args.grpc:
            plan, headers = await grpc_plan(args.grpc, request, args.internal_token)
            print(f"gRPC  x-route-id={headers.get('x-route-id')}")
            print(orjson.dumps(plan, option=orjson.OPT_INDENT_2).decode())
        if args.http:
            plan, headers = await http_plan(args.http, request)
            print(f"HTTP  x-route-id={headers.get('x-route-id')}")
            print(orjson.dumps(plan, option=orjson.OPT_INDENT_2).decode())
    except RouterError as exc:
        print(f"router error: {orjson.dumps(exc.body).decode()}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alias", required=True)
    parser.add_argument("--api", choices=["chat", "responses"], default="chat")
    parser.add_argument("--prompt-tokens", type=int, default=100)
    parser.add_argument("--grpc", help="router gRPC address, e.g. 127.0.0.1:50051")
    parser.add_argument("--http", help="router HTTP base URL, e.g. http://127.0.0.1:8090")
    parser.add_argument("--internal-token", help="SIGNALBOX_INTERNAL_TOKEN, if the router sets one")
    args = parser.parse_args(argv)
    if not (args.grpc or args.http):
        parser.error("give --grpc and/or --http")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
