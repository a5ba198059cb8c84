"""`GET /metrics` after real traffic: the counters move by exactly what the traffic did."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from deploy.local.stack import free_port
from services.common import metrics
from services.common.grpc_client import open_channel
from services.common.pb import keys_pb2, keys_pb2_grpc
from tests.edge.conftest import BEARER, CHAT, EdgeFactory, RouterFactory
from tests.mock_upstream.fixture import MockUpstream, closed_port_url
from tests.observability.conftest import Samples, delta, parse_metrics, value

CHAT_PATH = "/v1/chat/completions"


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse_metrics(response.text)


async def test_counters_move_by_the_traffic(make_edge: EdgeFactory) -> None:
    async with make_edge() as edge:
        before = await scrape(edge.client)
        usage = {"input": 0, "output": 0}
        cost = 0.0
        for _ in range(2):
            response = await edge.client.post(CHAT_PATH, json=CHAT, headers=BEARER)
            assert response.status_code == 200, response.text
            body = response.json()
            usage["input"] += body["usage"]["prompt_tokens"]
            usage["output"] += body["usage"]["completion_tokens"]
            cost += _cost(body["usage"])
        stream = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        response = await edge.client.post(CHAT_PATH, json=stream, headers=BEARER)
        assert response.status_code == 200
        chunks = [orjson.loads(d) for d in _sse(response.text) if d != "[DONE]"]
        [streamed] = [c["usage"] for c in chunks if c.get("usage")]
        usage["input"] += streamed["prompt_tokens"]
        usage["output"] += streamed["completion_tokens"]
        assert (await edge.client.post(CHAT_PATH, json=CHAT)).status_code == 401
        unknown = {**CHAT, "model": "not-in-any-catalog"}
        response = await edge.client.post(CHAT_PATH, json=unknown, headers=BEARER)
        assert response.status_code == 200
        usage["input"] += response.json()["usage"]["prompt_tokens"]
        usage["output"] += response.json()["usage"]["completion_tokens"]
        after = await scrape(edge.client)

    requests = "signalbox_requests_total"
    gpt = {"endpoint": CHAT_PATH, "model": "gpt-4o-mini"}
    assert delta(before, after, requests, status="200", **gpt) == 3
    # Refused before routing: labelled with the requested model (known to the price table).
    assert delta(before, after, requests, status="401", **gpt) == 1
    # A model the price table does not know never becomes a label of its own.
    assert delta(before, after, requests, endpoint=CHAT_PATH, status="200", model="other") == 1
    assert not any("not-in-any-catalog" in str(labels) for _, labels in after)
    assert delta(before, after, "signalbox_upstream_attempts_total", outcome="ok") == 4
    tokens = "signalbox_tokens_total"
    assert delta(before, after, tokens, kind="input") == usage["input"] > 0
    assert delta(before, after, tokens, kind="output") == usage["output"] > 0
    gpt_cost = delta(before, after, "signalbox_cost_usd_total", model="gpt-4o-mini")
    assert gpt_cost == pytest.approx(cost + _cost(streamed), rel=1e-9)
    assert delta(before, after, "signalbox_request_duration_seconds_count", endpoint=CHAT_PATH) == 5
    # First byte, overhead and upstream time exist only for requests that reached an upstream.
    assert delta(before, after, "signalbox_ttfb_seconds_count", endpoint=CHAT_PATH) == 4
    assert delta(before, after, "signalbox_overhead_seconds_count", endpoint=CHAT_PATH) == 4
    assert (
        delta(before, after, "signalbox_upstream_duration_seconds_count", endpoint=CHAT_PATH) == 4
    )
    assert value(after, "signalbox_inflight_requests") == 0
    assert value(after, "signalbox_active_streams") == value(before, "signalbox_active_streams")


def _sse(body: str) -> list[str]:
    return [line[len("data: ") :] for line in body.splitlines() if line.startswith("data: ")]


def _cost(usage: dict[str, int]) -> float:
    """What the built-in price table charges gpt-4o-mini for this usage (no cached tokens)."""
    from services.common.pricing import PriceTable

    cost = PriceTable.load(None, None).cost(
        "gpt-4o-mini", usage["prompt_tokens"], usage["completion_tokens"], 0, 0
    )
    return float(cost["total_cost"])


async def test_fallbacks_attempts_and_routing_counters(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream
) -> None:
    up = mock_upstream.base_url
    aliases = {
        "resilient": {
            "base_url": closed_port_url(),
            "mode": "chat",
            "model_id": "primary",
            "fallbacks": [
                {"base_url": up, "mode": "chat", "model_id": "mock-fail-500"},
                {"base_url": up, "mode": "chat", "model_id": "backup"},
            ],
        }
    }
    async with router_service(aliases) as router, make_edge(router_addr=router.addr) as edge:
        before = await scrape(edge.client)
        response = await edge.client.post(
            CHAT_PATH, json={**CHAT, "model": "resilient"}, headers=BEARER
        )
        assert response.status_code == 200, response.text
        after = await scrape(edge.client)
    assert delta(before, after, "signalbox_fallbacks_total") == 1
    attempts = "signalbox_upstream_attempts_total"
    assert delta(before, after, attempts, outcome="connect") == 1
    assert delta(before, after, attempts, outcome="http_500") == 1
    assert delta(before, after, attempts, outcome="ok") == 1
    assert delta(before, after, "signalbox_route_cache_total", result="miss") == 1
    assert delta(before, after, "signalbox_route_strategy_total", strategy="alias_table") == 1
    assert delta(before, after, "signalbox_router_latency_seconds_count", endpoint=CHAT_PATH) == 1
    # The in-process router's gRPC server counted the Plan call it served.
    plan = "/signalbox.router.v1.Router/Plan"
    assert delta(before, after, "signalbox_grpc_server_handled_total", method=plan, code="OK") == 1


async def test_metrics_can_be_turned_off(make_edge: EdgeFactory) -> None:
    async with make_edge(metrics_enabled=False) as edge:
        response = await edge.client.get("/metrics")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


def test_bounded_labels_cap_distinct_values() -> None:
    capped = metrics._BoundedValues(limit=2)
    assert [capped(v) for v in ("a", "b", "c", "a", "")] == ["a", "b", "other", "a", "none"]
    assert capped("has spaces") == "other"
    assert metrics.model_label("gpt-4o", {"gpt-4o"}) == "gpt-4o"
    assert metrics.model_label("sk_secret-ish", {"gpt-4o"}) == "other"


def test_plan_cache_counter_for_other_features() -> None:
    before = value(
        parse_metrics(metrics.render()[0].decode()), "signalbox_plan_cache_total", result="hit"
    )
    metrics.record_plan_cache(True)
    metrics.record_plan_cache(False)
    after = parse_metrics(metrics.render()[0].decode())
    assert value(after, "signalbox_plan_cache_total", result="hit") == before + 1


@pytest.mark.postgres
async def test_keys_process_serves_its_own_metrics_port(pg_url: str, tmp_path: Path) -> None:
    """`python -m services.keys` with SIGNALBOX_KEYS_METRICS_BIND: its gRPC calls are counted."""
    grpc_port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "SIGNALBOX_KEYS_BIND": f"127.0.0.1:{grpc_port}",
        "SIGNALBOX_KEYS_METRICS_BIND": f"127.0.0.1:{metrics_port}",
        "SIGNALBOX_DATABASE_URL": pg_url,
        "SIGNALBOX_DATA_DIR": str(tmp_path),
        "SIGNALBOX_REDIS_URL": "",
        "SIGNALBOX_INTERNAL_TOKEN": "",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.keys", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        async with httpx.AsyncClient(timeout=2) as http:

            async def scrape_keys() -> Samples:
                return parse_metrics((await http.get(url)).text)

            channel = open_channel(f"127.0.0.1:{grpc_port}")
            stub = keys_pb2_grpc.KeysStub(channel)
            await _wait_for_serving(stub)
            before = await scrape_keys()
            for _ in range(3):
                await stub.Generate(keys_pb2.GenerateRequest(label="m"), timeout=5)
            verify = keys_pb2.VerifyRequest(token="sk_" + "0" * 32 + "." + "f" * 64)
            await stub.Verify(verify, timeout=5)
            after = await scrape_keys()
            await channel.close()
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)
    method = "/signalbox.keys.v1.Keys/Generate"
    handled = "signalbox_grpc_server_handled_total"
    assert delta(before, after, handled, method=method, code="OK") == 3
    assert delta(before, after, "signalbox_grpc_server_handling_seconds_count", method=method) == 3
    verify_method = "/signalbox.keys.v1.Keys/Verify"
    assert delta(before, after, handled, method=verify_method, code="OK") == 1
    assert not any("grpc.health" in str(labels) for _, labels in after)


async def _wait_for_serving(stub: keys_pb2_grpc.KeysStub) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        try:
            await stub.Verify(keys_pb2.VerifyRequest(token="warm-up"), timeout=1)
            return
        except Exception:
            assert asyncio.get_running_loop().time() < deadline, "keys process did not start"
            await asyncio.sleep(0.2)
