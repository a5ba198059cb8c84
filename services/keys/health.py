"""gRPC health that follows the database: NOT_SERVING while it is unusable, SERVING once back.

A background probe runs every `SIGNALBOX_KEYS_HEALTH_PROBE_SECONDS`; an RPC that hits a
connection failure flips health at once instead of waiting for the next probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3

import asyncpg

from services.common.db import Database
from services.common.grpc_server import GrpcServer

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


class DatabaseHealth:
    """Owns the serving flag of one `GrpcServer` on behalf of its database."""

    def __init__(self, db: Database, server: GrpcServer, interval_seconds: float) -> None:
        self._db = db
        self._server = server
        self._interval = interval_seconds
        self._serving: bool | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def serving(self) -> bool:
        return bool(self._serving)

    async def mark(self, serving: bool, reason: str | None = None) -> None:
        """Set health; transitions are logged once, not on every probe."""
        if serving == self._serving:
            return
        self._serving = serving
        await self._server.set_serving(serving)
        if serving:
            log.info("database usable: SERVING", extra={"database": self._db.label})
        else:
            log.error(
                "database unusable: NOT_SERVING",
                extra={"database": self._db.label, "error": reason},
            )

    async def probe(self) -> None:
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the task's cancellation
            # when the ping finishes at the same moment, and the loop would then never stop.
            async with asyncio.timeout(max(self._interval, 1.0)):
                await self._db.ping()
        except Exception as exc:  # any failure of SELECT 1 means unusable
            await self.mark(False, repr(exc))
        else:
            await self.mark(True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.probe()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="keys-db-health")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
