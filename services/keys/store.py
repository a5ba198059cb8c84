"""The `api_keys` table (spec keys §2) on Postgres or the embedded SQLite.

Scopes, rate limits and budgets are JSON (JSONB on Postgres, TEXT on SQLite). The extra
`seq` column (Postgres; SQLite uses its implicit `rowid`) orders keys created in the same
second, such as one batch, in insertion order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from services.common.db import Database, Migration, Row, migrate
from services.keys.model import Budget, KeyAttributes, KeyRecord, RateLimit

COMPONENT = "keys"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        postgres="""
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            label TEXT,
            created_at BIGINT NOT NULL,
            expires_at BIGINT,
            revoked_at BIGINT,
            salt_hex TEXT NOT NULL,
            hash_hex TEXT NOT NULL,
            scopes JSONB,
            rate_limit JSONB,
            budget JSONB,
            tenant TEXT,
            project TEXT,
            seq BIGINT GENERATED ALWAYS AS IDENTITY
        );
        CREATE INDEX api_keys_label_idx ON api_keys (label);
        CREATE INDEX api_keys_created_idx ON api_keys (created_at, seq);
        """,
        sqlite="""
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            label TEXT,
            created_at INTEGER NOT NULL,
            expires_at INTEGER,
            revoked_at INTEGER,
            salt_hex TEXT NOT NULL,
            hash_hex TEXT NOT NULL,
            scopes TEXT,
            rate_limit TEXT,
            budget TEXT,
            tenant TEXT,
            project TEXT
        );
        CREATE INDEX api_keys_label_idx ON api_keys (label);
        CREATE INDEX api_keys_created_idx ON api_keys (created_at);
        """,
    ),
)

_COLUMNS = (
    "id, label, created_at, expires_at, revoked_at, scopes, rate_limit, budget, tenant, project"
)
_INSERT = (
    f"INSERT INTO api_keys ({_COLUMNS}, salt_hex, hash_hex) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
)


@dataclass(frozen=True)
class StoredKey:
    """A row as written: the public record plus what verifies its secret."""

    record: KeyRecord
    salt_hex: str
    hash_hex: str


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _loads(value: str | None) -> Any:
    return None if value is None else orjson.loads(value)


def _row_values(key: StoredKey) -> tuple[Any, ...]:
    r, a = key.record, key.record.attributes
    return (
        r.id,
        r.label,
        r.created_at,
        r.expires_at,
        r.revoked_at,
        _json(list(a.scopes) if a.scopes else None),
        _json(a.rate_limit.to_json() if a.rate_limit else None),
        _json(a.budget.to_json() if a.budget else None),
        a.tenant,
        a.project,
        key.salt_hex,
        key.hash_hex,
    )


def _record(row: Row) -> KeyRecord:
    scopes = _loads(row["scopes"])
    rate_limit = _loads(row["rate_limit"])
    budget = _loads(row["budget"])
    return KeyRecord(
        id=row["id"],
        label=row["label"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        attributes=KeyAttributes(
            scopes=tuple(scopes) if scopes else None,
            rate_limit=RateLimit.from_json(rate_limit) if rate_limit else None,
            budget=Budget.from_json(budget) if budget else None,
            tenant=row["tenant"],
            project=row["project"],
        ),
    )


class KeyStore:
    """Every query the keys service runs; each write is one statement or one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._order = "created_at, seq" if db.dialect == "postgres" else "created_at, rowid"

    async def migrate(self) -> list[int]:
        return await migrate(self.db, COMPONENT, MIGRATIONS)

    async def insert(self, keys: Sequence[StoredKey]) -> None:
        """All rows or none."""
        async with self.db.transaction() as conn:
            await conn.executemany(_INSERT, [_row_values(k) for k in keys])

    async def lookup(self, key_id: str) -> StoredKey | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS}, salt_hex, hash_hex FROM api_keys WHERE id = $1", key_id
        )
        if row is None:
            return None
        return StoredKey(record=_record(row), salt_hex=row["salt_hex"], hash_hex=row["hash_hex"])

    async def list(
        self, *, label: str | None, label_prefix: str | None, include_revoked: bool
    ) -> list[KeyRecord]:
        """An exact `label` wins over `label_prefix`; oldest first."""
        where: list[str] = []
        args: list[Any] = []
        if label is not None:
            args.append(label)
            where.append(f"label = ${len(args)}")
        elif label_prefix:
            args.append(label_prefix)
            n = len(args)
            # substr rather than LIKE: no wildcard escaping, and SQLite's LIKE ignores case.
            where.append(f"substr(label, 1, length(CAST(${n} AS TEXT))) = ${n}")
        if not include_revoked:
            where.append("revoked_at IS NULL")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM api_keys {clause} ORDER BY {self._order}", *args
        )
        return [_record(row) for row in rows]

    async def revoke(self, key_id: str, now: int) -> bool:
        """True only for the call that revoked the key."""
        row = await self.db.fetchrow(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL RETURNING id",
            now,
            key_id,
        )
        return row is not None

    async def set_expiration(self, key_id: str, expires_at: int | None) -> bool:
        row = await self.db.fetchrow(
            "UPDATE api_keys SET expires_at = $1 WHERE id = $2 RETURNING id", expires_at, key_id
        )
        return row is not None
