"""A keys service started in-process on loopback (port 0) and called through a real stub."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from services.common.grpc_client import open_channel
from services.common.pb import keys_pb2_grpc
from services.keys.app import KeysApp
from services.keys.service import ERROR_CODE_METADATA
from services.keys.settings import KeysSettings


class FakeClock:
    """A settable `time.time` so expiry boundaries are tested exactly, without sleeping."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class RunningKeys:
    app: KeysApp
    channel: grpc.aio.Channel
    stub: keys_pb2_grpc.KeysStub

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.app.server.port}"


StartKeys = Callable[..., Awaitable[RunningKeys]]


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'keys.db'}"


@pytest.fixture(params=["postgres", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using it runs against the real Postgres and the embedded SQLite."""
    if request.param == "postgres":
        return request.getfixturevalue("pg_url")
    return sqlite_url(tmp_path)


@pytest.fixture
async def start_keys(tmp_path: Path) -> AsyncIterator[StartKeys]:
    """Factory: `await start_keys(database_url, clock=..., **settings)`; all stopped after."""
    running: list[RunningKeys] = []

    async def start(
        database_url: str, *, clock: Callable[[], float] = time.time, **settings: Any
    ) -> RunningKeys:
        options: dict[str, Any] = {
            "keys_bind": "127.0.0.1:0",
            "database_url": database_url,
            "data_dir": tmp_path,
            "shutdown_grace_seconds": 1.0,
            "keys_health_probe_seconds": 0.1,
            # Isolated from any SIGNALBOX_* variables of the shell running the tests.
            "internal_token": None,
            "redis_url": None,
            "keys_require_expiration": False,
            "keys_allow_no_expiration": False,
            "keys_default_ttl_seconds": None,
            **settings,
        }
        app = KeysApp(KeysSettings(**options), clock=clock)
        port = await app.start()
        channel = open_channel(f"127.0.0.1:{port}", options.get("internal_token"))
        keys = RunningKeys(app, channel, keys_pb2_grpc.KeysStub(channel))
        running.append(keys)
        return keys

    yield start
    for keys in running:
        await keys.channel.close()
        await keys.app.stop()


@pytest.fixture
async def keys(start_keys: StartKeys, database_url: str) -> RunningKeys:
    return await start_keys(database_url)


async def rejected(call: Awaitable[Any], error_code: str) -> str:
    """Awaits a call that must fail INVALID_ARGUMENT with `error-code`; returns the message."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    err = caught.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    assert dict(err.trailing_metadata() or ())[ERROR_CODE_METADATA] == error_code
    return err.details() or ""
