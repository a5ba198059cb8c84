"""gRPC health that follows the database: NOT_SERVING while it is unusable, SERVING once back.

A background probe runs every `interval_seconds`; an RPC that hits a connection failure calls
`mark(False, …)` so health flips at once instead of waiting for the next probe.
"""

from __future__ import annotations

import asyncio
import logging

from services.common.db import Database
from services.common.grpc_server import GrpcServer
from services.common.periodic import Periodic

log = logging.getLogger(__name__)


class DatabaseHealth:
    """Owns the serving flag of one `GrpcServer` on behalf of its database."""

    def __init__(
        self, db: Database, server: GrpcServer, interval_seconds: float, *, name: str
    ) -> None:
        self._db = db
        self._server = server
        self._serving: bool | None = None
        self._probe_timeout = max(interval_seconds, 1.0)
        self._periodic = Periodic(f"{name}-db-health", interval_seconds, self.probe)

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
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancellation
            # that stops the probe loop when the ping finishes at the same moment.
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
