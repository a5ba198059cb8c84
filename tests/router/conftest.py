"""Router fixtures: the reference catalog, alias files, and an in-process router on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from services.common.grpc_client import open_channel
from services.common.pb import router_pb2_grpc
from services.router.app import RouterApp
from services.router.settings import RouterSettings
from tests.router.processes import Spawn, spawner

REFERENCE_CATALOG = Path("/work/shared/data/routing/models.json")
MIXTRAL, GPT4 = "mixtral-8x7b-instruct", "gpt-4-1106-preview"

ALIASES: dict[str, Any] = {
    "nano-basic": {
        "base_url": "https://api.openai.com/v1",
        "mode": "responses",
        "model_id": "gpt-5-nano",
        "auth_env": "OPENAI_API_KEY",
    },
    "with-fallback": {
        "base_url": "http://primary:8000/v1",
        "mode": "chat",
        "model_id": "llama-70b",
        "fallbacks": [
            {"base_url": "http://backup:8000/v1", "mode": "chat", "model_id": "llama-8b"}
        ],
        "cache_ttl_ms": 5000,
        "system_overlay": "Answer in French.",
    },
    "auto": {"policy": "knn", "candidates": [MIXTRAL, GPT4], "default_model": MIXTRAL},
    "auto-short": {
        "policy": "knn",
        "candidates": [MIXTRAL, GPT4],
        "default_model": GPT4,
        "sticky_turns": 2,
    },
    # Shadows a catalog id: the alias table comes first.
    GPT4: {"base_url": "http://shadow/v1", "mode": "chat", "model_id": "shadowed"},
}
BACKENDS = "prefix=vllm-,base=http://vllm:8000/v1,mode=chat;prefix=gpt-,base=http://gpt/v1"


def write_json(path: Path, data: Any) -> Path:
    path.write_bytes(orjson.dumps(data))
    return path


@pytest.fixture
def alias_file(tmp_path: Path) -> Path:
    return write_json(tmp_path / "router_aliases.json", ALIASES)


@pytest.fixture
def router_settings(alias_file: Path) -> Callable[..., RouterSettings]:
    def make(**overrides: Any) -> RouterSettings:
        values: dict[str, Any] = {
            "router_bind": "127.0.0.1:0",
            "router_http_bind": "127.0.0.1:0",
            "router_aliases": alias_file,
            "catalog_path": REFERENCE_CATALOG,
            "backends": BACKENDS,
            "openai_base_url": "https://api.openai.com/v1",
            "shutdown_grace_seconds": 1.0,
            **overrides,
        }
        return RouterSettings(**values)

    return make


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start `python -m services.router` children; killed at teardown if still running."""
    start, cleanup = spawner(tmp_path)
    yield start
    cleanup()


StartRouter = Callable[..., Awaitable[RouterApp]]


@pytest.fixture
async def start_router(
    router_settings: Callable[..., RouterSettings],
) -> AsyncIterator[StartRouter]:
    """Start routers in this test's loop; each one is stopped at teardown."""
    started: list[RouterApp] = []

    async def start(**overrides: Any) -> RouterApp:
        settings = router_settings(**overrides)
        app = RouterApp(settings)
        await app.start()
        started.append(app)
        return app

    yield start
    for app in started:
        await app.stop()


@pytest.fixture
async def router(start_router: StartRouter) -> RouterApp:
    return await start_router()


@pytest.fixture
async def stub(router: RouterApp) -> AsyncIterator[router_pb2_grpc.RouterStub]:
    async with open_channel(f"127.0.0.1:{router.grpc_port}") as channel:
        yield router_pb2_grpc.RouterStub(channel)


@pytest.fixture
async def admin_stub(router: RouterApp) -> AsyncIterator[router_pb2_grpc.RouterAdminStub]:
    async with open_channel(f"127.0.0.1:{router.grpc_port}") as channel:
        yield router_pb2_grpc.RouterAdminStub(channel)


@pytest.fixture
async def http(router: RouterApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{router.http_port}", timeout=10
    ) as client:
        yield client
