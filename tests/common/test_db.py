"""The shared database layer behaves the same on Postgres and on the embedded SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.db import Database, Migration, connect, migrate

MIGRATIONS = [
    Migration(1, "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT NOT NULL, n INTEGER)"),
    Migration(2, "CREATE INDEX notes_n ON notes (n)"),
]


@pytest.fixture(params=["postgres", "sqlite"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    database = await connect(url, tmp_path / "db" / "signalbox.db")
    yield database
    await database.close()


async def test_migrations_apply_once(db: Database) -> None:
    assert await migrate(db, "notes", MIGRATIONS) == [1, 2]
    assert await migrate(db, "notes", MIGRATIONS) == []
    assert await migrate(
        db, "notes", [*MIGRATIONS, Migration(3, "ALTER TABLE notes ADD COLUMN t TEXT")]
    ) == [3]


async def test_migration_versions_must_ascend(db: Database) -> None:
    with pytest.raises(ValueError, match="ascending"):
        await migrate(db, "bad", [Migration(2, "SELECT 1"), Migration(1, "SELECT 1")])


async def test_numbered_params_and_rows_as_dicts(db: Database) -> None:
    await migrate(db, "notes", MIGRATIONS)
    await db.execute("INSERT INTO notes (id, body, n) VALUES ($1, $2, $3)", "a", "x", 1)
    await db.execute("INSERT INTO notes (id, body, n) VALUES ($2, $1, $3)", "y", "b", 2)
    rows = await db.fetch("SELECT id, body, n FROM notes WHERE n >= $1 ORDER BY id", 1)
    assert rows == [{"id": "a", "body": "x", "n": 1}, {"id": "b", "body": "y", "n": 2}]
    assert await db.fetchval("SELECT count(*) FROM notes") == 2
    assert await db.fetchrow("SELECT id FROM notes WHERE id = $1", "zz") is None
    assert await db.ping() >= 0


async def test_transaction_rolls_back_on_error(db: Database) -> None:
    await migrate(db, "notes", MIGRATIONS)
    with pytest.raises(RuntimeError):
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO notes (id, body) VALUES ($1, $2)", "a", "x")
            raise RuntimeError("boom")
    assert await db.fetchval("SELECT count(*) FROM notes") == 0


async def test_unknown_url_scheme_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="postgres"):
        await connect("mysql://x", tmp_path / "x.db")
