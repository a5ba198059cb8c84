"""One analytics process: pricing, database and migrations, health, retention, the gRPC server.

Used by `python -m services.analytics` and, unchanged, by the tests (bind `127.0.0.1:0`).
"""

from __future__ import annotations

import logging
import time

from services.analytics.retention import RetentionSweeper
from services.analytics.service import SERVICE_NAME, AnalyticsService, Clock
from services.analytics.settings import AnalyticsSettings
from services.analytics.store import EventStore
from services.common.db import Database, open_migrated
from services.common.db_health import DatabaseHealth
from services.common.grpc_server import GrpcServer
from services.common.pb import analytics_pb2_grpc
from services.common.pricing import PriceTable

log = logging.getLogger(__name__)


async def open_database(settings: AnalyticsSettings) -> Database:
    """Connect and migrate, retrying only while the database is unreachable."""
    return await open_migrated(
        settings.database_url, settings.sqlite_path, lambda db: EventStore(db).migrate()
    )


class AnalyticsApp:
    """Starts SERVING only after migrations ran; `close` releases everything `start` opened."""

    def __init__(self, settings: AnalyticsSettings, *, clock: Clock = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.server = GrpcServer(
            settings.analytics_bind,
            [SERVICE_NAME],
            internal_token=settings.internal_token,
            grace_seconds=settings.shutdown_grace_seconds,
        )
        self.db: Database | None = None
        self.store: EventStore | None = None
        self.health: DatabaseHealth | None = None
        self.retention: RetentionSweeper | None = None

    async def start(self) -> int:
        """Returns the bound port."""
        try:
            return await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> int:
        s = self.settings
        # A broken pricing or catalog file stops the process before it accepts any event.
        prices = PriceTable.load(s.pricing_config, s.catalog_path)
        self.db = await open_database(s)
        self.store = EventStore(self.db)
        self.health = DatabaseHealth(
            self.db, self.server, s.analytics_health_probe_seconds, name="analytics"
        )
        servicer = AnalyticsService(
            self.store,
            prices,
            self.health,
            retention_seconds=s.analytics_retention_seconds,
            clock=self.clock,
        )
        analytics_pb2_grpc.add_AnalyticsServicer_to_server(servicer, self.server.server)
        port = await self.server.start()
        await self.health.mark(True)
        self.health.start()
        if s.analytics_retention_seconds is not None:
            self.retention = RetentionSweeper(
                self.store,
                s.analytics_retention_seconds,
                s.analytics_retention_interval_seconds,
                self.clock,
            )
            self.retention.start()
        log.info(
            "analytics service started",
            extra={
                "bind": s.analytics_bind,
                "port": port,
                "database": self.db.label,
                "retention_seconds": s.analytics_retention_seconds,
                "prices": len(prices),
                "pricing_source": prices.source,
                "internal_token": s.internal_token is not None,
            },
        )
        return port

    async def stop(self) -> None:
        """Drain the server, then close (what `run_until_signal` does on SIGTERM)."""
        await self.server.stop()
        await self.close()

    async def close(self) -> None:
        if self.retention is not None:
            await self.retention.stop()
            self.retention = None
        if self.health is not None:
            await self.health.stop()
            self.health = None
        if self.db is not None:
            await self.db.close()
            self.db = None
