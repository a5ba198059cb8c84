"""Analytics SIGKILLed and restarted while the edge serves traffic: every event stored once."""

from __future__ import annotations

import asyncio
import signal

import httpx
import pytest

from tests.faults.conftest import StackFactory, chat, exactly_once

pytestmark = pytest.mark.e2e

TOTAL = 90
WORKERS = 6


async def test_analytics_killed_mid_traffic_every_event_exactly_once(
    fault_stack: StackFactory, pg_url: str
) -> None:
    async with fault_stack(("analytics", "edge")) as stack:
        done = 0
        third_done = asyncio.Event()
        statuses: list[int] = []
        ids = iter(range(TOTAL))

        async def worker(client: httpx.AsyncClient) -> None:
            nonlocal done
            for i in ids:
                statuses.append((await chat(client, f"fault-an-{i}")).status_code)
                done += 1
                if done >= TOTAL // 3:
                    third_done.set()
                await asyncio.sleep(0.02)

        async with httpx.AsyncClient(base_url=stack.edge_url, timeout=30) as client:
            traffic = asyncio.gather(*(worker(client) for _ in range(WORKERS)))
            await third_done.wait()
            stack.signal("analytics", signal.SIGKILL)
            await asyncio.sleep(1.0)  # batches sent now fail and go to the edge's spool
            await stack.restart("analytics")
            await traffic
        # The analytics outage never reaches clients.
        assert statuses == [200] * TOTAL
        await exactly_once(pg_url, {f"fault-an-{i}" for i in range(TOTAL)}, timeout=40)
