"""Ask a Signalbox router for plans over gRPC (`signalbox.router.v1.Router`), synchronously.

    make protos    # or, in your own project: python -m grpc_tools.protoc -I protos \\
                   #   --python_out=. --grpc_python_out=. protos/router.proto
    python examples/router/grpc_client.py --addr 127.0.0.1:50051 \\
        --alias auto --prompt "What is the derivative of x**3?" --quality 1

Steps: `Capabilities`, `Plan` (plan headers arrive as initial metadata), `PlanBatch` of the
prompt and two more, `Feedback` (a client stream; optional, with the quality the answer earned,
which teaches the KNN index), `Catalog`. Each step prints one JSON line. A typed router error
arrives as a gRPC status plus trailing metadata `route-error-bin` (a serialised `RouteError`);
it is printed and the script exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere in the repo
from services.common.pb import router_pb2, router_pb2_grpc


class RouterError(Exception):
    """A typed Schema 1.1 error: the gRPC status and the decoded `RouteError`."""

    def __init__(self, status: grpc.StatusCode, error: dict[str, Any]) -> None:
        super().__init__(f"{status.name} {error.get('code')}: {error.get('message')}")
        self.status, self.error = status, error


def as_json(message: Any) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def route_request(alias: str, prompt: str) -> router_pb2.RouteRequest:
    """A minimal RouteRequest; `summary` privacy lets the router read (only) the summary."""
    request = router_pb2.RouteRequest(
        schema_version="1.1", alias=alias, api="chat", privacy_mode="summary", caps=["text"]
    )
    request.conversation.summary = prompt[:512]
    request.conversation.turns = 1
    request.estimates.prompt_tokens = len(prompt) // 4 + 10
    request.estimates.tokenizer_id = "chars4"
    return request


def typed(exc: grpc.RpcError) -> RouterError | grpc.RpcError:
    for key, value in exc.trailing_metadata() or ():
        if key == "route-error-bin":
            return RouterError(exc.code(), as_json(router_pb2.RouteError.FromString(value)))
    return exc


def show(step: str, **fields: Any) -> None:
    print(json.dumps({"step": step, **fields}), flush=True)


def run(stub: router_pb2_grpc.RouterStub, args: argparse.Namespace, metadata: list) -> None:
    caps = stub.Capabilities(router_pb2.CapabilitiesRequest(), metadata=metadata, timeout=5)
    show("capabilities", schema_versions=list(caps.schema_versions), router=as_json(caps.router))

    plan, call = stub.Plan.with_call(
        route_request(args.alias, args.prompt), metadata=metadata, timeout=5
    )
    headers = dict(call.initial_metadata())
    show(
        "plan",
        route_id=plan.route_id,
        model=plan.upstream.model_id,
        base_url=plan.upstream.base_url,
        strategy=plan.policy.id,
        explain=plan.policy.explain,
        confidence=as_json(plan.policy).get("explain_detail", {}).get("confidence"),
        fallbacks=[f.model_id for f in plan.fallbacks],
        plan_token=plan.stickiness.plan_token or None,
        x_route_cache=headers.get("x-route-cache"),
    )

    prompts = [args.prompt, "Write a haiku about rain.", "Compute 17 * 23 and explain."]
    batch = stub.PlanBatch(
        router_pb2.PlanBatchRequest(plans=[route_request(args.alias, p) for p in prompts]),
        metadata=metadata,
        timeout=5,
    )
    show(
        "plan_batch",
        batch_id=batch.batch_id,
        models=[
            item.plan.upstream.model_id if item.HasField("plan") else item.error.code
            for item in batch.plans
        ],
    )

    if args.quality is not None:
        feedback = router_pb2.RouteFeedback(
            route_id=plan.route_id,
            model_id=plan.upstream.model_id,
            success=True,
            duration_ms=850,
            quality=args.quality,
        )
        ack = stub.Feedback(iter([feedback]), metadata=metadata, timeout=5)
        show("feedback", accepted=ack.accepted)

    catalog = stub.Catalog(router_pb2.CatalogRequest(), metadata=metadata, timeout=5)
    again = stub.Catalog(
        router_pb2.CatalogRequest(if_none_match=f'"{catalog.revision}"'),
        metadata=metadata,
        timeout=5,
    )
    show(
        "catalog",
        revision=catalog.revision,
        models=[m.id for m in catalog.models],
        not_modified=again.not_modified,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="127.0.0.1:50051", help="router gRPC address")
    parser.add_argument("--alias", default="auto")
    parser.add_argument("--prompt", default="What is the capital of Australia?")
    parser.add_argument("--quality", type=float, help="send feedback with this quality (0..1)")
    parser.add_argument("--token", help="SIGNALBOX_INTERNAL_TOKEN, if the router requires one")
    args = parser.parse_args(argv)
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
    with grpc.insecure_channel(args.addr) as channel:
        try:
            run(router_pb2_grpc.RouterStub(channel), args, metadata)
        except grpc.RpcError as exc:
            error = typed(exc)
            if not isinstance(error, RouterError):
                raise
            show("error", status=error.status.name, **error.error)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
