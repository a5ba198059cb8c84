"""Every RPC through real gRPC on loopback, against the real Postgres and the embedded SQLite."""

from __future__ import annotations

import grpc
import orjson
import pytest

from services.analytics.export import CSV_COLUMNS
from services.common.grpc_client import open_channel
from services.common.pb import analytics_pb2, analytics_pb2_grpc
from tests.analytics.conftest import (
    NOW,
    RunningAnalytics,
    StartAnalytics,
    batch,
    make_event,
    to_pb,
)


def _window(start: int = NOW - 3600, end: int = NOW) -> dict[str, int]:
    return {"start": start, "end": end}


async def _query(svc: RunningAnalytics, **kwargs: int) -> analytics_pb2.QueryResponse:
    return await svc.stub.Query(analytics_pb2.QueryRequest(**kwargs))


async def test_ingest_then_query_returns_full_documents_newest_first(
    analytics: RunningAnalytics,
) -> None:
    events = [make_event(NOW - 300 + i) for i in range(3)]
    ack = await analytics.ingest(batch(*events))
    assert (ack.accepted, ack.duplicates) == (3, 0)

    reply = await _query(analytics, **_window())
    assert reply.count == 3 and (reply.start, reply.end) == (NOW - 3600, NOW)
    assert [e.id for e in reply.events] == [e["id"] for e in reversed(events)]
    newest = reply.events[0]
    assert newest.request.model == "gpt-4o" and newest.routing.route_cache == "miss"
    assert newest.token_usage.prompt_tokens == 1000
    # Optional fields the edge left null stay unset on the wire.
    assert not newest.routing.HasField("fallback_index")
    assert not newest.response.HasField("error_message")


async def test_same_batch_twice_is_stored_once_and_duplicates_reported(
    analytics: RunningAnalytics,
) -> None:
    events = [make_event(NOW - 100 + i) for i in range(5)]
    first = await analytics.ingest(batch(*events))
    again = await analytics.ingest(batch(*events[:3]), batch(*events[3:]))
    within = await analytics.ingest(batch(events[0], events[0]))
    assert (first.accepted, first.duplicates) == (5, 0)
    assert (again.accepted, again.duplicates) == (0, 5)
    assert (within.accepted, within.duplicates) == (0, 2)
    stats = await analytics.stub.Stats(analytics_pb2.StatsRequest())
    assert stats.total_events == 5


async def test_duplicate_in_one_new_batch_counts_once(analytics: RunningAnalytics) -> None:
    event = make_event()
    ack = await analytics.ingest(batch(event, event, make_event()))
    assert (ack.accepted, ack.duplicates) == (2, 1)


async def test_events_with_usage_but_no_cost_are_priced_and_carried_costs_kept(
    analytics: RunningAnalytics,
) -> None:
    priced = make_event(NOW - 30)  # gpt-4o, 1000 prompt / 200 completion, cost null
    carried_cost = {
        "input_cost": 1.0,
        "cached_cost": 0.0,
        "output_cost": 2.0,
        "reasoning_cost": 0.0,
        "total_cost": 3.0,
        "total_cost_micro": 3_000_000,
        "currency": "USD",
        "pricing_model": "edge-table",
    }
    carried = make_event(NOW - 20, cost=carried_cost)
    no_usage = make_event(NOW - 10, token_usage=None)
    by_request = make_event(
        NOW - 5, routing={"resolved_model": None}, request={"model": "gpt-4o-mini-2024"}
    )
    await analytics.ingest(batch(priced, carried, no_usage, by_request))

    reply = await _query(analytics, **_window())
    by_id = {e.id: e for e in reply.events}
    cost = by_id[priced["id"]].cost
    assert cost.pricing_model == "gpt-4o" and cost.currency == "USD"
    assert cost.input_cost == pytest.approx(0.0025) and cost.output_cost == pytest.approx(0.002)
    assert cost.total_cost == pytest.approx(0.0045) and cost.total_cost_micro == 4500
    assert by_id[carried["id"]].cost.pricing_model == "edge-table"
    assert by_id[carried["id"]].cost.total_cost_micro == 3_000_000
    assert not by_id[no_usage["id"]].HasField("cost")
    # No resolved model: priced by request.model, longest prefix "gpt-4o-mini" (0.15 / 0.60).
    mini = by_id[by_request["id"]].cost
    assert mini.pricing_model == "gpt-4o-mini" and mini.total_cost_micro == 270


async def test_aggregate(analytics: RunningAnalytics) -> None:
    def ev(i: int, perf: dict | None = None, **kw: object) -> dict:
        performance = {"duration_ms": float(10 * (i + 1)), **(perf or {})}
        return make_event(NOW - 500 + i, performance=performance, **kw)

    events = [
        ev(0, routing={"resolved_model": "m-a", "strategy": "knn", "backend": "router"}),
        ev(1, routing={"resolved_model": "m-a", "strategy": "knn", "fallback_used": True}),
        ev(2, routing={"resolved_model": None}, request={"model": "alias-b"}),
        ev(
            3,
            response={"success": False, "status_code": 502},
            token_usage=None,
            perf={"tokens_per_second": None},
            routing={"backend": "default", "strategy": "default"},
        ),
        ev(4, request={"endpoint": "/v1/responses"}, perf={"tokens_per_second": 100.0}),
        make_event(NOW - 450, performance={"duration_ms": None, "tokens_per_second": None}),
    ]
    events[1]["token_usage"].update(cached_tokens=100, reasoning_tokens=50)
    await analytics.ingest(batch(*events))
    # Outside the window: must not count.
    await analytics.ingest(batch(make_event(NOW - 7200)))

    agg = await analytics.stub.Aggregate(analytics_pb2.AggregateRequest(**_window()))
    assert (agg.total_requests, agg.successful_requests, agg.failed_requests) == (6, 5, 1)
    assert agg.total_input_tokens == 5000 and agg.total_output_tokens == 1000
    assert agg.total_cached_tokens == 100 and agg.total_reasoning_tokens == 50
    # Averages ignore nulls: durations 10..50 (the sixth has none); tps 222.22 thrice and 100.
    assert agg.avg_duration_ms == pytest.approx(30.0)
    assert agg.avg_tokens_per_second == pytest.approx((222.22 * 3 + 100.0) / 4)
    assert agg.p50_duration_ms == pytest.approx(30.0)
    assert agg.p95_duration_ms == pytest.approx(48.0)  # percentile_cont: 40 + 0.8·10
    assert dict(agg.models_used) == {"m-a": 2, "alias-b": 1, "gpt-4o": 3}
    assert set(agg.cost_by_model) == {"m-a", "alias-b", "gpt-4o"}
    assert agg.total_cost == pytest.approx(sum(agg.cost_by_model.values()))
    # Five priced events at the default/gpt-4o price (2.5 / 10 / 1.25 cached).
    assert agg.total_cost == pytest.approx(4 * 0.0045 + (900 * 2.5 + 100 * 1.25 + 200 * 10) / 1e6)
    assert dict(agg.endpoints_hit) == {"/v1/chat/completions": 5, "/v1/responses": 1}
    assert dict(agg.backends_used) == {"router": 5, "default": 1}
    assert dict(agg.strategies_used) == {"knn": 2, "alias_table": 3, "default": 1}
    assert agg.fallbacks_used == 1
    assert (agg.period_start, agg.period_end) == (NOW - 3600, NOW)


async def test_aggregate_of_empty_window_has_null_averages(analytics: RunningAnalytics) -> None:
    agg = await analytics.stub.Aggregate(analytics_pb2.AggregateRequest(**_window()))
    assert agg.total_requests == 0 and agg.total_cost == 0
    assert not agg.HasField("avg_duration_ms") and not agg.HasField("avg_tokens_per_second")
    assert not agg.HasField("p50_duration_ms")


async def test_windows_default_inclusive_and_validated(analytics: RunningAnalytics) -> None:
    inside = make_event(NOW - 10)
    old = make_event(NOW - 4000)
    boundary = make_event(NOW - 100 + 0.5)  # inside the inclusive second `end = NOW - 100`
    after = make_event(NOW - 99)
    await analytics.ingest(batch(inside, old, boundary, after))

    default = await _query(analytics)
    assert {e.id for e in default.events} == {inside["id"], boundary["id"], after["id"]}
    assert (default.start, default.end) == (NOW - 3600, NOW)
    upto = await _query(analytics, start=NOW - 100, end=NOW - 100)
    assert [e.id for e in upto.events] == [boundary["id"]]
    limited = await _query(analytics, limit=1)
    assert [e.id for e in limited.events] == [inside["id"]]

    for bad in ({"start": NOW, "end": NOW - 1}, {"limit": 0}):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _query(analytics, **bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await analytics.stub.Aggregate(analytics_pb2.AggregateRequest(start=5, end=4))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_export_json_pages_through_every_event(analytics: RunningAnalytics) -> None:
    events = [make_event(NOW - 5000 + i) for i in range(2100)]
    for i in range(0, len(events), 500):
        await analytics.ingest(batch(*events[i : i + 500]))
    body, chunks = await analytics.export("json", start=NOW - 5000, end=NOW)
    document = orjson.loads(body)
    assert document["count"] == 2100
    assert document["period"] == {"start": NOW - 5000, "end": NOW}
    assert [e["id"] for e in document["events"]] == [e["id"] for e in events]
    first = document["events"][0]
    assert set(first) == set(events[0]) and first["routing"]["mcp_servers"] == []
    assert first["cost"]["pricing_model"] == "gpt-4o"
    assert all((c.start, c.end) == (NOW - 5000, NOW) for c in chunks)

    empty, _ = await analytics.export("json", start=1, end=2)
    assert orjson.loads(empty) == {"events": [], "count": 0, "period": {"start": 1, "end": 2}}
    default, chunks = await analytics.export("json")
    assert (chunks[0].start, chunks[0].end) == (NOW - 86400, NOW)
    assert orjson.loads(default)["count"] == 2100


async def test_export_csv_columns_formats_quoting_and_formula_escaping(
    analytics: RunningAnalytics,
) -> None:
    plain = make_event(NOW - 20, performance={"tokens_per_second": 12.3456})
    hostile = make_event(
        NOW - 10,
        id="=cmd|' /C calc'!A0",
        request={"endpoint": "/v1/a,b", "method": '@SUM("x")', "model": '-2+3,"q"', "stream": True},
        response={"status_code": 500, "success": False},
        performance={"duration_ms": 12.5, "tokens_per_second": None},
        token_usage=None,
        routing={"backend": "+line1\nline2", "upstream_mode": "\tchat"},
    )
    await analytics.ingest(batch(plain, hostile))
    body, _ = await analytics.export("csv", **_window())
    lines = body.decode().split("\r\n")
    assert lines[0] == ",".join(CSV_COLUMNS)
    assert lines[1] == (
        f"{plain['id']},{NOW - 20},/v1/chat/completions,POST,gpt-4o,false,200,true,100,12.35,"
        "1000,200,0,0,0.004500,router,chat"
    )
    # The backend cell keeps its LF inside quotes; records end in CRLF.
    assert lines[2] == (
        "'=cmd|' /C calc'!A0,"
        f"{NOW - 10},"
        '"/v1/a,b",'
        '"\'@SUM(""x"")",'
        '"\'-2+3,""q""",'
        "true,500,false,12.5,,,,,,,"
        '"\'+line1\nline2",'
        "'\tchat"
    )
    assert lines[3] == "" and len(lines) == 4


async def test_export_rejects_unknown_format(analytics: RunningAnalytics) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await analytics.export("xml")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_stats_and_clear(analytics: RunningAnalytics, database_url: str) -> None:
    await analytics.ingest(batch(make_event(), make_event()))
    stats = await analytics.stub.Stats(analytics_pb2.StatsRequest())
    expected_backend = "postgres" if database_url.startswith("postgres") else "sqlite"
    assert (stats.total_events, stats.backend_type) == (2, expected_backend)
    assert not stats.HasField("ttl_seconds") and not stats.HasField("max_events")

    cleared = await analytics.stub.Clear(analytics_pb2.ClearRequest())
    assert cleared.success and cleared.message == "Analytics data cleared"
    assert (await analytics.stub.Stats(analytics_pb2.StatsRequest())).total_events == 0


async def test_invalid_event_refuses_the_batch_and_writes_nothing(
    analytics: RunningAnalytics,
) -> None:
    for bad in (make_event(id=""), make_event(timestamp="NaN"), make_event(timestamp=0)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await analytics.ingest(batch(make_event(), bad))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await analytics.stub.Stats(analytics_pb2.StatsRequest())).total_events == 0


async def test_internal_token_is_required_when_configured(
    database_url: str, start_analytics: StartAnalytics
) -> None:
    token = "x" * 32
    svc = await start_analytics(database_url, internal_token=token)
    assert (await svc.stub.Stats(analytics_pb2.StatsRequest())).total_events == 0

    async with open_channel(svc.addr) as anonymous:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await analytics_pb2_grpc.AnalyticsStub(anonymous).Stats(analytics_pb2.StatsRequest())
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_query_returns_exactly_what_was_ingested(analytics: RunningAnalytics) -> None:
    cost = {"total_cost": 0.5, "total_cost_micro": 500000, "currency": "USD"}
    event = make_event(
        NOW - 7.25,
        cost=cost,
        routing={"mcp_servers": ["fs", "web"], "fallback_index": 0, "confidence": 0.875},
        response={"error_message": 'upstream said, "no"'},
    )
    await analytics.ingest(batch(event))
    reply = await _query(analytics, **_window())
    assert list(reply.events) == [to_pb(event)]


async def test_documents_and_messages_in_one_batch_are_one_idempotent_stream(
    analytics: RunningAnalytics,
) -> None:
    as_message, as_document = make_event(NOW - 20), make_event(NOW - 10, cost=None)
    mixed = analytics_pb2.EventBatch(
        events=[to_pb(as_message)],
        documents=[orjson.dumps(as_document), orjson.dumps(as_message)],
    )
    ack = await analytics.ingest(mixed)
    assert (ack.accepted, ack.duplicates) == (2, 1)
    again = await analytics.ingest(analytics_pb2.EventBatch(documents=[orjson.dumps(as_document)]))
    assert (again.accepted, again.duplicates) == (0, 1)
    reply = await _query(analytics, **_window())
    assert [e.id for e in reply.events] == [as_document["id"], as_message["id"]]
    assert reply.events[0].cost.pricing_model == "gpt-4o"  # priced by the service


async def test_an_invalid_document_refuses_the_whole_batch(analytics: RunningAnalytics) -> None:
    bad = make_event(request={"size_bytes": "large"})
    refused = analytics_pb2.EventBatch(events=[to_pb(make_event())], documents=[orjson.dumps(bad)])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await analytics.ingest(refused)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await analytics.stub.Stats(analytics_pb2.StatsRequest())).total_events == 0
