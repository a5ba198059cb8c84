"""A small Starlette upstream for the nginx tests: SSE with an acknowledgement handshake.

`/v1/stream` sends event i, then waits until the test says it has *received* event i (or
`ack_wait` passes) before sending event i + 1. Through a proxy that flushes, every event arrives
before the next one is sent; through a buffering proxy the first event is only delivered after
later ones were sent. The recorded send/receive instants make that visible by order alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class StreamRun:
    """One SSE response: when each event was sent, and whether the client confirmed it in time."""

    events: int
    ack_wait: float
    sent_at: list[float] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    acks: list[asyncio.Event] = field(default_factory=list)
    unconfirmed: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.acks = [asyncio.Event() for _ in range(self.events)]

    def confirm(self, index: int) -> None:
        self.received_at.append(time.monotonic())
        self.acks[index].set()


@dataclass
class UpstreamState:
    name: str = "upstream"
    runs: dict[str, StreamRun] = field(default_factory=dict)
    uploads: list[int] = field(default_factory=list)
    seen: list[dict[str, str]] = field(default_factory=list)


def create_upstream_app(state: UpstreamState) -> Starlette:
    async def stream(request: Request) -> Response:
        run = state.runs[request.query_params["run"]]

        async def events() -> AsyncIterator[bytes]:
            for i in range(run.events):
                run.sent_at.append(time.monotonic())
                yield f"id: {i}\ndata: event {i}\n\n".encode()
                try:
                    await asyncio.wait_for(run.acks[i].wait(), run.ack_wait)
                except TimeoutError:
                    run.unconfirmed.append(i)

        headers = {"Cache-Control": "no-cache"}
        if request.query_params.get("accel") == "no":
            headers["X-Accel-Buffering"] = "no"
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def upload(request: Request) -> Response:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        state.uploads.append(size)
        return JSONResponse({"bytes": size})

    async def echo(request: Request) -> Response:
        client = request.client
        seen = {
            "upstream": state.name,
            "http_version": request.scope["http_version"],
            "peer": f"{client.host}:{client.port}" if client else "",
            **{k.lower(): v for k, v in request.headers.items()},
        }
        state.seen.append(seen)
        return JSONResponse(seen)

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def live(_request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def failing(_request: Request) -> Response:
        return JSONResponse({"status": "not_ready"}, status_code=503)

    return Starlette(
        routes=[
            Route("/v1/stream", stream),
            Route("/v1/upload", upload, methods=["POST"]),
            Route("/v1/echo", echo),
            Route("/health", health),
            Route("/_health/live", live),
            Route("/_health/failing", failing),
        ]
    )


@asynccontextmanager
async def serve_upstream(state: UpstreamState, port: int) -> AsyncIterator[str]:
    """Serve the app on 127.0.0.1:`port` in this event loop; yields its base URL."""
    config = uvicorn.Config(
        create_upstream_app(state),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        timeout_keep_alive=5,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # surfaces the bind error
                raise RuntimeError("upstream server stopped before it started")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
