"""Key verification under faults (keys.md §3, issue 5): malformed tokens never reach the keys
service, and a Postgres outage (a TCP proxy we cut, never the machine's Postgres) leaves
cached keys working until their cache TTL while new ones get 503."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.edge.conftest import CHAT, EdgeFactory, running_keys
from tests.edge.test_errors import assert_error
from tests.faults.tcp_proxy import TcpProxy

MALFORMED = [
    "not-a-key",
    "sk_" + "g" * 32 + "." + "a" * 64,  # id not hex
    "sk_" + "a" * 31 + "." + "a" * 64,  # id too short
    "sk_" + "a" * 32 + "." + "a" * 30,  # secret too short
    "sk_" + "a" * 32 + ".." + "a" * 64,  # two dots
    "pk_" + "a" * 32 + "." + "a" * 64,  # wrong prefix
]


@contextlib.asynccontextmanager
async def proxied(pg_url: str) -> AsyncIterator[tuple[TcpProxy, str]]:
    parts = urlsplit(pg_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    netloc = f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else None
    try:
        yield proxy, urlunsplit(parts._replace(netloc=netloc or f"127.0.0.1:{proxy.port}"))
    finally:
        with contextlib.suppress(Exception):
            await proxy.close()


async def _first_success(edge: Any, token: str, *, deadline_s: float) -> bool:
    """Retry until the key verifies again (the pool reconnects once Postgres is back)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        response = await edge.client.post("/v1/chat/completions", json=CHAT, headers=bearer(token))
        if response.status_code == 200:
            return True
        await asyncio.sleep(0.3)
    return False


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.mark.parametrize("token", MALFORMED)
async def test_malformed_token_is_401_without_asking_the_keys_service(
    make_edge: EdgeFactory, token: str
) -> None:
    # Nothing listens on the keys address: a gRPC call would have produced 503.
    settings = {"auth_mode": "managed", "openai_api_key": "sk-p", "keys_addr": "127.0.0.1:1"}
    async with make_edge(**settings) as edge:
        response = await edge.client.post("/v1/chat/completions", json=CHAT, headers=bearer(token))
    error = assert_error(response, 401, "invalid_api_key", "authentication_error")
    assert error["message"] == "Invalid API key"


async def test_postgres_down_cached_keys_work_until_ttl_new_ones_503(
    make_edge: EdgeFactory, pg_url: str, tmp_path: Path
) -> None:
    cache_ms = 3000
    async with proxied(pg_url) as (proxy, url):
        async with running_keys(url, tmp_path) as keys:
            cached_key = await keys.generate(label="cached")
            new_key = await keys.generate(label="new")
            settings = {
                "auth_mode": "managed",
                "openai_api_key": "sk-p",
                "keys_addr": keys.addr,
                "keys_cache_ms": cache_ms,
            }
            async with make_edge(**settings) as edge:
                warmed = await edge.client.post(
                    "/v1/chat/completions", json=CHAT, headers=bearer(cached_key.token)
                )
                warmed_at = time.monotonic()
                await proxy.cut()
                still_cached = await edge.client.post(
                    "/v1/chat/completions", json=CHAT, headers=bearer(cached_key.token)
                )
                in_cache = time.monotonic() - warmed_at < cache_ms / 1000
                uncached = await edge.client.post(
                    "/v1/chat/completions", json=CHAT, headers=bearer(new_key.token)
                )
                await asyncio.sleep(max(0.0, cache_ms / 1000 - (time.monotonic() - warmed_at)))
                await asyncio.sleep(0.2)
                expired = await edge.client.post(
                    "/v1/chat/completions", json=CHAT, headers=bearer(cached_key.token)
                )
                await proxy.restore()
                recovered = await _first_success(edge, new_key.token, deadline_s=15)
    assert warmed.status_code == 200
    assert recovered, "verification never recovered after Postgres came back"
    assert in_cache, "the machine was too slow to observe the cached window"
    assert still_cached.status_code == 200
    assert_error(uncached, 503, "keys_unavailable", "service_unavailable_error")
    assert uncached.headers["retry-after"] == "1"
    assert_error(expired, 503, "keys_unavailable", "service_unavailable_error")
