"""`analytics_events` on Postgres or SQLite: idempotent ingest, windows, aggregates, retention.

Windows are `[start, end + 1)` in float unix seconds: the spec's `start`/`end` are inclusive whole
seconds, so an event at 100.7 belongs to `end = 100`.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.analytics.events import COLUMNS, StoredEvent
from services.common.db import Connection, Database, Migration, migrate

COMPONENT = "analytics"
STAGING = "analytics_events_staging"
RETENTION_BATCH = 5000
EXPORT_PAGE = 1000

MIGRATIONS = (
    Migration(
        1,
        postgres="""
        CREATE TABLE analytics_events (
            id TEXT PRIMARY KEY,
            timestamp DOUBLE PRECISION NOT NULL,
            event JSONB NOT NULL,
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
        rows = [event.row() for event in events]
        accepted = (
            await self._ingest_postgres(rows)
            if self.db.dialect == "postgres"
            else await self._ingest_sqlite(rows)
        )
        return accepted, len(rows) - accepted

    async def _ingest_postgres(self, rows: list[tuple[Any, ...]]) -> int:
        """COPY into a per-connection staging table, then one conflict-tolerant INSERT … SELECT."""
        assert self.db.pool is not None
        async with self.db.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {STAGING}"
                " (LIKE analytics_events) ON COMMIT DELETE ROWS"
            )
            await conn.copy_records_to_table(STAGING, records=rows, columns=COLUMNS)
            status = await conn.execute(
                f"INSERT INTO analytics_events ({_COLS})"
                f" SELECT DISTINCT ON (id) {_COLS} FROM {STAGING} ORDER BY id"
                " ON CONFLICT (id) DO NOTHING"
            )
        return int(status.rsplit(" ", 1)[-1])

    async def _ingest_sqlite(self, rows: list[tuple[Any, ...]]) -> int:
        params = ", ".join(f"${i}" for i in range(1, len(COLUMNS) + 1))
        async with self.db.transaction() as conn:
            before = await conn.fetchval("SELECT total_changes()")
            await conn.executemany(
                f"INSERT OR IGNORE INTO analytics_events ({_COLS}) VALUES ({params})", rows
            )
            after = await conn.fetchval("SELECT total_changes()")
        return int(after) - int(before)

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
        return int(await self.db.fetchval("SELECT count(*) FROM analytics_events"))

    async def clear(self) -> None:
        sql = (
            "TRUNCATE analytics_events"
            if self.db.dialect == "postgres"
            else ("DELETE FROM analytics_events")
        )
        await self.db.execute(sql)

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
                return deleted

    async def aggregate(self, window: Window) -> Aggregate:
        bounds = window.bounds
        row = await self.db.fetchrow(
            "SELECT count(*) AS total_requests,"
            " CAST(coalesce(sum(CASE WHEN success THEN 1 ELSE 0 END), 0) AS BIGINT)"
            "   AS successful_requests,"
            " CAST(coalesce(sum(prompt_tokens), 0) AS BIGINT) AS total_input_tokens,"
            " CAST(coalesce(sum(completion_tokens), 0) AS BIGINT) AS total_output_tokens,"
            " CAST(coalesce(sum(cached_tokens), 0) AS BIGINT) AS total_cached_tokens,"
            " CAST(coalesce(sum(reasoning_tokens), 0) AS BIGINT) AS total_reasoning_tokens,"
            " avg(duration_ms) AS avg_duration_ms,"
            " avg(tokens_per_second) AS avg_tokens_per_second,"
            " coalesce(sum(total_cost), 0) AS total_cost,"
            " CAST(coalesce(sum(CASE WHEN fallback_used THEN 1 ELSE 0 END), 0) AS BIGINT)"
            "   AS fallbacks_used"
            f" FROM analytics_events WHERE {_WINDOW}",
            *bounds,
        )
        assert row is not None
        result = Aggregate(**{k: v for k, v in row.items()})
        if result.total_requests == 0:
            return result
        for key, count, cost in await self._group(bounds, "model_key"):
            result.models_used[key] = count
            if cost is not None:
                result.cost_by_model[key] = cost
        for column, target in (
            ("endpoint", result.endpoints_hit),
            ("backend", result.backends_used),
            ("strategy", result.strategies_used),
        ):
            target.update({key: count for key, count, _ in await self._group(bounds, column)})
        result.p50_duration_ms, result.p95_duration_ms = await self._duration_percentiles(bounds)
        return result

    async def _group(
        self, bounds: tuple[float, float], column: str
    ) -> list[tuple[str, int, float | None]]:
        rows = await self.db.fetch(
            f"SELECT {column} AS k, count(*) AS n, sum(total_cost) AS cost"
            f" FROM analytics_events WHERE {_WINDOW} AND {column} IS NOT NULL GROUP BY {column}",
            *bounds,
        )
        return [(row["k"], int(row["n"]), row["cost"]) for row in rows]

    async def _duration_percentiles(
        self, bounds: tuple[float, float]
    ) -> tuple[float | None, float | None]:
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


def _text(value: Any) -> str:
    return value if isinstance(value, str) else value.decode()
