"""SIGTERM on the edge with 100 open streams: they all finish, new requests are refused, the
process exits 0 and every stream's analytics event reaches the service."""

from __future__ import annotations

import asyncio
import signal

import asyncpg
import httpx
import orjson
import pytest

from tests.faults.conftest import CHAT, StackFactory, exactly_once
from tests.mock_upstream.fixture import MockUpstream

pytestmark = pytest.mark.e2e

STREAMS = 100
GRACE_SECONDS = 20


async def _successes(pg_url: str) -> int:
    conn = await asyncpg.connect(pg_url)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM analytics_events WHERE (event->'response'->>'success')::bool"
            " AND event->>'request_id' LIKE 'fault-term-%'"
        )
    finally:
        await conn.close()


async def test_sigterm_drains_open_streams_refuses_new_and_flushes_analytics(
    fault_stack: StackFactory, pg_url: str, mock_upstream: MockUpstream
) -> None:
    # Each stream trickles its chunks for ~3 s, so all are in flight when SIGTERM lands.
    await mock_upstream.script(*[{"chunk_delay_ms": 400}] * STREAMS)
    env = {"SIGNALBOX_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS)}
    async with fault_stack(("analytics", "edge"), **env) as stack:
        edge = stack._children["edge"].process
        started = asyncio.Semaphore(0)
        limits = httpx.Limits(max_connections=STREAMS + 10)

        async def one_stream(client: httpx.AsyncClient, i: int) -> bytes:
            body = b""
            async with client.stream(
                "POST",
                "/v1/chat/completions",
                json={**CHAT, "stream": True},
                headers={"authorization": "Bearer t", "x-request-id": f"fault-term-{i}"},
            ) as response:
                assert response.status_code == 200
                async for chunk in response.aiter_raw():
                    if not body:
                        started.release()
                    body += chunk
            return body

        async with httpx.AsyncClient(base_url=stack.edge_url, timeout=60, limits=limits) as client:
            streams = [asyncio.create_task(one_stream(client, i)) for i in range(STREAMS)]
            for _ in range(STREAMS):
                await started.acquire()
            assert not any(task.done() for task in streams)
            stack.signal("edge", signal.SIGTERM)
            await asyncio.sleep(0.5)

            # New work is refused while the old streams drain: connection refused or 503.
            async with httpx.AsyncClient(base_url=stack.edge_url, timeout=5) as fresh:
                try:
                    late = await fresh.post(
                        "/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer t"}
                    )
                except httpx.TransportError:
                    late = None
            assert late is None or late.status_code == 503
            bodies = await asyncio.gather(*streams)

        for body in bodies:
            events = [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]
            assert events[-1] == b"[DONE]"
            text = "".join(
                choice["delta"].get("content") or ""
                for event in events[:-1]
                for choice in orjson.loads(event)["choices"]
            )
            assert text == "Hello from the mock upstream."
        assert await asyncio.to_thread(edge.wait, GRACE_SECONDS + 10) == 0
        # Flushed at shutdown (to the service, or the spool that a restarted edge replays).
        await exactly_once(pg_url, {f"fault-term-{i}" for i in range(STREAMS)}, timeout=20)
        assert await _successes(pg_url) == STREAMS
