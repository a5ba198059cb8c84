"""One analytics process: pricing, database and migrations, health, retention, the gRPC server.

Used by `python -m services.analytics` and, unchanged, by the tests (bind `127.0.0.1:0`).
"""

from __future__ import annotations

import logging
import time

from tenacity import (
    AsyncRetrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from services.analytics.health import DATABASE_UNAVAILABLE, DatabaseHealth
from services.analytics.retention import RetentionSweeper
from services.analytics.service import SERVICE_NAME, AnalyticsService, Clock
from services.analytics.settings import AnalyticsSettings
from services.analytics.store import EventStore
from services.common.db import Database, connect
from services.common.grpc_server import GrpcServer
from services.common.pb import analytics_pb2_grpc
from services.common.pricing import PriceTable

log = logging.getLogger(__name__)

# A database that is still booting (compose, Kubernetes) gets this long before we give up.
STARTUP_DB_WAIT_SECONDS = 30.0


async def _connect_and_migrate(settings: AnalyticsSettings) -> Database:
    db = await connect(settings.database_url, settings.sqlite_path)
    try:
        await EventStore(db).migrate()
    except BaseException:
        await db.close()
        raise
    return db


async def open_database(settings: AnalyticsSettings) -> Database:
    """Connect and migrate, retrying only while the database is unreachable."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(DATABASE_UNAVAILABLE),
        stop=stop_after_delay(STARTUP_DB_WAIT_SECONDS),
        wait=wait_exponential(multiplier=0.2, max=2.0),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    ):
        with attempt:
            return await _connect_and_migrate(settings)
    raise AssertionError("unreachable: AsyncRetrying either returns or reraises")


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
        self.health = DatabaseHealth(self.db, self.server, s.analytics_health_probe_seconds)
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
