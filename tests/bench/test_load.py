"""The load generator against the real fast mock: counts, streams, errors, open loop."""

from __future__ import annotations

import socket

from bench.load import Target, closed_loop, open_loop
from tests.bench.conftest import STREAM_CHUNKS

CHAT = {"model": "bench-lat0", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}


def _target(url: str, path: str = "/v1/chat/completions") -> Target:
    return Target("mock", url + path, {"authorization": "Bearer x"})


async def test_closed_loop_stops_at_max_requests(fast_mock_url: str) -> None:
    stats = await closed_loop(_target(fast_mock_url), CHAT, 4, 60.0, 40)
    assert (stats.ok, stats.errors, stats.concurrency, stats.mode) == (40, 0, 4, "closed")
    assert stats.latency is not None and stats.latency.count == 40
    assert 0 < stats.latency.p50_ms <= stats.latency.p99_ms <= stats.latency.max_ms
    assert stats.rps > 0
    assert stats.ttft is None and stats.chunk_gap is None


async def test_streams_record_first_token_and_every_chunk_gap(fast_mock_url: str) -> None:
    stats = await closed_loop(_target(fast_mock_url), STREAM, 2, 60.0, 10)
    assert (stats.ok, stats.errors) == (10, 0)
    assert stats.ttft is not None and stats.ttft.count == 10
    data_events = STREAM_CHUNKS + 3  # role, chunks, finish, usage ([DONE] ends the stream)
    assert stats.chunk_gap is not None and stats.chunk_gap.count == 10 * (data_events - 1)
    assert stats.latency is not None and stats.ttft.p50_ms <= stats.latency.max_ms


async def test_http_errors_are_counted_not_timed(fast_mock_url: str) -> None:
    stats = await closed_loop(_target(fast_mock_url, "/v1/missing"), CHAT, 2, 60.0, 6)
    assert (stats.ok, stats.errors, stats.error_kinds) == (0, 6, {"http 404": 6})
    assert stats.latency is None and stats.rps == 0


async def test_connection_refused_is_an_error(fast_mock_url: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    stats = await closed_loop(_target(f"http://127.0.0.1:{port}"), CHAT, 1, 60.0, 3)
    assert stats.ok == 0 and stats.errors == 3
    assert list(stats.error_kinds) == ["ClientConnectorError"]


async def test_open_loop_sends_rate_times_duration(fast_mock_url: str) -> None:
    stats = await open_loop(_target(fast_mock_url), CHAT, 200.0, 0.25, 64)
    assert (stats.ok, stats.errors, stats.offered_rate, stats.mode) == (50, 0, 200.0, "open")
    assert stats.latency is not None and stats.latency.count == 50


async def test_open_loop_drops_starts_over_the_inflight_cap(fast_mock_url: str) -> None:
    slow = {**CHAT, "model": "bench-lat2000"}
    stats = await open_loop(_target(fast_mock_url), slow, 100.0, 0.1, 2)
    assert stats.ok == 2
    assert stats.error_kinds == {"client inflight cap": 8}
