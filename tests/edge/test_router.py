"""Planning through the real router service: typed errors, fallbacks, plan headers, translation."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.common.grpc_client import check_health, open_channel
from tests.edge.conftest import BEARER, CHAT, EdgeFactory, RouterFactory, RunningKeys
from tests.edge.test_auth import managed
from tests.edge.test_errors import assert_error
from tests.edge.test_passthrough import sse_data
from tests.mock_upstream.fixture import MockUpstream, closed_port_url

REFERENCE_CATALOG = Path("/work/shared/data/routing/models.json")
MIXTRAL, GPT4 = "mixtral-8x7b-instruct", "gpt-4-1106-preview"


def alias(base_url: str, model_id: str, mode: str = "chat", **extra: Any) -> dict[str, Any]:
    return {"base_url": base_url, "mode": mode, "model_id": model_id, **extra}


async def test_unknown_model_without_default_upstream_is_404(
    make_edge: EdgeFactory, router_service: RouterFactory
) -> None:
    async with (
        router_service({}, router_default_upstream=False) as router,
        make_edge(router_addr=router.addr) as edge,
    ):
        response = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "no-such-model"}, headers=BEARER
        )
    error = assert_error(response, 404, "model_not_found", "not_found_error")
    assert error["param"] == "model"
    [event] = edge.events
    assert event["response"]["status_code"] == 404


async def test_router_plan_headers_and_event(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream
) -> None:
    aliases = {"fast": alias(mock_upstream.base_url, "mock-model-a")}
    async with router_service(aliases) as router, make_edge(router_addr=router.addr) as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "fast"}, headers=BEARER
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-resolved-model"] == "mock-model-a"
    assert response.headers["x-policy-rev"].startswith("pol_")
    assert response.headers["x-route-cache"] == "miss"
    [seen] = await mock_upstream.requests()
    assert seen["body"]["model"] == "mock-model-a"
    [event] = edge.events
    routing = event["routing"]
    assert routing["backend"] == "router"
    assert routing["strategy"] == "alias_table"
    assert routing["route_cache"] == "miss"
    assert routing["router_latency_ms"] > 0
    assert event["request"]["model"] == "fast"


async def test_fallbacks_in_order_after_connect_error_and_5xx(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream
) -> None:
    up = mock_upstream.base_url
    aliases = {
        "resilient": alias(
            closed_port_url(),
            "primary",
            fallbacks=[
                {"base_url": up, "mode": "chat", "model_id": "mock-fail-500"},
                {"base_url": up, "mode": "chat", "model_id": "backup"},
            ],
        )
    }
    async with router_service(aliases) as router, make_edge(router_addr=router.addr) as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "resilient"}, headers=BEARER
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-resolved-model"] == "backup"
    assert [r["body"]["model"] for r in await mock_upstream.requests()] == [
        "mock-fail-500",
        "backup",
    ]
    [event] = edge.events
    routing = event["routing"]
    assert routing["fallback_used"] is True
    assert routing["fallback_index"] == 1
    assert routing["attempts"] == 3
    assert routing["resolved_model"] == "backup"


async def test_plan_headers_go_to_the_primary_only(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream
) -> None:
    up = mock_upstream.base_url
    aliases = {
        "hdr": alias(
            up,
            "primary",
            headers={"X-Mock-Status": "503"},
            fallbacks=[{"base_url": up, "mode": "chat", "model_id": "secondary"}],
        )
    }
    async with router_service(aliases) as router, make_edge(router_addr=router.addr) as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "hdr", "stream": True}, headers=BEARER
        )
    assert response.status_code == 200
    assert response.headers["x-resolved-model"] == "secondary"
    primary, secondary = await mock_upstream.requests()
    assert primary["headers"]["x-mock-status"] == "503"
    assert "x-mock-status" not in secondary["headers"]
    assert sse_data(response.text)[-1] == "[DONE]"


async def test_all_attempts_failing_last_429_decides(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream
) -> None:
    up = mock_upstream.base_url
    aliases = {
        "busy": alias(
            up, "mock-fail-500", fallbacks=[{"base_url": up, "mode": "chat", "model_id": "x"}]
        )
    }
    await mock_upstream.script({"model": "x", "status": 429})
    async with router_service(aliases) as router, make_edge(router_addr=router.addr) as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "busy"}, headers=BEARER
        )
    assert_error(response, 429, "upstream_rate_limited", "rate_limit_error")
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["x-route-id"].startswith("rte_")


async def test_chat_client_on_responses_upstream_is_translated(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream
) -> None:
    aliases = {"resp": alias(mock_upstream.base_url, "gpt-4o", mode="responses")}
    async with router_service(aliases) as router, make_edge(router_addr=router.addr) as edge:
        plain = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "resp"}, headers=BEARER
        )
        streamed = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "resp", "stream": True}, headers=BEARER
        )
    assert plain.status_code == 200
    message = plain.json()["choices"][0]["message"]
    assert message["content"] == "Hello from the mock upstream."
    frames = sse_data(streamed.text)
    assert frames[-1] == "[DONE]"
    text = "".join(
        orjson.loads(f)["choices"][0]["delta"].get("content") or ""
        for f in frames[:-1]
        if orjson.loads(f)["choices"]
    )
    assert text == "Hello from the mock upstream."
    paths = {r["path"] for r in await mock_upstream.requests()}
    assert paths == {"/v1/responses"}
    assert all(e["token_usage"]["completion_tokens"] == 5 for e in edge.events)


# ----------------------------------------------------------------------------- fallbacks


@pytest.mark.parametrize("stream", [False, True])
async def test_429_before_the_first_byte_falls_back(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream, stream: bool
) -> None:
    up = mock_upstream.base_url
    aliases = {
        "limited": alias(
            up, "rl-primary", fallbacks=[{"base_url": up, "mode": "chat", "model_id": "ok"}]
        )
    }
    await mock_upstream.script({"model": "rl-primary", "status": 429})
    async with router_service(aliases) as router, make_edge(router_addr=router.addr) as edge:
        response = await edge.client.post(
            "/v1/chat/completions",
            json={**CHAT, "model": "limited", "stream": stream},
            headers=BEARER,
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-resolved-model"] == "ok"
    assert [r["body"]["model"] for r in await mock_upstream.requests()] == ["rl-primary", "ok"]
    if stream:
        assert sse_data(response.text)[-1] == "[DONE]"


async def test_fallback_outside_the_key_scopes_is_skipped(
    make_edge: EdgeFactory,
    router_service: RouterFactory,
    keys_service: RunningKeys,
    mock_upstream: MockUpstream,
) -> None:
    up = mock_upstream.base_url
    aliases = {
        "guarded": alias(
            up,
            "mock-fail-500",
            fallbacks=[
                {"base_url": up, "mode": "chat", "model_id": "premium-model"},
                {"base_url": up, "mode": "chat", "model_id": "allowed-backup"},
            ],
        )
    }
    key = await keys_service.generate(scopes=["models:guarded", "models:allowed-*"])
    async with (
        router_service(aliases) as router,
        make_edge(router_addr=router.addr, **managed(keys_service)) as edge,
    ):
        response = await edge.client.post(
            "/v1/chat/completions",
            json={**CHAT, "model": "guarded"},
            headers={"authorization": f"Bearer {key.token}"},
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-resolved-model"] == "allowed-backup"
    models = [r["body"]["model"] for r in await mock_upstream.requests()]
    assert models == ["mock-fail-500", "allowed-backup"]


# ----------------------------------------------------------------------------- stickiness


def mock_catalog(tmp_path: Path, base_url: str) -> Path:
    """The reference catalog with every upstream pointed at the mock."""
    doc = orjson.loads(REFERENCE_CATALOG.read_bytes())
    for model in doc["models"]:
        model["upstream"] = {"base_url": base_url, "mode": "chat", "model_id": model["id"]}
    path = tmp_path / "catalog.json"
    path.write_bytes(orjson.dumps(doc))
    return path


async def test_plan_token_round_trip_through_the_router(
    make_edge: EdgeFactory,
    router_service: RouterFactory,
    mock_upstream: MockUpstream,
    tmp_path: Path,
) -> None:
    aliases = {
        "auto": {
            "policy": "knn",
            "candidates": [MIXTRAL, GPT4],
            "default_model": MIXTRAL,
            "sticky_turns": 2,
        }
    }
    catalog = mock_catalog(tmp_path, mock_upstream.base_url)
    body = {**CHAT, "model": "auto"}
    async with (
        router_service(aliases, catalog_path=catalog) as router,
        make_edge(router_addr=router.addr) as edge,
    ):
        first = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
        token = first.headers["x-signalbox-plan-token"]
        sticky = await edge.client.post(
            "/v1/chat/completions", json=body, headers={**BEARER, "x-signalbox-plan-token": token}
        )
        spent = await edge.client.post(
            "/v1/chat/completions", json=body, headers={**BEARER, "x-signalbox-plan-token": token}
        )
        bogus = await edge.client.post(
            "/v1/chat/completions",
            json=body,
            headers={**BEARER, "x-signalbox-plan-token": "stk_" + "0" * 32},
        )
    assert [r.status_code for r in (first, sticky, spent, bogus)] == [200] * 4
    assert token.startswith("stk_") and first.headers["x-route-cache"] == "miss"
    # Honoured by the router: same token, same model, reported as a hit.
    assert sticky.headers["x-route-cache"] == "hit"
    assert sticky.headers["x-signalbox-plan-token"] == token
    assert sticky.headers["x-resolved-model"] == first.headers["x-resolved-model"] == MIXTRAL
    assert sticky.headers["x-route-id"] != first.headers["x-route-id"]
    assert edge.events[1]["routing"]["strategy"] == "sticky"
    # max_turns = 2 is spent: planned afresh with a new token; a bad token is never an error.
    assert spent.headers["x-route-cache"] == "miss"
    assert spent.headers["x-signalbox-plan-token"] not in (token, None)
    assert bogus.headers["x-route-cache"] == "miss"
    # KNN and sticky plans have ttl 0: the edge cache never held them.
    assert len(edge.runtime.planner.cache or ()) == 0


# ----------------------------------------------------------------------------- /reload/routing

ADMIN = "r" * 32
ADMIN_HEADERS = {"authorization": f"Bearer {ADMIN}"}


async def test_reload_routing_reloads_the_router_and_clears_the_cache(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream
) -> None:
    up = mock_upstream.base_url
    body = {**CHAT, "model": "fast"}
    async with (
        router_service({"fast": alias(up, "mock-model-a")}) as router,
        make_edge(router_addr=router.addr, admin_token=ADMIN) as edge,
    ):
        await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
        cached = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
        assert cached.headers["x-route-cache"] == "hit"
        old_rev = cached.headers["x-policy-rev"]
        path = router.app.settings.router_aliases
        path.write_bytes(orjson.dumps({"fast": alias(up, "mock-model-b"), "extra": alias(up, "x")}))
        reloaded = await edge.client.post("/reload/routing", headers=ADMIN_HEADERS)
        after = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
        models = await edge.client.get("/v1/models", headers=BEARER)
        path.write_bytes(b"{not json")
        invalid = await edge.client.post("/reload/routing", headers=ADMIN_HEADERS)
        still = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
        everything = await edge.client.post("/reload/all", headers=ADMIN_HEADERS)
        unauthorised = await edge.client.post("/reload/routing")
        await router.app.stop()
        down = await edge.client.post("/reload/routing", headers=ADMIN_HEADERS)
    assert reloaded.status_code == 200, reloaded.text
    doc = reloaded.json()
    assert doc["success"] is True and doc["message"]
    stats = doc["stats"]
    assert stats["aliases"] == 2 and stats["knn_aliases"] == 0 and stats["catalog_models"] == 2
    assert stats["policy_rev"].startswith("pol_") and stats["policy_rev"] != old_rev
    assert set(stats) == {
        "policy_rev", "aliases", "knn_aliases", "prefix_rules", "catalog_models", "knn_examples"
    }  # fmt: skip
    assert after.headers["x-route-cache"] == "miss"
    assert after.headers["x-resolved-model"] == "mock-model-b"
    assert [m["id"] for m in models.json()["data"]] == ["extra", "fast"]
    assert_error(invalid, 500, "config_invalid", "server_error")
    assert still.status_code == 200 and still.headers["x-resolved-model"] == "mock-model-b"
    assert everything.status_code == 200
    assert everything.json()["routing"]["success"] is False
    assert unauthorised.status_code == 401
    assert_error(down, 503, "router_unavailable", "service_unavailable_error")


async def test_reload_routing_with_router_off_is_config_not_set(make_edge: EdgeFactory) -> None:
    async with make_edge(admin_token=ADMIN) as edge:
        response = await edge.client.post("/reload/routing", headers=ADMIN_HEADERS)
    assert_error(response, 400, "config_not_set", "invalid_request_error")


# ----------------------------------------------------------------------------- killed router


def _spawn_router(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.router"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
async def router_process(
    tmp_path: Path, free_port: Callable[[], int]
) -> AsyncIterator[Callable[[dict[str, Any]], Awaitable[tuple[subprocess.Popen[bytes], str]]]]:
    """`python -m services.router` as a real child process, SERVING before it is returned."""
    children: list[subprocess.Popen[bytes]] = []

    async def start(
        aliases: dict[str, Any], addr: str | None = None
    ) -> tuple[subprocess.Popen[bytes], str]:
        path = tmp_path / "process_aliases.json"
        path.write_bytes(orjson.dumps(aliases))
        addr = addr or f"127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALBOX_")}
        env.update(
            SIGNALBOX_ROUTER_BIND=addr,
            SIGNALBOX_ROUTER_HTTP_BIND=f"127.0.0.1:{free_port()}",
            SIGNALBOX_ROUTER_ALIASES=str(path),
            SIGNALBOX_DATA_DIR=str(tmp_path / "router-data"),
        )
        child = _spawn_router(env)
        children.append(child)
        deadline = time.monotonic() + 30
        async with open_channel(addr) as channel:
            while not (await check_health(channel, "signalbox.router.v1.Router"))[0]:
                assert child.poll() is None, "router process exited during start"
                assert time.monotonic() < deadline, "router process never became SERVING"
                await asyncio.sleep(0.1)
        return child, addr

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.parametrize("strict", [False, True])
async def test_killed_router_process(
    make_edge: EdgeFactory,
    mock_upstream: MockUpstream,
    router_process: Callable[..., Awaitable[tuple[subprocess.Popen[bytes], str]]],
    strict: bool,
) -> None:
    """SIGKILL a real router between two requests: local resolution, or 503 when strict; a
    router restarted on the same address is used again without touching the edge."""
    aliases = {"fast": alias(mock_upstream.base_url, "mock-model-a", cache_ttl_ms=0)}
    child, addr = await router_process(aliases)
    body = {**CHAT, "model": "fast"}
    async with make_edge(router_addr=addr, router_strict=strict) as edge:
        planned = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
        child.kill()
        child.wait()
        after = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
        await router_process(aliases, addr)
        deadline = time.monotonic() + 15  # the channel's reconnect backoff is at most 2 s
        while True:
            recovered = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
            if recovered.headers.get("x-resolved-model") == "mock-model-a":
                break
            assert time.monotonic() < deadline, "the edge never used the restarted router"
            await asyncio.sleep(0.2)
    assert recovered.status_code == 200
    assert planned.status_code == 200 and planned.headers["x-resolved-model"] == "mock-model-a"
    if strict:
        assert_error(after, 503, "router_unavailable", "service_unavailable_error")
        assert after.headers["retry-after"] == "1"
        return
    # Non-strict: the default upstream with model = alias (router-schema §9), no feedback.
    assert after.status_code == 200, after.text
    assert after.headers["x-resolved-model"] == "fast"
    assert edge.events[1]["routing"]["backend"] == "default"
