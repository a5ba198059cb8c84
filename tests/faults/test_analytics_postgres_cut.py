"""Postgres cut under the analytics service while the edge serves traffic (issue 10).

The analytics service reaches Postgres only through a TCP proxy we cut (every open connection
reset, new ones refused) and restore: clients never see the outage, batches that fail while the
database is away go to the edge's spool, and after the restore every event is stored exactly
once (idempotent ingest by event id).
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.faults.conftest import ADMIN, StackFactory, Traffic, exactly_once, through, wait_for
from tests.faults.tcp_proxy import TcpProxy

pytestmark = pytest.mark.e2e


async def test_postgres_cut_mid_traffic_every_event_exactly_once(
    fault_stack: StackFactory, pg_url: str, pg_proxy: TcpProxy
) -> None:
    env = {"SIGNALBOX_DATABASE_URL": through(pg_url, pg_proxy)}
    async with fault_stack(("analytics", "edge"), **env) as stack:
        async with httpx.AsyncClient(base_url=stack.edge_url, timeout=30) as client:
            traffic = Traffic(client, "fault-pg-", pause=0.03)
            running = asyncio.create_task(traffic.run())
            await traffic.third_done.wait()
            await pg_proxy.cut()
            cut_at = traffic.done
            await asyncio.sleep(2.0)  # batches flushed now fail: the edge spools them
            during_cut = traffic.done - cut_at
            await pg_proxy.restore()
            await running

            async def analytics_serving_again() -> bool:
                stats = await client.get("/analytics/stats", headers=ADMIN)
                return stats.status_code == 200

            await wait_for(analytics_serving_again, 30, "analytics answers again after restore")
            await exactly_once(pg_url, traffic.request_ids, timeout=60)
            status = await client.get("/status", headers=ADMIN)
        sink = status.json()["features"]["analytics"]["stats"]
        # The cut really failed deliveries (spooled, later replayed) and nothing was lost.
        assert sink["send_failures"] > 0
        assert sink["spooled_events"] > 0
        assert sink["replayed_events"] >= sink["spooled_events"]
        assert sink["lost"] == 0
        # The database outage never reaches clients, and traffic kept flowing during it.
        assert traffic.statuses == [200] * traffic.total
        assert during_cut > 0
