"""The edge's copy of the router's model catalog (router-schema-1.1 §11, http-api §4).

Polled every 60 s with `if_none_match` = the revision held, so an unchanged catalog costs the
router one tiny reply. A failed poll keeps the last catalog: `/v1/models` keeps answering while
the router restarts. With the router off there is no catalog and the list is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass

import grpc

from services.common.pb import router_pb2, router_pb2_grpc

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 60.0
CATALOG_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class CatalogSnapshot:
    revision: str
    models: tuple[router_pb2.CatalogModel, ...]
    aliases: tuple[str, ...]
    loaded_at: int  # unix seconds: the `created` of every `/v1/models` entry


class CatalogView:
    """Latest catalog snapshot plus the poller that keeps it current."""

    def __init__(
        self,
        channel: grpc.aio.Channel | None,
        *,
        poll_s: float = POLL_INTERVAL_S,
        timeout_s: float = CATALOG_TIMEOUT_S,
    ) -> None:
        self._stub = router_pb2_grpc.RouterStub(channel) if channel is not None else None
        self._poll_s = poll_s
        self._timeout_s = timeout_s
        self.snapshot: CatalogSnapshot | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self._stub is not None

    @property
    def revision(self) -> str | None:
        return self.snapshot.revision if self.snapshot is not None else None

    async def refresh(self, *, force: bool = False) -> bool:
        """One conditional fetch; True when the router answered (changed or not)."""
        if self._stub is None:
            return False
        async with self._lock:
            current = None if force else self.revision
            request = router_pb2.CatalogRequest()
            if current is not None:
                request.if_none_match = f'"{current}"'
            try:
                reply = await self._stub.Catalog(request, timeout=self._timeout_s)
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "catalog fetch failed; keeping the last one", extra={"code": exc.code().name}
                )
                return False
            aliases = tuple(reply.route_aliases)
            if reply.not_modified and self.snapshot is not None:
                if aliases != self.snapshot.aliases:  # alias file changed, catalog did not
                    self.snapshot = dataclasses.replace(self.snapshot, aliases=aliases)
                return True
            self.snapshot = CatalogSnapshot(
                revision=reply.revision,
                models=tuple(reply.models),
                aliases=aliases,
                loaded_at=int(time.time()),
            )
            log.info(
                "catalog loaded",
                extra={"revision": reply.revision, "models": len(reply.models)},
            )
            return True

    async def current(self) -> CatalogSnapshot | None:
        """The snapshot, fetched now if none has been loaded yet (first request after start)."""
        if self.snapshot is None:
            await self.refresh()
        return self.snapshot

    def start(self) -> None:
        if self._stub is not None and self._task is None:
            self._task = asyncio.create_task(self._poll(), name="catalog-poll")

    async def _poll(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self._poll_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
