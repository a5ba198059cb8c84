"""Retention sweeps and database-driven health, on the real databases."""

from __future__ import annotations

import asyncpg
import grpc
import pytest

from services.common.grpc_client import check_health
from services.common.pb import analytics_pb2
from tests.analytics.conftest import NOW, StartAnalytics, batch, eventually, make_event
from tests.conftest import PG_ADMIN_URL


async def test_retention_deletes_only_expired_events(
    database_url: str, start_analytics: StartAnalytics
) -> None:
    svc = await start_analytics(
        database_url,
        analytics_retention_seconds=3600,
        analytics_retention_interval_seconds=0.05,
    )
    kept = make_event(NOW - 3599)
    await svc.ingest(batch(make_event(NOW - 7200), make_event(NOW - 3601), kept))

    async def only_kept() -> bool:
        stats = await svc.stub.Stats(analytics_pb2.StatsRequest())
        return stats.total_events == 1

    await eventually(only_kept)
    stats = await svc.stub.Stats(analytics_pb2.StatsRequest())
    assert stats.ttl_seconds == 3600
    reply = await svc.stub.Query(analytics_pb2.QueryRequest(start=0, end=NOW))
    assert [e.id for e in reply.events] == [kept["id"]]


async def test_retention_sweep_deletes_in_batches(
    database_url: str, start_analytics: StartAnalytics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("services.analytics.store.RETENTION_BATCH", 7)
    svc = await start_analytics(database_url)
    assert svc.app.store is not None
    await svc.ingest(batch(*[make_event(NOW - 5000 + i) for i in range(30)]))
    await svc.ingest(batch(make_event(NOW - 10)))
    assert await svc.app.store.delete_older_than(NOW - 100) == 30
    assert await svc.app.store.count() == 1


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_health_is_not_serving_while_postgres_is_unusable(
    pg_url: str, start_analytics: StartAnalytics
) -> None:
    svc = await start_analytics(pg_url)
    name = pg_url.rsplit("/", 1)[1]
    assert (await check_health(svc.channel, "signalbox.analytics.v1.Analytics"))[0]

    await _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        await _admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )

        async def not_serving() -> bool:
            return not (await check_health(svc.channel))[0]

        await eventually(not_serving)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await svc.ingest(batch(make_event()))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

    async def serving() -> bool:
        return (await check_health(svc.channel))[0]

    await eventually(serving)
    ack = await svc.ingest(batch(make_event()))
    assert ack.accepted == 1
