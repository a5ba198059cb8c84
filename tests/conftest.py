"""Fixtures shared by the whole suite: the real Postgres and Redis, each test in its own space.

Postgres and Redis are required. When either is missing the run stops at once and says
which one and where it looked; nothing is skipped silently.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest
import redis as syncredis
import redis.asyncio as aioredis

from deploy.local import stack

PG_ADMIN_URL = os.environ.get(
    "SIGNALBOX_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("SIGNALBOX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def _probe() -> list[str]:
    missing = []
    try:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
        await conn.close()
    except Exception as exc:  # any failure means "not usable"
        missing.append(f"Postgres at {PG_ADMIN_URL} ({type(exc).__name__}: {exc})")
    try:
        client = aioredis.from_url(REDIS_URL, socket_connect_timeout=3)
        await client.ping()
        await client.aclose()
    except Exception as exc:
        missing.append(f"Redis at {REDIS_URL} ({type(exc).__name__}: {exc})")
    return missing


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = asyncio.run(_probe())
    if missing:
        pytest.exit(
            "The test suite needs these running services and could not reach them:\n  - "
            + "\n  - ".join(missing)
            + "\nStart them (README: 'Testing') or point SIGNALBOX_TEST_PG_URL / "
            "SIGNALBOX_TEST_REDIS_URL at them. No test was skipped; none ran.",
            returncode=3,
        )


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def _admin_async(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _admin(sql: str) -> None:
    """Run one admin statement on its own loop in a worker thread (callers may be inside a loop)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _admin_async(sql)).result()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty Postgres database for one test, dropped afterwards.

    Synchronous on purpose: async tests and async fixtures can both request it.
    """
    name = f"sbtest_{uuid.uuid4().hex[:16]}"
    _admin(f'CREATE DATABASE "{name}"')
    yield _with_database(PG_ADMIN_URL, name)
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A unique key prefix (SIGNALBOX_REDIS_KEY_PREFIX) whose keys are deleted afterwards."""
    prefix = f"sbtest:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = syncredis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Factory for unused loopback ports (for services started as real processes)."""
    return stack.free_port
