"""Analytics SIGKILLed and restarted while the edge serves traffic: every event stored once."""

from __future__ import annotations

import asyncio
import signal

import httpx
import pytest

from tests.faults.conftest import StackFactory, Traffic, exactly_once

pytestmark = pytest.mark.e2e


async def test_analytics_killed_mid_traffic_every_event_exactly_once(
    fault_stack: StackFactory, pg_url: str
) -> None:
    async with fault_stack(("analytics", "edge")) as stack:
        async with httpx.AsyncClient(base_url=stack.edge_url, timeout=30) as client:
            traffic = Traffic(client, "fault-an-")
            running = asyncio.create_task(traffic.run())
            await traffic.third_done.wait()
            stack.signal("analytics", signal.SIGKILL)
            await asyncio.sleep(1.0)  # batches sent now fail and go to the edge's spool
            await stack.restart("analytics")
            await running
        # The analytics outage never reaches clients.
        assert traffic.statuses == [200] * traffic.total
        await exactly_once(pg_url, traffic.request_ids, timeout=40)
