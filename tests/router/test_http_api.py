"""The HTTP JSON surface (router-schema §1, §4, §11) against a real loopback server."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.common.grpc_client import open_channel
from services.common.pb import router_pb2, router_pb2_grpc
from services.router.app import EmbeddedHttpServer, RouterApp
from services.router.pbjson import to_json
from tests.router.conftest import (
    ALIASES,
    GPT4,
    MIXTRAL,
    REFERENCE_CATALOG,
    StartRouter,
    write_json,
)

Client = httpx.AsyncClient


def assert_common_headers(response: httpx.Response, policy_rev: str) -> None:
    assert response.headers["router-schema"] == "1.1"
    assert response.headers["router-latency"].isdigit()
    assert response.headers["config-revision"] == policy_rev


def rev(router: RouterApp) -> str:
    return router.service.config.policy_rev  # type: ignore[union-attr]


async def test_plan_headers_and_body(http: Client, router: RouterApp) -> None:
    response = await http.post(
        "/route/plan",
        json={
            "schema_version": "1.1",
            "alias": MIXTRAL,
            "estimates": {"prompt_tokens": 1000, "max_output_tokens": 100},
        },
    )
    assert response.status_code == 200
    assert_common_headers(response, rev(router))
    body = response.json()
    h = response.headers
    assert h["x-route-cache"] == "miss"
    assert h["x-route-id"] == body["route_id"]
    assert h["x-resolved-model"] == body["upstream"]["model_id"]
    assert h["x-route-tier"] == "T1"
    assert h["x-policy-rev"] == body["policy_rev"] == rev(router)
    assert h["x-content-used"] == "none"
    assert body["policy"]["explain"] == f"catalog {MIXTRAL} -> {body['upstream']['model_id']}"
    # 64-bit integers are JSON numbers (never strings), unset optionals are omitted.
    assert b'"est_cost_micro":660' in response.content
    assert isinstance(body["limits"]["max_input_tokens"], int)
    assert "stickiness" not in body and "judge" not in body


async def test_http_and_grpc_give_the_same_plan_json(http: Client, router: RouterApp) -> None:
    request: dict[str, Any] = {
        "alias": "with-fallback",
        "api": "chat",
        "estimates": {"prompt_tokens": 10},
    }
    http_plan = (await http.post("/route/plan", json=request)).json()
    async with open_channel(f"127.0.0.1:{router.grpc_port}") as channel:
        stub = router_pb2_grpc.RouterStub(channel)
        grpc_plan = to_json(await stub.Plan(router_pb2.RouteRequest(**request)))
    assert http_plan.pop("route_id") != grpc_plan.pop("route_id")
    assert http_plan == grpc_plan
    assert grpc_plan["cache"] == {
        "ttl_ms": 5000,
        "etag": router.service.config.catalog.revision,  # type: ignore[union-attr]
        "freeze_key": grpc_plan["cache"]["freeze_key"],
    }


async def test_legacy_and_unknown_fields(http: Client) -> None:
    legacy = {
        "alias": "auto",
        "role": "analyst",
        "task": "qa",
        "privacy": "features",
        "targets": {"latency_p95_ms": 1000},
        "hints": {"anything": 1},
        "a_future_field": {"x": 1},
    }
    response = await http.post("/route/plan", json=legacy)
    assert response.status_code == 409 and response.json()["code"] == "NO_ROUTE"
    legacy["targets"] = {"latency_target_ms": 60_000, "max_cost_usd": 0.000001}
    legacy["estimates"] = {"prompt_tokens": 10_000}
    response = await http.post("/route/plan", json=legacy)
    assert response.status_code == 409 and response.json()["code"] == "BUDGET_EXCEEDED"
    legacy["targets"] = {"max_cost_usd": 1.0}
    assert (await http.post("/route/plan", json=legacy)).status_code == 200


async def test_error_bodies(http: Client, router: RouterApp, start_router: StartRouter) -> None:
    cases: list[tuple[Any, int, str]] = [
        ({"alias": ""}, 400, "INVALID_REQUEST"),
        ({"alias": 12}, 400, "INVALID_REQUEST"),
        ({"alias": "a", "schema_version": "9"}, 409, "UNSUPPORTED_SCHEMA"),
        ({"alias": "auto", "caps": ["vision"]}, 409, "NO_ROUTE"),
        (
            {"alias": "auto", "estimates": {"prompt_tokens": 9999}, "budget": {"amount_micro": 1}},
            409,
            "BUDGET_EXCEEDED",
        ),
    ]
    for body, status, code in cases:
        response = await http.post("/route/plan", json=body, headers={"x-request-id": "req-7"})
        assert response.status_code == status, response.text
        error = response.json()
        assert error["code"] == code and error["schema_version"] == "1.1"
        assert error["policy_rev"] == rev(router) and error["message"]
        assert error["request_id"] == "req-7"
        assert_common_headers(response, rev(router))
    assert response.json().get("supported") is None
    unsupported = await http.post("/route/plan", json={"alias": "a", "schema_version": "2"})
    assert unsupported.json()["supported"] == ["1.0", "1.1"]
    # Judged before any field, and numbers are versions too.
    for version in (2, 1.2, {"major": 1}):
        response = await http.post("/route/plan", json={"alias": 5, "schema_version": version})
        assert response.status_code == 409 and response.json()["code"] == "UNSUPPORTED_SCHEMA"
    numeric = await http.post("/route/plan", json={"alias": "o3", "schema_version": 1.1})
    assert numeric.status_code == 200

    not_json = await http.post("/route/plan", content=b"{nope")
    assert not_json.status_code == 400 and not_json.json()["code"] == "INVALID_REQUEST"

    gate = router.service.planner.gate  # type: ignore[union-attr]
    with contextlib.ExitStack() as stack:
        for _ in range(256):
            stack.enter_context(gate.slot())
        overloaded = await http.post("/route/plan", json={"alias": "o3", "request_id": "r-9"})
    assert overloaded.status_code == 503
    assert overloaded.headers["retry-after"] == "1"
    assert overloaded.json() == {
        "schema_version": "1.1",
        "code": "ROUTER_OVERLOADED",
        "message": "more than 256 plans in flight",
        "request_id": "r-9",
        "policy_rev": rev(router),
        "retry_hint_ms": 100,
    }

    feedback = {"feedback": [{"route_id": "x", "model_id": MIXTRAL, "success": False}] * 20}
    assert (await http.post("/route/feedback", json=feedback)).json() == {"accepted": 20}
    unhealthy = await http.post("/route/plan", json={"alias": MIXTRAL})
    assert unhealthy.status_code == 502 and unhealthy.json()["code"] == "UPSTREAM_UNHEALTHY"

    strict = await start_router(router_default_upstream=False)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{strict.http_port}") as client:
        unknown = await client.post("/route/plan", json={"alias": "o3"})
    assert unknown.status_code == 404 and unknown.json()["code"] == "ALIAS_UNKNOWN"


async def test_plan_batch(http: Client) -> None:
    response = await http.post(
        "/route/plan_batch",
        json={
            "plans": [
                {"alias": "nano-basic"},
                {"alias": "", "request_id": "b-2"},
                {"alias": "", "request_id": 42},
                "not an object",
                {"alias": "auto", "caps": ["vision"]},
                {"alias": "vllm-x"},
            ]
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert re.fullmatch(r"bat_[0-9a-f]{16}", body["batch_id"])
    codes = [item.get("code") for item in body["plans"]]
    assert codes == [
        None,
        "INVALID_REQUEST",
        "INVALID_REQUEST",
        "INVALID_REQUEST",
        "NO_ROUTE",
        None,
    ]
    assert body["plans"][1]["request_id"] == "b-2"
    assert body["plans"][5]["upstream"]["model_id"] == "vllm-x"
    assert "route_id" in body["plans"][0]

    full = await http.post("/route/plan_batch", json={"plans": [{"alias": "o3"}] * 64})
    assert full.status_code == 200 and len(full.json()["plans"]) == 64
    for bad in ({"plans": []}, {"plans": [{"alias": "o3"}] * 65}, {"plans": "x"}, []):
        response = await http.post("/route/plan_batch", json=bad)
        assert response.status_code == 400 and response.json()["code"] == "INVALID_REQUEST"


async def test_catalog_etag(http: Client, router: RouterApp) -> None:
    response = await http.get("/catalog/models")
    assert response.status_code == 200
    revision = router.service.config.catalog.revision  # type: ignore[union-attr]
    assert response.headers["etag"] == f'"{revision}"'
    body = response.json()
    assert body["revision"] == revision
    models = {m["id"]: m for m in body["models"]}
    assert sorted(models) == sorted([MIXTRAL, GPT4])
    assert "upstream" not in models[MIXTRAL]
    assert models[GPT4]["cost"]["output_per_million_micro"] == 30_000_000
    assert models[MIXTRAL]["status"] == "healthy"
    for tag in (f'"{revision}"', f'W/"{revision}"', f'"cat_000000000000", "{revision}"', "*"):
        cached = await http.get("/catalog/models", headers={"if-none-match": tag})
        assert cached.status_code == 304 and cached.content == b""
        assert cached.headers["etag"] == f'"{revision}"'
        assert_common_headers(cached, rev(router))
    stale = await http.get("/catalog/models", headers={"if-none-match": '"cat_000000000000"'})
    assert stale.status_code == 200


async def test_capabilities_and_health(http: Client) -> None:
    caps = (await http.get("/capabilities")).json()
    assert caps["schema_versions"] == ["1.0", "1.1"]
    assert caps["router"]["name"] == "signalbox-router"
    assert "/route/plan_batch" in caps["endpoints"]
    assert caps["features"]["cache"] == ["ttl_ms", "valid_until", "freeze_key", "etag"]
    assert caps["features"]["privacy_modes"] == ["features_only", "summary", "full"]
    assert caps["features"]["policies"] == ["alias_table", "knn", "catalog", "prefix", "default"]
    assert caps["limits"] == {"plan_batch_max": 64}
    health = (await http.get("/health")).json()
    assert health["status"] == "healthy" and health["service"] == "router" and health["version"]


async def test_feedback_forms(http: Client) -> None:
    plan = (await http.post("/route/plan", json={"alias": GPT4 + "-x"})).json()
    one = {"route_id": plan["route_id"], "success": True, "latency_ms": 120, "output_tokens": 60}
    response = await http.post("/route/feedback", json=one)
    assert response.status_code == 202 and response.json() == {"accepted": 1}
    many = {
        "feedback": [
            {"route_id": "r1", "model_id": GPT4, "success": False, "error": "gpt: 500"},
            {"route_id": "r2", "model_id": GPT4, "success": True, "duration_ms": 300},
        ]
    }
    assert (await http.post("/route/feedback", json=many)).json() == {"accepted": 2}
    models = {m["id"]: m for m in (await http.get("/catalog/models")).json()["models"]}
    assert models[GPT4]["slos"]["recent"]["error_rate"] == 0.5
    assert models[GPT4]["slos"]["target_p95_ms"] == 30000
    for bad in (
        {"success": True},
        {"route_id": "r"},
        {"feedback": [{"route_id": "r", "success": True}, {"route_id": "", "success": True}]},
        {"feedback": "x"},
        {"route_id": "r", "success": "yes"},
    ):
        response = await http.post("/route/feedback", json=bad)
        assert response.status_code == 400, bad
    models = {m["id"]: m for m in (await http.get("/catalog/models")).json()["models"]}
    assert models[GPT4]["slos"]["recent"]["error_rate"] == 0.5  # nothing half-applied


async def test_feedback_invalidation_header(http: Client) -> None:
    plan = (await http.post("/route/plan", json={"alias": GPT4 + "-y"})).json()
    catalog_plan = (await http.post("/route/plan", json={"alias": MIXTRAL})).json()
    freeze = catalog_plan["cache"]["freeze_key"]
    assert (
        "x-route-invalidate" not in (await http.post("/route/plan", json={"alias": "o3"})).headers
    )
    failures = [{"route_id": catalog_plan["route_id"], "success": False}] * 20
    await http.post("/route/feedback", json={"feedback": failures})
    response = await http.post("/route/plan", json={"alias": "o3"})
    assert response.headers["x-route-invalidate"] == freeze
    batch = await http.post("/route/plan_batch", json={"plans": [{"alias": "o3"}]})
    assert batch.headers["x-route-invalidate"] == freeze
    assert plan["cache"]["freeze_key"] != freeze


@contextlib.asynccontextmanager
async def models_server(status: int) -> AsyncIterator[str]:
    """A stand-in OpenAI-compatible upstream answering `GET /v1/models`."""

    async def models(_: object) -> JSONResponse:
        return JSONResponse({"object": "list", "data": []}, status_code=status)

    server = EmbeddedHttpServer(Starlette(routes=[Route("/v1/models", models)]), "127.0.0.1:0")
    port = await server.start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await server.stop()


async def test_prefetch_probes_models(
    start_router: StartRouter, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    doc = orjson.loads(REFERENCE_CATALOG.read_bytes())
    async with models_server(200) as up, models_server(503) as failing:
        doc["models"][0]["upstream"]["base_url"] = up
        doc["models"][1]["upstream"]["base_url"] = f"http://127.0.0.1:{free_port()}/v1"
        catalog = write_json(tmp_path / "catalog.json", doc)
        app = await start_router(catalog_path=catalog, router_default_upstream=False)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as http:
            response = await http.post(
                "/route/prefetch", json={"alias": "auto", "warm": ["vllm", GPT4, "nobody"]}
            )
            assert response.status_code == 202
            assert response.json() == {
                "alias": "auto",
                "warmed": ["vllm", GPT4],
                "unknown": ["nobody"],
            }
            models = {m["id"]: m for m in (await http.get("/catalog/models")).json()["models"]}
            assert models[MIXTRAL]["status"] == "healthy"
            assert models[GPT4]["status"] == "degraded"
            assert models[GPT4]["status_reason"] == "probe failed: ConnectError"
            # KNN now avoids the unreachable model.
            plan = (await http.post("/route/plan", json={"alias": "auto-short"})).json()
            assert plan["upstream"]["base_url"] == up

            doc["models"][1]["upstream"]["base_url"] = failing
            write_json(catalog, doc)
            assert (await app.service.reload()).success  # type: ignore[union-attr]
            await http.post("/route/prefetch", json={"alias": "auto", "warm": [GPT4]})
            models = {m["id"]: m for m in (await http.get("/catalog/models")).json()["models"]}
            assert models[GPT4]["status_reason"] == "probe: HTTP 503"

            unknown = await http.post("/route/prefetch", json={"alias": "nope", "warm": []})
            assert unknown.status_code == 404 and unknown.json()["code"] == "ALIAS_UNKNOWN"
            empty = await http.post("/route/prefetch", json={"warm": []})
            assert empty.status_code == 400


async def test_reload_routing_admin(start_router: StartRouter, alias_file: Path) -> None:
    token = "a" * 40
    app = await start_router(admin_token=token)
    base = f"http://127.0.0.1:{app.http_port}"
    async with httpx.AsyncClient(base_url=base) as http:
        missing = await http.post("/reload/routing")
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "missing_admin_token"
        wrong = await http.post("/reload/routing", headers={"authorization": "Bearer nope"})
        assert wrong.json()["error"]["code"] == "invalid_admin_token"

        auth = {"authorization": f"Bearer {token}"}
        write_json(
            alias_file,
            {**ALIASES, "extra": {"base_url": "http://e", "mode": "chat", "model_id": "e"}},
        )
        ok = await http.post("/reload/routing", headers=auth)
        assert ok.status_code == 200
        body = ok.json()
        assert body["success"] is True
        assert body["stats"]["aliases"] == 6 and body["stats"]["knn_examples"] == 0
        assert ok.headers["config-revision"] == body["stats"]["policy_rev"]

        write_json(
            alias_file,
            {"auto": {"policy": "knn", "candidates": ["ghost"], "default_model": "ghost"}},
        )
        failed = await http.post("/reload/routing", headers=auth)
        assert failed.status_code == 500
        assert failed.json()["error"]["code"] == "config_invalid"
        assert "ghost" in failed.json()["error"]["message"]
        assert (await http.post("/route/plan", json={"alias": "extra"})).json()["upstream"][
            "model_id"
        ] == "e"

    write_json(alias_file, ALIASES)
    disabled = await start_router()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{disabled.http_port}") as http:
        response = await http.post("/reload/routing", headers={"authorization": "Bearer x"})
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "admin_disabled"


async def test_unexpected_failure_is_internal(
    http: Client, router: RouterApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(*_: object) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(router.service.planner, "plan", explode)  # type: ignore[union-attr]
    response = await http.post("/route/plan", json={"alias": "o3", "request_id": "r-1"})
    assert response.status_code == 500
    body = response.json()
    assert (body["code"], body["request_id"]) == ("INTERNAL", "r-1")
    assert "secret detail" not in response.text
    batch = await http.post("/route/plan_batch", json={"plans": [{"alias": "o3"}]})
    assert batch.status_code == 200 and batch.json()["plans"][0]["code"] == "INTERNAL"


async def test_unhandled_errors_keep_the_error_shape(
    http: Client, router: RouterApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*_: object) -> None:
        raise KeyError("catalog bug")

    monkeypatch.setattr(router.service, "catalog", explode)  # type: ignore[union-attr]
    response = await http.get("/catalog/models", headers={"x-request-id": "r-2"})
    assert response.status_code == 500
    assert response.json()["code"] == "INTERNAL" and response.json()["request_id"] == "r-2"
