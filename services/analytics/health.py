"""gRPC health that follows the database: NOT_SERVING while it is unusable, SERVING once back.

A periodic `SELECT 1` catches an outage while idle; an RPC that hits a connection failure
flips health at once instead of waiting for the next probe.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import asyncpg

from services.analytics.periodic import Periodic
from services.common.db import Database
from services.common.grpc_server import GrpcServer

log = logging.getLogger(__name__)

# Failures that mean "the database cannot be reached or used right now", not a bad query.
DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
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
        self._serving: bool | None = None
        self._probe_timeout = max(interval_seconds, 1.0)
        self._periodic = Periodic("analytics-db-health", interval_seconds, self.probe)

    @property
    def serving(self) -> bool:
        return bool(self._serving)

    async def mark(self, serving: bool, reason: str | None = None) -> None:
        """Transitions are logged once, not on every probe."""
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
            # Not wait_for: on 3.11 it can swallow the cancellation that stops this loop.
            async with asyncio.timeout(self._probe_timeout):
                await self._db.ping()
        except Exception as exc:  # any failure of SELECT 1 means unusable
            await self.mark(False, repr(exc))
        else:
            await self.mark(True)

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
