"""Fault injection on the real stack: services as processes (deploy/local/stack.py), Postgres and
Redis reached through cuttable TCP proxies, the mock upstream as the provider.

Each test starts only the services its fault involves, so a case stays within ~20 s of fault
time on a busy machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from deploy.local.stack import LocalStack, free_ports
from tests.faults.tcp_proxy import TcpProxy
from tests.mock_upstream.fixture import (  # noqa: F401 (pytest fixtures)
    MockUpstream,
    mock_upstream,
    mock_upstream_server,
)

INTERNAL_TOKEN = "internal-" + "fault" * 8
ADMIN_TOKEN = "admin-" + "f" * 40
PROVIDER_KEY = "sk-upstream-faults"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}

StackFactory = Callable[..., AbstractAsyncContextManager[LocalStack]]


def through(url: str, proxy: TcpProxy) -> str:
    """`url` with its host:port replaced by the proxy's."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + proxy.addr
    return urlunsplit(parts._replace(netloc=netloc))


async def proxy_for(url: str) -> TcpProxy:
    parts = urlsplit(url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 0)
    await proxy.start()
    return proxy


@pytest.fixture
async def pg_proxy(pg_url: str) -> AsyncIterator[TcpProxy]:
    proxy = await proxy_for(pg_url)
    yield proxy
    await proxy.close()


@pytest.fixture
async def redis_proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    proxy = await proxy_for(redis_url)
    yield proxy
    await proxy.close()


@pytest.fixture
def fault_stack(
    pg_url: str,
    mock_upstream: MockUpstream,  # noqa: F811
    tmp_path: Path,
) -> StackFactory:
    """`async with fault_stack(services, **env) as stack:`; env values override the defaults."""

    @asynccontextmanager
    async def start(services: tuple[str, ...], **env: str) -> AsyncIterator[LocalStack]:
        ports = free_ports()
        base = {
            "SIGNALBOX_DATABASE_URL": pg_url,
            "SIGNALBOX_REDIS_URL": "",
            "SIGNALBOX_INTERNAL_TOKEN": INTERNAL_TOKEN,
            "SIGNALBOX_ADMIN_TOKEN": ADMIN_TOKEN,
            "SIGNALBOX_DATA_DIR": str(tmp_path / "data"),
            "SIGNALBOX_ANALYTICS_SPOOL_DIR": str(tmp_path / "spool"),
            "SIGNALBOX_KNN_INDEX_DIR": str(tmp_path / "knn"),
            "SIGNALBOX_AUTH_MODE": "passthrough",
            "SIGNALBOX_SHUTDOWN_GRACE_SECONDS": "10",
            "SIGNALBOX_ANALYTICS_METRICS_BIND": "off",
            "SIGNALBOX_KEYS_METRICS_BIND": "off",
            "SIGNALBOX_ROUTER_METRICS_BIND": "off",
            "OPENAI_API_KEY": PROVIDER_KEY,
            "OPENAI_BASE_URL": mock_upstream.base_url,
        }
        stack = LocalStack(
            env={**base, **env}, ports=ports, log_dir=tmp_path / "logs", services=services
        )
        async with stack:
            yield stack

    return start


async def chat(
    client: httpx.AsyncClient, request_id: str, token: str = "client-token", **body: Any
) -> httpx.Response:
    return await client.post(
        "/v1/chat/completions",
        json={**CHAT, **body},
        headers={"authorization": f"Bearer {token}", "x-request-id": request_id},
    )


@dataclass
class Traffic:
    """`total` chat requests (request ids `{prefix}{i}`) from `workers` concurrent clients, the
    traffic a fault is injected into; `third_done` is set once a third has been answered."""

    client: httpx.AsyncClient
    prefix: str
    total: int = 90
    workers: int = 6
    pause: float = 0.02
    statuses: list[int] = field(default_factory=list)
    third_done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def done(self) -> int:
        return len(self.statuses)

    @property
    def request_ids(self) -> set[str]:
        return {f"{self.prefix}{i}" for i in range(self.total)}

    async def run(self) -> None:
        pending = iter(range(self.total))

        async def worker() -> None:
            for i in pending:
                self.statuses.append((await chat(self.client, f"{self.prefix}{i}")).status_code)
                if self.done >= self.total // 3:
                    self.third_done.set()
                await asyncio.sleep(self.pause)

        await asyncio.gather(*(worker() for _ in range(self.workers)))


async def stored_request_ids(pg_url: str) -> list[str]:
    """Every stored event's request id (duplicates kept, so a double count shows)."""
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch("SELECT event->>'request_id' AS rid FROM analytics_events")
    finally:
        await conn.close()
    return [row["rid"] for row in rows]


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.2
) -> None:
    """A bounded wait for the system to converge (not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout:g}s: {what}")
        await asyncio.sleep(interval)


async def exactly_once(pg_url: str, expected: set[str], timeout: float = 30.0) -> None:
    """Wait until every expected request id is stored, then check none is stored twice."""

    async def arrived() -> bool:
        return expected <= set(await stored_request_ids(pg_url))

    await wait_for(arrived, timeout, "every analytics event stored")
    ids = [rid for rid in await stored_request_ids(pg_url) if rid in expected]
    assert len(ids) == len(expected), "an event was stored twice"
