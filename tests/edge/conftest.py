"""Edge tests: the FastAPI app in-process (httpx ASGITransport) against the real mock upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.edge.app import create_app
from services.edge.runtime import EdgeRuntime
from services.edge.settings import EdgeSettings
from tests.mock_upstream.fixture import (  # noqa: F401 (pytest fixtures)
    MockUpstream,
    mock_upstream,
    mock_upstream_server,
)


@dataclass
class Edge:
    """A running in-process edge: its HTTP client, runtime and the events it emitted."""

    client: httpx.AsyncClient
    runtime: EdgeRuntime
    app: Any
    events: list[dict[str, Any]] = field(default_factory=list)


EdgeFactory = Callable[..., AbstractAsyncContextManager[Edge]]


def edge_settings(tmp_path: Path, base_url: str, **overrides: Any) -> EdgeSettings:
    """Every dependency off and passthrough auth unless a test says otherwise."""
    defaults: dict[str, Any] = {
        "router_addr": "off",
        "keys_addr": "off",
        "analytics_addr": "off",
        "auth_mode": "passthrough",
        "openai_api_key": None,
        "openai_base_url": base_url,
        "data_dir": tmp_path,
        "analytics_spool_dir": tmp_path / "spool",
        "database_url": None,
        "redis_url": None,
        "backends": None,
        "admin_token": None,
        "internal_token": None,
    }
    return EdgeSettings(**{**defaults, **overrides})


@asynccontextmanager
async def running_edge(settings: EdgeSettings, *, capture: bool = True) -> AsyncIterator[Edge]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        runtime: EdgeRuntime = app.state.runtime
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
            edge = Edge(client, runtime, app)
            if capture:
                runtime.proxy.emit = edge.events.append
            yield edge


@pytest.fixture
def make_edge(tmp_path: Path, mock_upstream: MockUpstream) -> EdgeFactory:  # noqa: F811
    """`async with make_edge(**settings) as edge:` — an edge pointed at the mock upstream."""

    def factory(**overrides: Any) -> AbstractAsyncContextManager[Edge]:
        return running_edge(edge_settings(tmp_path, mock_upstream.base_url, **overrides))

    return factory


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}]}
BEARER = {"authorization": "Bearer client-token"}


@dataclass
class RunningKeys:
    addr: str
    stub: Any

    async def generate(self, **fields: Any) -> Any:
        from services.common.pb import keys_pb2

        return await self.stub.Generate(keys_pb2.GenerateRequest(**fields), timeout=5)


@asynccontextmanager
async def running_keys(pg_url: str, tmp_path: Path, **overrides: Any) -> AsyncIterator[RunningKeys]:
    """The real keys gRPC service, in-process on a loopback port, backed by Postgres."""
    from services.common.grpc_client import open_channel
    from services.common.pb import keys_pb2_grpc
    from services.keys.app import KeysApp
    from services.keys.settings import KeysSettings

    options: dict[str, Any] = {
        "keys_bind": "127.0.0.1:0",
        "database_url": pg_url,
        "data_dir": tmp_path,
        "shutdown_grace_seconds": 1.0,
        "internal_token": None,
        "redis_url": None,
        **overrides,
    }
    app = KeysApp(KeysSettings(**options))
    port = await app.start()
    addr = f"127.0.0.1:{port}"
    channel = open_channel(addr)
    try:
        yield RunningKeys(addr, keys_pb2_grpc.KeysStub(channel))
    finally:
        await channel.close()
        await app.stop()


@pytest.fixture
async def keys_service(pg_url: str, tmp_path: Path) -> AsyncIterator[RunningKeys]:
    async with running_keys(pg_url, tmp_path) as keys:
        yield keys


@dataclass
class RunningRouter:
    addr: str
    app: Any


RouterFactory = Callable[..., AbstractAsyncContextManager[RunningRouter]]


@pytest.fixture
def router_service(tmp_path: Path, mock_upstream: MockUpstream) -> RouterFactory:  # noqa: F811
    """`async with router_service(aliases, **settings)`: the real router, in-process."""
    import orjson

    from services.router.app import RouterApp
    from services.router.settings import RouterSettings

    @asynccontextmanager
    async def start(
        aliases: dict[str, Any] | None = None, **overrides: Any
    ) -> AsyncIterator[RunningRouter]:
        path = None
        if aliases is not None:
            path = tmp_path / "router_aliases.json"
            path.write_bytes(orjson.dumps(aliases))
        options: dict[str, Any] = {
            "router_bind": "127.0.0.1:0",
            "router_http_bind": "127.0.0.1:0",
            "router_aliases": path,
            "OPENAI_BASE_URL": mock_upstream.base_url,
            "data_dir": tmp_path,
            "redis_url": None,
            "internal_token": None,
            "backends": None,
            "catalog_path": None,
            "knn_train_path": None,
            "shutdown_grace_seconds": 1.0,
            **overrides,
        }
        app = RouterApp(RouterSettings(**options))
        await app.start()
        try:
            yield RunningRouter(f"127.0.0.1:{app.grpc_port}", app)
        finally:
            await app.stop()

    return start
