"""The edge's AnalyticsSink against a real analytics service: spool, replay, close, exactly once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from google.protobuf import json_format

from services.common.pb import analytics_pb2, analytics_pb2_grpc
from services.edge.analytics_sink import (
    AnalyticsSink,
    InvalidEvent,
    SpoolDirectory,
    encode,
    read_segment,
)
from tests.analytics.conftest import (
    NOW,
    RunningAnalytics,
    StartAnalytics,
    eventually,
    make_event,
    sqlite_url,
)

MakeSink = Callable[..., Awaitable[AnalyticsSink]]


async def stored_ids(svc: RunningAnalytics) -> list[str]:
    reply = await svc.stub.Query(analytics_pb2.QueryRequest(start=0, end=NOW, limit=10000))
    return [e.id for e in reply.events]


def spool_lines(directory: Path) -> list[dict[str, Any]]:
    return [
        orjson.loads(line)
        for path in sorted(directory.glob("events-*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]


@pytest.fixture
async def make_sink(tmp_path: Path) -> AsyncIterator[MakeSink]:
    """Factory of started sinks with test-sized delays; each is closed after the test."""
    sinks: list[AnalyticsSink] = []

    async def make(addr: str, **options: Any) -> AnalyticsSink:
        settings: dict[str, Any] = {
            "internal_token": None,
            "spool_dir": tmp_path / "spool",
            "flush_interval": 0.05,
            "replay_initial_delay": 0.2,
            "replay_max_delay": 0.4,
            "send_timeout": 5.0,
            **options,
        }
        sink = AnalyticsSink(addr, **settings)
        await sink.start()
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        await sink.close(timeout=1.0)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    return sqlite_url(tmp_path)


async def test_service_down_spools_then_replays_every_event_once(
    pg_url: str, start_analytics: StartAnalytics, make_sink: MakeSink, free_port, tmp_path: Path
) -> None:
    port = free_port()
    sink = await make_sink(f"127.0.0.1:{port}", batch_size=200)
    events = [make_event(NOW - 1000 + i * 0.5) for i in range(1200)]
    for event in events:
        sink.submit(event)
    await eventually(lambda: sink.stats()["spooled_events"] == 1200)
    assert sink.stats()["send_failures"] >= 1 and sink.stats()["queued"] == 0
    assert sorted(e["id"] for e in spool_lines(tmp_path / "spool")) == sorted(
        e["id"] for e in events
    )

    svc = await start_analytics(pg_url, analytics_bind=f"127.0.0.1:{port}")
    await eventually(lambda: sink.stats()["spool_segments"] == 0)
    stats = sink.stats()
    assert stats["replayed_events"] == 1200 and stats["accepted"] == 1200
    ids = await stored_ids(svc)
    assert sorted(ids) == sorted(e["id"] for e in events)


async def test_close_flushes_the_queue_to_the_service(
    sqlite_db: str, start_analytics: StartAnalytics, make_sink: MakeSink
) -> None:
    svc = await start_analytics(sqlite_db)
    sink = await make_sink(svc.addr, flush_interval=60.0)
    events = [make_event(NOW - 200 + i) for i in range(120)]
    for event in events:
        sink.submit(event)
    # Let the batcher take them: close() must flush a half-collected batch too.
    await eventually(lambda: sink.stats()["queued"] == 120 and sink._queue.empty())
    await sink.close()
    assert sink.stats()["sent"] == 120 and sink.stats()["spooled_events"] == 0
    assert sorted(await stored_ids(svc)) == sorted(e["id"] for e in events)


async def test_close_spools_when_the_service_is_down_and_next_start_replays(
    sqlite_db: str,
    start_analytics: StartAnalytics,
    make_sink: MakeSink,
    free_port,
    tmp_path: Path,
) -> None:
    port = free_port()
    sink = await make_sink(f"127.0.0.1:{port}", flush_interval=60.0)
    events = [make_event(NOW - 100 + i) for i in range(50)]
    for event in events:
        sink.submit(event)
    await sink.close(timeout=0.5)
    assert [e["id"] for e in spool_lines(tmp_path / "spool")] == [e["id"] for e in events]
    # Late events still reach the disk.
    late = make_event(NOW - 1)
    sink.submit(late)
    assert len(spool_lines(tmp_path / "spool")) == 51

    svc = await start_analytics(sqlite_db, analytics_bind=f"127.0.0.1:{port}")
    restarted = await make_sink(svc.addr)
    await eventually(lambda: restarted.stats()["spool_segments"] == 0)
    assert sorted(await stored_ids(svc)) == sorted(e["id"] for e in [*events, late])


async def test_full_queue_overflows_to_the_spool_and_is_replayed(
    sqlite_db: str, start_analytics: StartAnalytics, make_sink: MakeSink
) -> None:
    svc = await start_analytics(sqlite_db)
    sink = await make_sink(svc.addr, queue_size=10)
    events = [make_event(NOW - 100 + i * 0.1) for i in range(100)]
    for event in events:  # synchronous: the batcher cannot drain in between
        sink.submit(event)
    await eventually(lambda: sink.stats()["spooled_events"] == 90)
    await eventually(lambda: sink.stats()["spool_segments"] == 0 and sink.stats()["queued"] == 0)
    assert sorted(await stored_ids(svc)) == sorted(e["id"] for e in events)
    assert sink.stats()["accepted"] == 100


async def test_torn_last_line_is_skipped_on_replay(
    sqlite_db: str, start_analytics: StartAnalytics, make_sink: MakeSink, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    good = [make_event(NOW - 50 + i) for i in range(3)]
    torn = orjson.dumps(make_event(NOW - 40))[:57]
    body = b"".join(orjson.dumps(e) + b"\n" for e in good) + torn
    (spool / "events-1700000000000.jsonl").write_bytes(body)

    svc = await start_analytics(sqlite_db)
    sink = await make_sink(svc.addr)
    await eventually(lambda: sink.stats()["spool_segments"] == 0)
    assert sink.stats()["skipped_spool_lines"] == 1
    assert sorted(await stored_ids(svc)) == sorted(e["id"] for e in good)


def test_read_segment_keeps_a_complete_unterminated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "events-1.jsonl"
    path.write_bytes(b'{"id":"a"}\nnot json\n{"id":"b"}')
    events, skipped = read_segment(path)
    assert [e["id"] for e in events] == ["a", "b"] and skipped == 1


async def test_invalid_events_are_dropped_not_spooled(
    sqlite_db: str, start_analytics: StartAnalytics, make_sink: MakeSink, tmp_path: Path
) -> None:
    svc = await start_analytics(sqlite_db)
    sink = await make_sink(svc.addr)
    good = make_event()
    for event in (make_event(id=""), make_event(timestamp="yesterday"), good):
        sink.submit(event)
    await eventually(lambda: sink.stats()["sent"] == 1)
    assert sink.stats()["dropped_invalid"] == 2 and sink.stats()["spooled_events"] == 0
    assert await stored_ids(svc) == [good["id"]]


def test_spool_rotates_segments_oldest_first(tmp_path: Path) -> None:
    spool = SpoolDirectory(tmp_path, segment_bytes=100)
    lines = [orjson.dumps({"id": str(i), "pad": "x" * 40}) for i in range(6)]
    for pair in (lines[0:2], lines[2:4], lines[4:6]):
        spool.append(pair)
    segments = spool.seal()
    assert len(segments) == 3
    assert [read_segment(p)[0][0]["id"] for p in segments] == ["0", "2", "4"]
    spool.append([lines[0]])
    assert len(spool.segments()) == 4 and spool.segments()[:3] == segments


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"extra_top_level": {"nested": 1}, "request": {"unknown": "x", "model": None}},
        {"response": {"status_code": 200.0}},  # integral float: ParseDict accepts it
        {"response": {"status_code": True}},  # bool for an integer: refused
        {"performance": {"duration_ms": 5}},  # int for a double
        {"performance": {"duration_ms": "NaN"}},  # ParseDict's quoted special value
        {"performance": {"duration_ms": float("nan")}},  # refused by ParseDict
        {"request": {"model": 42}},
        {"request": {"size_bytes": 2**70}},
        {"routing": {"mcp_servers": ["a", "b"]}},
        {"routing": {"mcp_servers": ["a", 1]}},
        {"routing": "not an object"},
        {"timestamp": "1800000000.5"},
        {"id": None},
    ],
)
def test_fast_encoding_matches_parse_dict(changes: dict[str, Any]) -> None:
    event = make_event(**changes)
    try:
        reference = json_format.ParseDict(
            event, analytics_pb2.AnalyticsEvent(), ignore_unknown_fields=True
        )
    except json_format.ParseError:
        reference = None
    if reference is None or not reference.id:
        with pytest.raises(InvalidEvent):
            encode(event)
        return
    wire = encode(event)
    if isinstance(wire, bytes):  # a plain event goes as its JSON document
        wire = json_format.ParseDict(orjson.loads(wire), analytics_pb2.AnalyticsEvent())
    assert wire == reference


async def test_close_without_start_spools_what_was_submitted(tmp_path: Path) -> None:
    sink = AnalyticsSink("127.0.0.1:9", internal_token=None, spool_dir=tmp_path / "spool")
    events = [make_event(), make_event()]
    for event in events:
        sink.submit(event)
    await sink.close(timeout=0.2)
    assert [e["id"] for e in spool_lines(tmp_path / "spool")] == [e["id"] for e in events]
    assert sink.stats()["spooled_events"] == 2 and sink.stats()["queued"] == 0


class _ServiceBeforeDocuments(analytics_pb2_grpc.AnalyticsServicer):
    """An analytics service older than `EventBatch.documents`: it never sees those events."""

    async def Ingest(self, request_iterator, context):  # type: ignore[no-untyped-def]
        accepted = 0
        async for batch in request_iterator:
            accepted += len(batch.events)
        return analytics_pb2.IngestAck(accepted=accepted)


async def test_a_service_that_acknowledges_fewer_events_gets_them_spooled(
    make_sink: MakeSink, tmp_path: Path
) -> None:
    server = grpc.aio.server()
    analytics_pb2_grpc.add_AnalyticsServicer_to_server(_ServiceBeforeDocuments(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        sink = await make_sink(f"127.0.0.1:{port}")
        events = [make_event(NOW - 50 + i) for i in range(3)]
        for event in events:
            sink.submit(event)
        await eventually(lambda: sink.stats()["spooled_events"] == 3)
        assert sink.stats()["sent"] == 0 and sink.stats()["send_failures"] >= 1
        assert sorted(e["id"] for e in spool_lines(tmp_path / "spool")) == sorted(
            e["id"] for e in events
        )
    finally:
        await server.stop(None)
