"""One keys process: database and migrations, the Redis publisher, the gRPC server, health.

Used by `python -m services.keys` and, unchanged, by the tests (bind `127.0.0.1:0`).
"""

from __future__ import annotations

import logging
import time

from services.common.db import Database, open_migrated
from services.common.db_health import DatabaseHealth
from services.common.grpc_server import GrpcServer
from services.common.pb import keys_pb2_grpc
from services.keys.expiry import ExpiryPolicy
from services.keys.invalidation import InvalidationPublisher
from services.keys.service import SERVICE_NAME, Clock, KeysService
from services.keys.settings import KeysSettings
from services.keys.store import KeyStore

log = logging.getLogger(__name__)


async def open_database(settings: KeysSettings) -> Database:
    """Connect and migrate, retrying only while the database is unreachable."""
    return await open_migrated(
        settings.database_url, settings.sqlite_path, lambda db: KeyStore(db).migrate()
    )


class KeysApp:
    """Starts SERVING only after migrations ran; `close` releases everything `start` opened."""

    def __init__(self, settings: KeysSettings, *, clock: Clock = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.server = GrpcServer(
            settings.keys_bind,
            [SERVICE_NAME],
            internal_token=settings.internal_token,
            grace_seconds=settings.shutdown_grace_seconds,
        )
        self.db: Database | None = None
        self.health: DatabaseHealth | None = None
        self.publisher: InvalidationPublisher | None = None

    async def start(self) -> int:
        """Returns the bound port."""
        try:
            return await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> int:
        s = self.settings
        self.db = await open_database(s)
        self.health = DatabaseHealth(self.db, self.server, s.keys_health_probe_seconds, name="keys")
        if s.redis_url:
            self.publisher = InvalidationPublisher(s.redis_url, s.redis_key_prefix)
        servicer = KeysService(
            KeyStore(self.db),
            ExpiryPolicy.from_settings(s),
            self.health,
            self.publisher,
            self.clock,
        )
        keys_pb2_grpc.add_KeysServicer_to_server(servicer, self.server.server)
        port = await self.server.start()
        await self.health.mark(True)
        self.health.start()
        log.info(
            "keys service started",
            extra={
                "bind": s.keys_bind,
                "port": port,
                "database": self.db.label,
                "invalidation_channel": self.publisher.channel if self.publisher else None,
                "internal_token": s.internal_token is not None,
            },
        )
        return port

    async def stop(self) -> None:
        """Drain the server, then close (what `run_until_signal` does on SIGTERM)."""
        await self.server.stop()
        await self.close()

    async def close(self) -> None:
        if self.health is not None:
            await self.health.stop()
        if self.publisher is not None:
            await self.publisher.close()
            self.publisher = None
        if self.db is not None:
            await self.db.close()
            self.db = None
