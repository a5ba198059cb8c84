"""Edge admin routes `/analytics/*` (analytics.md §4) in front of the real analytics service."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.analytics.conftest import NOW, RunningAnalytics, StartAnalytics, batch, make_event
from tests.edge.conftest import Edge, edge_settings, running_edge
from tests.mock_upstream.fixture import (  # noqa: F401 (pytest fixtures)
    MockUpstream,
    mock_upstream,
    mock_upstream_server,
)

ADMIN = "analytics-admin-" + "z" * 24
AUTH = {"authorization": f"Bearer {ADMIN}"}
WINDOW = {"start": NOW - 3600, "end": NOW}

EdgeWith = Callable[..., AbstractAsyncContextManager[Edge]]


@pytest.fixture
def edge_with(tmp_path: Path, mock_upstream: MockUpstream) -> EdgeWith:  # noqa: F811
    def factory(**overrides: Any) -> AbstractAsyncContextManager[Edge]:
        settings = edge_settings(tmp_path, mock_upstream.base_url, admin_token=ADMIN, **overrides)
        return running_edge(settings)

    return factory


@pytest.fixture
async def served(
    database_url: str, start_analytics: StartAnalytics, edge_with: EdgeWith
) -> AsyncIterator[tuple[Edge, RunningAnalytics]]:
    svc = await start_analytics(database_url)
    async with edge_with(analytics_addr=svc.addr) as edge:
        yield edge, svc


async def asgi_get(edge: Edge, path: str, query: str) -> tuple[int, dict[str, str], list[bytes]]:
    """One GET straight through the ASGI app, keeping every body message the app sent."""
    start: dict[str, Any] = {}
    chunks: list[bytes] = []

    requested = False
    finished = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await finished.wait()  # the client stays connected until the response is complete
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                finished.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [(b"host", b"edge"), (b"authorization", AUTH["authorization"].encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("edge", 80),
        "state": {},
    }
    await edge.app(scope, receive, send)
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, chunks


def _code(response: Any) -> str:
    return response.json()["error"]["code"]


async def test_admin_token_required_and_disabled_analytics_is_503(edge_with: EdgeWith) -> None:
    async with edge_with(analytics_addr="off") as edge:
        anonymous = await edge.client.get("/analytics/stats")
        disabled = await edge.client.get("/analytics/stats", headers=AUTH)
        clear = await edge.client.post("/analytics/clear", headers=AUTH)
    assert (anonymous.status_code, _code(anonymous)) == (401, "missing_admin_token")
    assert (disabled.status_code, _code(disabled)) == (503, "analytics_disabled")
    assert disabled.json()["error"]["message"] == "Analytics not enabled"
    assert disabled.json()["error"]["type"] == "service_unavailable_error"
    assert int(disabled.headers["retry-after"]) >= 1
    assert clear.status_code == 503


async def test_unreachable_service_is_a_typed_503(
    edge_with: EdgeWith, free_port: Callable[[], int]
) -> None:
    async with edge_with(analytics_addr=f"127.0.0.1:{free_port()}") as edge:
        response = await edge.client.get("/analytics/aggregate", headers=AUTH)
    assert (response.status_code, _code(response)) == (503, "analytics_unavailable")


async def test_stats_events_aggregate_and_clear(
    served: tuple[Edge, RunningAnalytics],
) -> None:
    edge, svc = served
    events = [
        make_event(NOW - 100 + i, performance={"duration_ms": float(10 * (i + 1))})
        for i in range(5)
    ]
    await svc.ingest(batch(*events, make_event(NOW - 7200)))
    client = edge.client

    stats = (await client.get("/analytics/stats", headers=AUTH)).json()
    assert stats["total_events"] == 6 and stats["backend_type"] == svc.app.db.dialect
    assert stats["ttl_seconds"] is None and stats["max_events"] is None

    listed = await client.get("/analytics/events", headers=AUTH, params={**WINDOW, "limit": 3})
    body = listed.json()
    assert listed.status_code == 200 and body["count"] == 3
    assert (body["start"], body["end"]) == (NOW - 3600, NOW)
    assert [e["id"] for e in body["events"]] == [e["id"] for e in events[::-1][:3]]
    first = body["events"][0]
    assert first == {**events[-1], "cost": first["cost"]}  # the full §1 shape, nulls included
    assert first["cost"]["currency"] == "USD" and first["cost"]["total_cost_micro"] > 0

    agg = (await client.get("/analytics/aggregate", headers=AUTH, params=WINDOW)).json()
    assert agg["total_requests"] == 5 and agg["successful_requests"] == 5
    assert agg["failed_requests"] == 0 and agg["fallbacks_used"] == 0
    assert agg["total_input_tokens"] == 5000 and agg["total_output_tokens"] == 1000
    assert agg["avg_duration_ms"] == pytest.approx(30.0)
    assert agg["p50_duration_ms"] == pytest.approx(30.0)
    assert agg["p95_duration_ms"] == pytest.approx(48.0)
    assert agg["models_used"] == {"gpt-4o": 5} and set(agg["cost_by_model"]) == {"gpt-4o"}
    assert agg["endpoints_hit"] == {"/v1/chat/completions": 5}
    assert agg["backends_used"] == {"router": 5}
    assert agg["strategies_used"] == {"alias_table": 5}
    assert (agg["period_start"], agg["period_end"]) == (NOW - 3600, NOW)

    cleared = await client.post("/analytics/clear", headers=AUTH)
    assert cleared.json() == {"success": True, "message": "Analytics data cleared"}
    assert (await client.get("/analytics/stats", headers=AUTH)).json()["total_events"] == 0


@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/analytics/events", {"start": NOW, "end": NOW - 1}, None),
        ("/analytics/aggregate", {"start": "yesterday"}, "start"),
        ("/analytics/events", {"limit": "ten"}, "limit"),
        ("/analytics/events", {"limit": 0}, None),
        ("/analytics/export", {"format": "xml"}, "format"),
        ("/analytics/export", {"format": "csv", "start": NOW, "end": NOW - 5}, None),
    ],
)
async def test_bad_queries_are_400(
    served: tuple[Edge, RunningAnalytics], path: str, params: dict[str, Any], param: str | None
) -> None:
    edge, _ = served
    response = await edge.client.get(path, headers=AUTH, params=params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


async def test_csv_export_is_streamed_escaped_and_named_after_the_window(
    served: tuple[Edge, RunningAnalytics],
) -> None:
    edge, svc = served
    hostile = make_event(
        NOW - 50,
        request={"model": '=HYPERLINK("http://x","y")', "endpoint": "+cmd"},
        routing={"backend": "@SUM(1)", "upstream_mode": "-2+3"},
    )
    bulk = [make_event(NOW - 3000 + i * 0.5) for i in range(2500)]
    for start in range(0, len(bulk), 500):
        await svc.ingest(batch(*bulk[start : start + 500]))
    await svc.ingest(batch(hostile))

    query = f"format=csv&start={NOW - 3600}&end={NOW}"
    status, headers, chunks = await asgi_get(edge, "/analytics/export", query)
    assert status == 200
    assert headers["content-type"].startswith("text/csv")
    assert headers["content-disposition"] == (
        f'attachment; filename="analytics_{NOW - 3600}_to_{NOW}.csv"'
    )
    # Relayed page by page as the service sent them: never assembled in one piece.
    assert len([c for c in chunks if c]) > 2
    rows = list(csv.DictReader(io.StringIO(b"".join(chunks).decode())))
    assert len(rows) == 2501
    last = rows[-1]
    assert last["id"] == hostile["id"]
    assert last["model"] == '\'=HYPERLINK("http://x","y")'
    assert last["endpoint"] == "'+cmd"
    assert last["backend"] == "'@SUM(1)" and last["upstream_mode"] == "'-2+3"
    assert rows[0]["success"] == "true" and rows[0]["total_cost"] == "0.004500"


async def test_json_export_holds_every_event_of_the_window(
    served: tuple[Edge, RunningAnalytics],
) -> None:
    edge, svc = served
    inside = [make_event(NOW - 3000 + i) for i in range(1200)]
    await svc.ingest(batch(*inside[:600]), batch(*inside[600:]), batch(make_event(NOW - 9000)))
    response = await edge.client.get(
        "/analytics/export", headers=AUTH, params={"format": "json", **WINDOW}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = orjson.loads(response.content)
    assert document["count"] == 1200
    assert document["period"] == {"start": NOW - 3600, "end": NOW}
    assert [e["id"] for e in document["events"]] == [e["id"] for e in inside]
