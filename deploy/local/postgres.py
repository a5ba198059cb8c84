"""Databases on a real Postgres server for local stacks: `make stack`, the deploy tests, benches."""

from __future__ import annotations

import re
import uuid
from contextlib import AbstractAsyncContextManager

import asyncpg

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def database_url(admin_url: str, name: str) -> str:
    """`admin_url` pointed at database `name`."""
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def _checked(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a plain database name: {name!r}")
    return name


async def _admin(admin_url: str, sql: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def ensure_database(admin_url: str, name: str) -> str:
    """Create `name` unless it exists (a persistent stack keeps its data); returns its URL."""
    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{_checked(name)}"')
    finally:
        await conn.close()
    return database_url(admin_url, name)


class ThrowawayDatabase(AbstractAsyncContextManager[str]):
    """A database created on enter (yields its URL) and dropped on exit, connections and all."""

    def __init__(self, admin_url: str = DEFAULT_ADMIN_URL, prefix: str = "signalbox_tmp") -> None:
        self.admin_url = admin_url
        self.name = _checked(f"{prefix}_{uuid.uuid4().hex[:10]}")

    async def __aenter__(self) -> str:
        await _admin(self.admin_url, f'CREATE DATABASE "{self.name}"')
        return database_url(self.admin_url, self.name)

    async def __aexit__(self, *exc: object) -> None:
        await _admin(self.admin_url, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
