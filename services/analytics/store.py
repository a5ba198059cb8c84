"""`analytics_events` on Postgres or SQLite: idempotent ingest, windows, aggregates, retention.

Windows are `[start, end + 1)` in float unix seconds: the spec's `start`/`end` are inclusive whole
seconds, so an event at 100.7 belongs to `end = 100`.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from services.analytics import rollup
from services.analytics.events import COLUMNS, StoredEvent
from services.common.db import Connection, Database, Migration, migrate

COMPONENT = "analytics"
STAGING = "analytics_events_staging"
RETENTION_BATCH = 5000
EXPORT_PAGE = 1000
# Up to this many durations in a window, p50/p95 are exact (a sort of the raw rows); above it
# they come from the per-minute histogram (within half a bin, ~0.5 %).
EXACT_PERCENTILE_MAX = 50_000
# Concurrent batches upsert the same roll-up rows; Postgres may pick one as a deadlock victim.
DEADLOCK_RETRIES = 5

MIGRATIONS = (
    Migration(
        1,
        postgres="""
        CREATE TABLE analytics_events (
            id TEXT PRIMARY KEY,
            timestamp DOUBLE PRECISION NOT NULL,
            event JSONB NOT NULL,  -- json since migration 3
            endpoint TEXT,
            model_key TEXT,
            backend TEXT,
            strategy TEXT,
            success BOOLEAN,
            fallback_used BOOLEAN,
            duration_ms DOUBLE PRECISION,
            tokens_per_second DOUBLE PRECISION,
            prompt_tokens BIGINT,
            completion_tokens BIGINT,
            cached_tokens BIGINT,
            reasoning_tokens BIGINT,
            total_cost DOUBLE PRECISION
        );
        CREATE INDEX analytics_events_timestamp_idx ON analytics_events (timestamp, id);
        """,
        sqlite="""
        CREATE TABLE analytics_events (
            id TEXT PRIMARY KEY,
            timestamp REAL NOT NULL,
            event TEXT NOT NULL,
            endpoint TEXT,
            model_key TEXT,
            backend TEXT,
            strategy TEXT,
            success INTEGER,
            fallback_used INTEGER,
            duration_ms REAL,
            tokens_per_second REAL,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            cached_tokens INTEGER,
            reasoning_tokens INTEGER,
            total_cost REAL
        );
        CREATE INDEX analytics_events_timestamp_idx ON analytics_events (timestamp, id);
        """,
    ),
    Migration(2, postgres=rollup.postgres_migration(), sqlite=rollup.sqlite_migration()),
    # The document is stored and returned whole, never queried into: `json` keeps orjson's text
    # as sent, where `jsonb` parsed it on every COPY (a third of ingest's database time) and
    # re-serialized it on every read. SQLite already stores TEXT.
    Migration(
        3, postgres="ALTER TABLE analytics_events ALTER COLUMN event TYPE json", sqlite="SELECT 1"
    ),
)

_COLS = ", ".join(COLUMNS)
_WINDOW = "timestamp >= $1 AND timestamp < $2"


@dataclass(frozen=True)
class Window:
    """Inclusive whole seconds, as the spec and the wire carry them."""

    start: int
    end: int

    @property
    def bounds(self) -> tuple[float, float]:
        return float(self.start), float(self.end + 1)


@dataclass
class Aggregate:
    total_requests: int = 0
    successful_requests: int = 0
    total_input_tokens: int = 0
    total_output_tokens: int = 0
    total_cached_tokens: int = 0
    total_reasoning_tokens: int = 0
    avg_duration_ms: float | None = None
    avg_tokens_per_second: float | None = None
    total_cost: float = 0.0
    fallbacks_used: int = 0
    p50_duration_ms: float | None = None
    p95_duration_ms: float | None = None
    cost_by_model: dict[str, float] = field(default_factory=dict)
    models_used: dict[str, int] = field(default_factory=dict)
    endpoints_hit: dict[str, int] = field(default_factory=dict)
    backends_used: dict[str, int] = field(default_factory=dict)
    strategies_used: dict[str, int] = field(default_factory=dict)

    @property
    def failed_requests(self) -> int:
        return self.total_requests - self.successful_requests


def interpolate(values: Sequence[float], position: float) -> float:
    """Linear interpolation between the two order statistics around `position` (percentile_cont).

    `values` holds the sorted values from index floor(position) on (one or two of them).
    """
    low = values[0]
    if len(values) == 1:
        return low
    return low + (values[1] - low) * (position - math.floor(position))


async def _rowcount(conn: Connection, sql: str, *args: Any) -> int:
    """Rows changed by one statement (asyncpg's status tag, SQLite's changes())."""
    if conn.dialect == "postgres":
        status = await conn.raw.execute(sql, *args)  # type: ignore[attr-defined]
        return int(status.rsplit(" ", 1)[-1])
    await conn.execute(sql, *args)
    return int(await conn.fetchval("SELECT changes()"))


class EventStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def migrate(self) -> None:
        await migrate(self.db, COMPONENT, MIGRATIONS)

    async def ingest(self, events: Sequence[StoredEvent]) -> tuple[int, int]:
        """Insert what is new, all or nothing; returns (accepted, duplicates)."""
        if not events:
            return 0, 0
        rows = list(events)
        accepted = (
            await self._ingest_postgres(rows)
            if self.db.dialect == "postgres"
            else await self._ingest_sqlite(rows)
        )
        return accepted, len(rows) - accepted

    async def _ingest_postgres(self, rows: list[StoredEvent]) -> int:
        """The direct path first; a concurrent batch that stored one of the same ids first makes
        it fail whole (unique violation, nothing written), and the conflict-tolerant path
        decides instead."""
        unique = _first_per_id(rows)
        try:
            return await self._retrying(self._copy_new, unique)
        except asyncpg.UniqueViolationError:
            return await self._retrying(self._copy_insert, unique)

    @staticmethod
    async def _retrying(
        insert: Callable[[list[StoredEvent]], Awaitable[int]], rows: list[StoredEvent]
    ) -> int:
        for attempt in range(DEADLOCK_RETRIES):
            try:
                return await insert(rows)
            except asyncpg.DeadlockDetectedError:
                if attempt == DEADLOCK_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    async def _copy_new(self, rows: list[StoredEvent]) -> int:
        """Skip the ids already stored, COPY the rest straight into the table (one pass: no
        staging table, no per-row conflict check; the statement trigger rolls them up)."""
        assert self.db.pool is not None
        async with self.db.pool.acquire() as conn, conn.transaction():
            stored = await conn.fetch(
                "SELECT id FROM analytics_events WHERE id = any($1::text[])", [r.id for r in rows]
            )
            known = {row["id"] for row in stored}
            fresh = [r for r in rows if r.id not in known] if known else rows
            if fresh:
                await conn.copy_records_to_table("analytics_events", records=fresh, columns=COLUMNS)
        return len(fresh)

    async def _copy_insert(self, rows: list[StoredEvent]) -> int:
        """COPY into a per-connection staging table, then one conflict-tolerant INSERT … SELECT
        (whose statement trigger rolls up exactly the rows it inserted)."""
        assert self.db.pool is not None
        async with self.db.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {STAGING}"
                " (LIKE analytics_events) ON COMMIT DELETE ROWS"
            )
            await conn.copy_records_to_table(STAGING, records=rows, columns=COLUMNS)
            status = await conn.execute(
                f"INSERT INTO analytics_events ({_COLS}) SELECT {_COLS} FROM {STAGING}"
                " ORDER BY id ON CONFLICT (id) DO NOTHING"
            )
        return int(status.rsplit(" ", 1)[-1])

    async def _ingest_sqlite(self, rows: list[tuple[Any, ...]]) -> int:
        """The cursor's rowcount counts inserted events only (not the roll-up trigger's rows)."""
        params = ", ".join(f"?{i}" for i in range(1, len(COLUMNS) + 1))
        async with self.db.transaction() as conn:
            cursor = await conn.raw.executemany(  # type: ignore[attr-defined]
                f"INSERT OR IGNORE INTO analytics_events ({_COLS}) VALUES ({params})", rows
            )
            return int(cursor.rowcount)

    async def recent(self, window: Window, limit: int) -> list[str]:
        """Stored documents, newest first."""
        rows = await self.db.fetch(
            f"SELECT event FROM analytics_events WHERE {_WINDOW}"
            " ORDER BY timestamp DESC, id DESC LIMIT $3",
            *window.bounds,
            limit,
        )
        return [_text(row["event"]) for row in rows]

    async def pages(self, window: Window, page: int = EXPORT_PAGE) -> AsyncIterator[list[str]]:
        """Every document of the window, oldest first, a keyset page per round trip.

        Each page is its own short query, so a slow export never holds a snapshot or a lock.
        """
        after: tuple[float, str] = (-math.inf, "")
        while True:
            rows = await self.db.fetch(
                "SELECT timestamp, id, event FROM analytics_events"
                f" WHERE {_WINDOW} AND (timestamp > $3 OR (timestamp = $3 AND id > $4))"
                " ORDER BY timestamp, id LIMIT $5",
                *window.bounds,
                *after,
                page,
            )
            if not rows:
                return
            yield [_text(row["event"]) for row in rows]
            if len(rows) < page:
                return
            after = (rows[-1]["timestamp"], rows[-1]["id"])

    async def count(self) -> int:
        """From the roll-ups (exact, kept by triggers): no scan of the events."""
        total = await self.db.fetchval("SELECT coalesce(sum(requests), 0) FROM analytics_rollup")
        return int(total)

    async def clear(self) -> None:
        tables = ("analytics_events", "analytics_rollup", "analytics_duration_hist")
        if self.db.dialect == "postgres":
            await self.db.execute("TRUNCATE " + ", ".join(tables))
            return
        async with self.db.transaction() as conn:
            for table in tables:
                await conn.execute(f"DELETE FROM {table}")

    async def delete_older_than(self, cutoff: float) -> int:
        """Batched, so a large backlog never holds one long lock over the whole table."""
        deleted = 0
        while True:
            async with self.db.connection() as conn:
                n = await _rowcount(
                    conn,
                    "DELETE FROM analytics_events WHERE id IN (SELECT id FROM analytics_events"
                    " WHERE timestamp < $1 LIMIT $2)",
                    cutoff,
                    RETENTION_BATCH,
                )
            deleted += n
            if n < RETENTION_BATCH:
                break
        if deleted:
            for sql in rollup.PRUNE_EMPTY:
                await self.db.execute(sql)
        return deleted

    async def aggregate(self, window: Window) -> Aggregate:
        """Whole minutes from the roll-ups, the partial minutes at the edges from the events."""
        split = rollup.Split.of(*window.bounds)
        groups = await self.db.fetch(rollup.window_rollup_sql(), *split.args)
        result = Aggregate()
        sums: dict[str, float] = {name: 0 for name, _ in rollup.SUMS}
        for group in groups:
            requests = int(group["requests"] or 0)
            if requests <= 0:
                continue
            for name in sums:
                sums[name] += group[name] or 0
            if group["model_key"]:
                model = group["model_key"]
                result.models_used[model] = result.models_used.get(model, 0) + requests
                if group["cost_n"]:
                    cost = result.cost_by_model.get(model, 0.0) + group["cost_sum"]
                    result.cost_by_model[model] = cost
            for column, target in (
                ("endpoint", result.endpoints_hit),
                ("backend", result.backends_used),
                ("strategy", result.strategies_used),
            ):
                if group[column]:
                    target[group[column]] = target.get(group[column], 0) + requests
        result.total_requests = int(sums["requests"])
        result.successful_requests = int(sums["successes"])
        result.fallbacks_used = int(sums["fallbacks"])
        result.total_input_tokens = int(sums["prompt_tokens"])
        result.total_output_tokens = int(sums["completion_tokens"])
        result.total_cached_tokens = int(sums["cached_tokens"])
        result.total_reasoning_tokens = int(sums["reasoning_tokens"])
        result.total_cost = float(sums["cost_sum"])
        if sums["duration_n"]:
            result.avg_duration_ms = sums["duration_sum"] / sums["duration_n"]
        if sums["tps_n"]:
            result.avg_tokens_per_second = sums["tps_sum"] / sums["tps_n"]
        if sums["duration_n"]:
            result.p50_duration_ms, result.p95_duration_ms = await self._duration_percentiles(
                split, int(sums["duration_n"])
            )
        return result

    async def _duration_percentiles(
        self, split: rollup.Split, count: int
    ) -> tuple[float | None, float | None]:
        if count > EXACT_PERCENTILE_MAX:
            rows = await self.db.fetch(rollup.window_hist_sql(self.db.dialect), *split.args)
            bins = [(int(row["bin"]), int(row["n"])) for row in rows if row["n"]]
            return rollup.hist_percentile(bins, 0.5), rollup.hist_percentile(bins, 0.95)
        bounds = (split.lo, split.hi)
        if self.db.dialect == "postgres":
            row = await self.db.fetchrow(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50,"
                " percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95"
                f" FROM analytics_events WHERE {_WINDOW}",
                *bounds,
            )
            assert row is not None
            return row["p50"], row["p95"]
        return (
            await self._sqlite_percentile(bounds, 0.5),
            await self._sqlite_percentile(bounds, 0.95),
        )

    async def _sqlite_percentile(self, bounds: tuple[float, float], p: float) -> float | None:
        """percentile_cont without the extension: count, then read the two neighbours."""
        where = f"FROM analytics_events WHERE {_WINDOW} AND duration_ms IS NOT NULL"
        n = int(await self.db.fetchval(f"SELECT count(*) {where}", *bounds))
        if n == 0:
            return None
        position = (n - 1) * p
        rows = await self.db.fetch(
            f"SELECT duration_ms {where} ORDER BY duration_ms LIMIT 2 OFFSET $3",
            *bounds,
            math.floor(position),
        )
        return interpolate([row["duration_ms"] for row in rows], position)


def _first_per_id(rows: Sequence[StoredEvent]) -> list[StoredEvent]:
    """One row per id (the first, as `INSERT … ON CONFLICT DO NOTHING` keeps), sorted by id so
    concurrent batches take their index locks in the same order."""
    first: dict[str, StoredEvent] = {}
    for row in rows:
        first.setdefault(row.id, row)
    return sorted(first.values())


def _text(value: Any) -> str:
    return value if isinstance(value, str) else value.decode()
