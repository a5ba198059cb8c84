"""Postgres (asyncpg) or the embedded SQLite default behind one small async interface.

SQL is written once in Postgres style (`$1`, `$2` …); SQLite accepts numbered `?N`
parameters, so the text is rewritten rather than duplicated. Anything dialect-specific
(COPY, partitioning, `RETURNING` quirks) checks `db.dialect` explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiosqlite
import asyncpg
from tenacity import (
    AsyncRetrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

log = logging.getLogger(__name__)

# Failures that mean "the database cannot be reached or used right now", not a bad query.
DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # What asyncpg raises when a query races the server terminating its connection.
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.ObjectNotInPrerequisiteStateError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.TooManyConnectionsError,
    sqlite3.OperationalError,
)
# A database that is still booting (compose, Kubernetes) gets this long before we give up.
STARTUP_DB_WAIT_SECONDS = 30.0

Dialect = Literal["postgres", "sqlite"]
Row = Mapping[str, Any]
_PG_PARAM = re.compile(r"\$(\d+)")


class Connection:
    """The operations both backends share; obtained from `Database.connection()`/`transaction()`."""

    dialect: Dialect

    async def execute(self, sql: str, *args: Any) -> None:
        raise NotImplementedError

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        raise NotImplementedError

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else next(iter(row.values()))

    async def execute_script(self, sql: str) -> None:
        raise NotImplementedError


class _PgConnection(Connection):
    dialect: Dialect = "postgres"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.raw = conn

    async def execute(self, sql: str, *args: Any) -> None:
        await self.raw.execute(sql, *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.raw.executemany(sql, list(rows))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [dict(r) for r in await self.raw.fetch(sql, *args)]

    async def execute_script(self, sql: str) -> None:
        await self.raw.execute(sql)


class _SqliteConnection(Connection):
    dialect: Dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.raw = conn

    @staticmethod
    def _sql(sql: str) -> str:
        return _PG_PARAM.sub(r"?\1", sql)

    async def execute(self, sql: str, *args: Any) -> None:
        await self.raw.execute(self._sql(sql), args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.raw.executemany(self._sql(sql), [tuple(r) for r in rows])

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self.raw.execute(self._sql(sql), args) as cursor:
            names = [c[0] for c in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]

    async def execute_script(self, sql: str) -> None:
        await self.raw.executescript(sql)


class Database:
    """A pool (Postgres) or one serialized connection (SQLite)."""

    def __init__(
        self,
        dialect: Dialect,
        *,
        pool: asyncpg.Pool | None = None,
        sqlite: aiosqlite.Connection | None = None,
        label: str,
    ) -> None:
        self.dialect = dialect
        self.pool = pool
        self._sqlite = sqlite
        self._sqlite_lock = asyncio.Lock()
        self.label = label

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A connection in autocommit mode."""
        if self.pool is not None:
            async with self.pool.acquire() as conn:
                yield _PgConnection(conn)
            return
        assert self._sqlite is not None
        async with self._sqlite_lock:
            yield _SqliteConnection(self._sqlite)
            await self._sqlite.commit()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """All-or-nothing: a half-written row never survives an error."""
        if self.pool is not None:
            async with self.pool.acquire() as conn, conn.transaction():
                yield _PgConnection(conn)
            return
        assert self._sqlite is not None
        async with self._sqlite_lock:
            await self._sqlite.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteConnection(self._sqlite)
            except BaseException:
                await self._sqlite.rollback()
                raise
            await self._sqlite.commit()

    async def execute(self, sql: str, *args: Any) -> None:
        async with self.connection() as conn:
            await conn.execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self.connection() as conn:
            return await conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self.connection() as conn:
            return await conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self.connection() as conn:
            return await conn.fetchval(sql, *args)

    async def ping(self) -> float:
        """`SELECT 1`; returns the latency in ms."""
        started = time.perf_counter()
        await self.fetchval("SELECT 1")
        return (time.perf_counter() - started) * 1000

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
        if self._sqlite is not None:
            await self._sqlite.close()


async def connect(
    url: str | None, sqlite_path: Path, *, pool_max: int = 10, lazy: bool = False
) -> Database:
    """Postgres when `url` is a postgres URL, else the embedded SQLite file (created if needed).

    `lazy` opens no Postgres connection up front, so a process that can serve without the
    database (the edge) starts while it is down and reports not-ready instead of exiting.
    """
    if url and url.startswith(("postgres://", "postgresql://")):
        pool = await asyncpg.create_pool(
            url, min_size=0 if lazy else 1, max_size=pool_max, command_timeout=30, timeout=5
        )
        return Database("postgres", pool=pool, label="postgres")
    if url and url.startswith("sqlite:///"):
        sqlite_path = Path(url.removeprefix("sqlite:///"))
    elif url:
        raise ValueError("SIGNALBOX_DATABASE_URL must be postgres://… or sqlite:///path")
    sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(sqlite_path, isolation_level=None)
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA busy_timeout=5000")
    await conn.execute("PRAGMA synchronous=NORMAL")
    conn.row_factory = None
    return Database("sqlite", sqlite=conn, label=f"sqlite:{sqlite_path}")


@dataclass(frozen=True)
class Migration:
    """One versioned schema step; `sqlite` defaults to the Postgres text when it is portable."""

    version: int
    postgres: str
    sqlite: str | None = None

    def sql(self, dialect: Dialect) -> str:
        return self.postgres if dialect == "postgres" or self.sqlite is None else self.sqlite


_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    component TEXT NOT NULL,
    version INTEGER NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (component, version)
)"""


async def migrate(db: Database, component: str, migrations: Sequence[Migration]) -> list[int]:
    """Apply the missing migrations of one component, each in its own transaction.

    On Postgres an advisory lock serializes concurrent starters (two replicas booting at once).
    """
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)):
        raise ValueError(f"{component}: migration versions must be unique and ascending")
    applied: list[int] = []
    async with db.transaction() as conn:
        if db.dialect == "postgres":
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('signalbox.migrate'))")
        await conn.execute(_LEDGER)
        done = {
            r["version"]
            for r in await conn.fetch(
                "SELECT version FROM schema_migrations WHERE component = $1", component
            )
        }
        for migration in migrations:
            if migration.version in done:
                continue
            await conn.execute_script(migration.sql(db.dialect))
            await conn.execute(
                "INSERT INTO schema_migrations (component, version, applied_at)"
                " VALUES ($1, $2, $3)",
                component,
                migration.version,
                time.time(),
            )
            applied.append(migration.version)
    if applied:
        log.info("migrated", extra={"component": component, "versions": applied})
    return applied


async def open_migrated(
    url: str | None,
    sqlite_path: Path,
    migrate_schema: Callable[[Database], Awaitable[object]],
    *,
    wait_seconds: float = STARTUP_DB_WAIT_SECONDS,
) -> Database:
    """Connect and run the migrations, retrying only while the database is unreachable."""

    async def attempt_once() -> Database:
        db = await connect(url, sqlite_path)
        try:
            await migrate_schema(db)
        except BaseException:
            await db.close()
            raise
        return db

    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(DATABASE_UNAVAILABLE),
        stop=stop_after_delay(wait_seconds),
        wait=wait_exponential(multiplier=0.2, max=2.0),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    ):
        with attempt:
            return await attempt_once()
    raise AssertionError("unreachable: AsyncRetrying either returns or reraises")
