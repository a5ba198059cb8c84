"""Postgres ingest when another transaction stores one of the batch's ids first: the direct COPY
fails whole, the conflict-tolerant path counts that id as a duplicate, roll-ups stay exact."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from services.analytics.events import COLUMNS, StoredEvent, to_stored
from services.analytics.store import EventStore
from services.common.db import Database, connect
from services.common.pricing import PriceTable
from tests.analytics.conftest import eventually, make_event, to_pb

PRICES = PriceTable.load(None, None)


async def _someone_waits_on_a_lock(db: Database) -> bool:
    waiting = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return bool(waiting)


async def test_an_id_committed_by_a_concurrent_writer_is_counted_once(
    pg_url: str, tmp_path: Path
) -> None:
    db = await connect(pg_url, tmp_path / "unused.db")
    store = EventStore(db)
    await store.migrate()
    rows: list[StoredEvent] = [to_stored(to_pb(make_event()), PRICES) for _ in range(3)]
    other = await asyncpg.connect(pg_url)
    try:
        writer = other.transaction()
        await writer.start()
        await other.copy_records_to_table("analytics_events", records=rows[1:2], columns=COLUMNS)
        ingest = asyncio.create_task(store.ingest(rows))
        # The batch's COPY now waits on the uncommitted id; committing it makes the COPY fail.
        await eventually(lambda: _someone_waits_on_a_lock(db))
        await writer.commit()
        assert await ingest == (2, 1)
        assert await store.ingest(rows) == (0, 3)
        assert await db.fetchval("SELECT count(*) FROM analytics_events") == 3
        assert await store.count() == 3
    finally:
        await other.close()
        await db.close()
