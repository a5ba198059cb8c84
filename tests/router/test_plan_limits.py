"""Plans carry `cache.valid_until` (catalog `deprecates_at`) and alias `limits` (HTTP, gRPC)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from services.common.grpc_client import open_channel
from services.common.pb import router_pb2, router_pb2_grpc
from services.router.app import RouterApp
from tests.router.conftest import GPT4, MIXTRAL, REFERENCE_CATALOG, StartRouter, write_json

NOW = int(time.time())
SOON, LATER, PAST = NOW + 3600, NOW + 2 * 86400, NOW - 86400
PLUS_TWO = timezone(timedelta(hours=2))


def utc(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def target(model: dict[str, Any]) -> dict[str, Any]:
    """A catalog model's upstream as an alias or fallback entry."""
    return {k: v for k, v in model["upstream"].items() if k != "auth_env"}


def catalog() -> dict[str, Any]:
    """The reference catalog: mixtral retires SOON, gpt-4 LATER (given at +02:00), old is gone."""
    doc: dict[str, Any] = orjson.loads(REFERENCE_CATALOG.read_bytes())
    mixtral, gpt4 = doc["models"]
    mixtral["deprecates_at"] = utc(SOON)
    gpt4["deprecates_at"] = datetime.fromtimestamp(LATER, PLUS_TWO).isoformat()
    old = {
        "id": "old-model",
        "deprecates_at": utc(PAST),
        "upstream": {"base_url": "http://old/v1", "mode": "chat", "model_id": "old-1"},
    }
    doc["models"].append(old)
    return doc


def aliases(doc: dict[str, Any]) -> dict[str, Any]:
    mixtral, gpt4, old = (target(m) for m in doc["models"])
    elsewhere = {"base_url": "http://elsewhere/v1", "mode": "chat", "model_id": "x-1"}
    return {
        "gpt4-only": gpt4,
        "gpt4-then-mixtral": {**gpt4, "fallbacks": [mixtral]},
        "mixtral-then-gpt4": {**mixtral, "fallbacks": [gpt4]},
        "gpt4-then-old": {**gpt4, "fallbacks": [old]},
        "old-then-elsewhere": {**old, "fallbacks": [elsewhere]},
        "elsewhere": elsewhere,
        "capped": {
            **gpt4,
            "limits": {"max_output_tokens": 512, "timeout_ms": 30_000, "max_input_tokens": 200_000},
        },
        "tight": {**elsewhere, "limits": {"max_input_tokens": 4000}},
        "auto": {
            "policy": "knn",
            "candidates": [MIXTRAL, GPT4],
            "default_model": GPT4,
            "sticky_turns": 3,
            "limits": {"max_output_tokens": 256, "timeout_ms": 10_000, "max_input_tokens": 1000},
        },
    }


@pytest.fixture
async def router(start_router: StartRouter, tmp_path: Path) -> RouterApp:
    doc = catalog()
    return await start_router(
        catalog_path=write_json(tmp_path / "catalog.json", doc),
        router_aliases=write_json(tmp_path / "aliases.json", aliases(doc)),
    )


async def plan(http: httpx.AsyncClient, alias: str, **fields: Any) -> dict[str, Any]:
    response = await http.post("/route/plan", json={"alias": alias, **fields})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        (MIXTRAL, utc(SOON)),  # catalog policy, no fallbacks
        ("gpt4-only", utc(LATER)),  # the +02:00 input comes back in UTC
        ("gpt4-then-mixtral", utc(SOON)),  # a fallback retiring first decides
        ("mixtral-then-gpt4", utc(SOON)),  # so does the primary
        ("gpt4-then-old", utc(LATER)),  # a date already past is ignored
        ("auto", utc(SOON)),  # KNN: the other candidate is a fallback
        ("old-then-elsewhere", None),  # only past dates and non-catalog upstreams
        ("elsewhere", None),
        ("vllm-x", None),  # prefix rule
    ],
)
async def test_valid_until_is_the_first_future_deprecation(
    http: httpx.AsyncClient, alias: str, expected: str | None
) -> None:
    cache = (await plan(http, alias))["cache"]
    assert cache.get("valid_until") == expected
    assert cache["ttl_ms"] >= 0 and cache["freeze_key"].startswith("frz_")


async def test_catalog_serves_deprecates_at_as_given(http: httpx.AsyncClient) -> None:
    models = {m["id"]: m for m in (await http.get("/catalog/models")).json()["models"]}
    assert models[GPT4]["deprecates_at"] == datetime.fromtimestamp(LATER, PLUS_TWO).isoformat()
    assert models[MIXTRAL]["deprecates_at"] == utc(SOON)


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        # The catalog's 128000-token context window is tighter than the alias's 200000.
        ("capped", {"max_input_tokens": 128_000, "max_output_tokens": 512, "timeout_ms": 30_000}),
        ("tight", {"max_input_tokens": 4000}),  # no catalog entry: the alias's cap alone
        ("auto", {"max_input_tokens": 1000, "max_output_tokens": 256, "timeout_ms": 10_000}),
        ("gpt4-only", {"max_input_tokens": 128_000}),  # no alias limits: the catalog's only
    ],
)
async def test_alias_limits_reach_the_plan(
    http: httpx.AsyncClient, router: RouterApp, alias: str, expected: dict[str, int]
) -> None:
    assert (await plan(http, alias))["limits"] == expected
    async with open_channel(f"127.0.0.1:{router.grpc_port}") as channel:
        grpc_plan = await router_pb2_grpc.RouterStub(channel).Plan(
            router_pb2.RouteRequest(alias=alias)
        )
    assert {f.name: v for f, v in grpc_plan.limits.ListFields()} == expected


async def test_no_limits_field_without_any_limit(http: httpx.AsyncClient) -> None:
    assert "limits" not in await plan(http, "elsewhere")


async def test_sticky_plans_keep_their_limits(http: httpx.AsyncClient) -> None:
    first = await plan(http, "auto")
    token = first["stickiness"]["plan_token"]
    response = await http.post("/route/plan", json={"alias": "auto", "plan_token": token})
    assert response.headers["x-route-cache"] == "hit"
    second = response.json()
    assert (
        second["limits"]
        == first["limits"]
        == {
            "max_input_tokens": 1000,
            "max_output_tokens": 256,
            "timeout_ms": 10_000,
        }
    )
    assert second["cache"]["valid_until"] == first["cache"]["valid_until"]
