"""`SIGNALBOX_ANALYTICS_RETENTION_SECONDS`: a sweep that deletes events older than the retention."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from services.analytics.store import EventStore
from services.common.periodic import Periodic

log = logging.getLogger(__name__)


class RetentionSweeper:
    def __init__(
        self,
        store: EventStore,
        retention_seconds: int,
        interval_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.retention_seconds = retention_seconds
        self._clock = clock
        self._periodic = Periodic("analytics-retention", interval_seconds, self.sweep)

    async def sweep(self) -> int:
        cutoff = self._clock() - self.retention_seconds
        deleted = await self._store.delete_older_than(cutoff)
        if deleted:
            log.info("retention sweep", extra={"deleted": deleted, "cutoff": cutoff})
        return deleted

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
