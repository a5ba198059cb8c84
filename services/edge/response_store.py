"""State for `/v1/responses` (conversion §6): `previous_response_id` and `conversation`.

Chat-mode upstreams are stateless, so the edge keeps what a chained turn needs itself:
- a chat upstream served the turn → a full record (expanded input items + output items);
- a responses upstream served it → a pointer to where the state lives (that upstream), so
  the next turn is pinned there and forwarded unchanged.
`conversation` on a chat upstream is a Signalbox-managed item list. Rows live in the edge
database (Postgres when `SIGNALBOX_DATABASE_URL` is set, else the embedded SQLite) and expire
after `SIGNALBOX_RESPONSE_STORE_TTL_SECONDS`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson

from services.common.db import Database, Migration, migrate
from services.edge.errors import ApiError, invalid_request
from services.edge.route_request import RoutingHeaders
from services.edge.upstream import Target

log = logging.getLogger(__name__)

COMPONENT = "edge_response_store"
PURGE_INTERVAL_S = 60.0

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        postgres="""
        CREATE TABLE stored_responses (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX stored_responses_expires_idx ON stored_responses (expires_at);
        CREATE TABLE conversation_items (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            conversation_id TEXT NOT NULL,
            item TEXT NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX conversation_items_conv_idx ON conversation_items (conversation_id, seq);
        CREATE INDEX conversation_items_expires_idx ON conversation_items (expires_at);
        """,
        sqlite="""
        CREATE TABLE stored_responses (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        );
        CREATE INDEX stored_responses_expires_idx ON stored_responses (expires_at);
        CREATE TABLE conversation_items (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id TEXT NOT NULL,
            item TEXT NOT NULL,
            expires_at REAL NOT NULL
        );
        CREATE INDEX conversation_items_conv_idx ON conversation_items (conversation_id, seq);
        CREATE INDEX conversation_items_expires_idx ON conversation_items (expires_at);
        """,
    ),
)


@dataclass(frozen=True)
class StoredRecord:
    """A turn served by a chat upstream: everything needed to replay the history."""

    id: str
    created_at: int
    model: str
    input_items: list[Any]
    output_items: list[Any]
    plan_token: str | None

    @property
    def items(self) -> list[Any]:
        return [*self.input_items, *self.output_items]


@dataclass(frozen=True)
class Pointer:
    """A turn served by a responses upstream: the state lives there, so pin to it."""

    id: str
    base_url: str
    model_id: str
    mode: str
    auth_env: str | None
    plan_token: str | None

    def target(self) -> Target:
        return Target(self.base_url, self.mode, self.model_id, self.auth_env, {}, None)


Stored = StoredRecord | Pointer
_KINDS: dict[str, type[StoredRecord] | type[Pointer]] = {"record": StoredRecord, "pointer": Pointer}


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class ResponseStore:
    """Stored responses and managed conversations, with lazy expiry and a periodic purge."""

    def __init__(self, db: Database, ttl_seconds: int) -> None:
        self.db = db
        self.ttl_seconds = ttl_seconds
        self._last_purge = 0.0
        self._migrated = False
        self._migrate_lock = asyncio.Lock()

    async def migrate(self) -> list[int]:
        """Create the tables once; run on first use, since the database may start after us."""
        async with self._migrate_lock:
            if self._migrated:
                return []
            applied = await migrate(self.db, COMPONENT, MIGRATIONS)
            self._migrated = True
            return applied

    async def _ready(self) -> Database:
        if not self._migrated:
            await self.migrate()
        return self.db

    async def get(self, response_id: str) -> Stored | None:
        db = await self._ready()
        row = await db.fetchrow(
            "SELECT kind, payload FROM stored_responses WHERE id = $1 AND expires_at > $2",
            response_id,
            time.time(),
        )
        if row is None:
            return None
        kind = _KINDS.get(row["kind"])
        if kind is None:
            return None
        return kind(**orjson.loads(row["payload"]))

    async def put(self, entry: Stored) -> None:
        now = time.time()
        kind = "record" if isinstance(entry, StoredRecord) else "pointer"
        db = await self._ready()
        await db.execute(
            "INSERT INTO stored_responses (id, kind, payload, created_at, expires_at)"
            " VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, payload = excluded.payload,"
            " created_at = excluded.created_at, expires_at = excluded.expires_at",
            entry.id,
            kind,
            _dumps(asdict(entry)),
            now,
            now + self.ttl_seconds,
        )
        await self._maybe_purge(now)

    async def conversation(self, conversation_id: str) -> list[Any]:
        db = await self._ready()
        rows = await db.fetch(
            "SELECT item FROM conversation_items WHERE conversation_id = $1 AND expires_at > $2"
            " ORDER BY seq",
            conversation_id,
            time.time(),
        )
        return [orjson.loads(r["item"]) for r in rows]

    async def append(self, conversation_id: str, items: list[Any]) -> None:
        """Add items at the end; the whole conversation's lifetime restarts."""
        expires = time.time() + self.ttl_seconds
        db = await self._ready()
        async with db.transaction() as conn:
            await conn.execute(
                "UPDATE conversation_items SET expires_at = $2 WHERE conversation_id = $1",
                conversation_id,
                expires,
            )
            await conn.executemany(
                "INSERT INTO conversation_items (conversation_id, item, expires_at)"
                " VALUES ($1, $2, $3)",
                [(conversation_id, _dumps(item), expires) for item in items],
            )

    async def purge(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self._last_purge = now
        db = await self._ready()
        await db.execute("DELETE FROM stored_responses WHERE expires_at <= $1", now)
        await db.execute("DELETE FROM conversation_items WHERE expires_at <= $1", now)

    async def _maybe_purge(self, now: float) -> None:
        if now - self._last_purge >= PURGE_INTERVAL_S:
            try:
                await self.purge(now)
            except Exception:
                log.exception("response store purge failed")


def input_items(raw: Any) -> list[Any]:
    """The request's `input` as items: a string is one user message."""
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": raw}]
    if isinstance(raw, list):
        return list(raw)
    return []


def _conversation_id(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str) and value["id"]:
        return value["id"]
    raise invalid_request(
        "'conversation' must be a string or an object with an 'id'", "conversation"
    )


def _pointer_key(conversation_id: str) -> str:
    return "conversation:" + conversation_id


class ResponseTurn:
    """One `/v1/responses` call's state: what it continues and what it must save.

    Built before routing (`begin`), asked per attempt for the history of its upstream mode
    (`history`), and saved once the response is complete (`finish`).
    """

    def __init__(
        self,
        store: ResponseStore,
        body: dict[str, Any],
        *,
        previous_id: str | None,
        conversation_id: str | None,
        found: Stored | None,
        conversation_items: list[Any] | None,
    ) -> None:
        self.store = store
        self.previous_id = previous_id
        self.conversation_id = conversation_id
        self.found = found
        self.conversation_items = conversation_items
        self.new_items = input_items(body.get("input"))
        self.keep = body.get("store") is not False
        self._history_used: list[Any] | None = None

    @classmethod
    async def begin(cls, store: ResponseStore, body: dict[str, Any]) -> ResponseTurn:
        """Validate and look up; `body` is the client's, before any system prompt."""
        previous_id = body.get("previous_response_id")
        if previous_id is not None and not (isinstance(previous_id, str) and previous_id):
            raise invalid_request(
                "'previous_response_id' must be a non-empty string", "previous_response_id"
            )
        conversation_id = _conversation_id(body.get("conversation"))
        if previous_id is not None and conversation_id is not None:
            raise invalid_request(
                "'conversation' cannot be combined with 'previous_response_id'", "conversation"
            )
        found: Stored | None = None
        items: list[Any] | None = None
        if previous_id is not None:
            found = await store.get(previous_id)
        elif conversation_id is not None:
            found = await store.get(_pointer_key(conversation_id))
            if found is None:
                items = await store.conversation(conversation_id)
        return cls(
            store,
            body,
            previous_id=previous_id,
            conversation_id=conversation_id,
            found=found,
            conversation_items=items,
        )

    @property
    def pointer(self) -> Pointer | None:
        return self.found if isinstance(self.found, Pointer) else None

    def routing_headers(self, headers: RoutingHeaders) -> RoutingHeaders:
        """A pointer's plan token is resent so the router keeps the same route."""
        pointer = self.pointer
        if pointer is None or pointer.plan_token is None or headers.plan_token is not None:
            return headers
        return replace(headers, plan_token=pointer.plan_token)

    def pin(self, targets: list[Target]) -> list[Target]:
        """A pointer's upstream holds the state: it is the only place to send the turn."""
        pointer = self.pointer
        if pointer is None:
            return targets
        for target in targets:
            if (target.base_url, target.model_id) == (pointer.base_url, pointer.model_id):
                return [target]
        return [pointer.target()]

    def history(self, mode: str) -> list[Any] | None:
        """Earlier items to send before the new input, or None to forward the body as is.

        Chat upstreams need the history replayed; responses upstreams only when the state is
        ours (a full record). An unknown `previous_response_id` cannot work on chat.
        """
        history: list[Any] | None = None
        if isinstance(self.found, StoredRecord):
            history = self.found.items
        elif mode == "chat" and self.previous_id is not None and self.found is None:
            raise ApiError(
                404,
                "previous_response_not_found",
                f"Previous response {self.previous_id!r} not found (it may have expired)",
                param="previous_response_id",
            )
        elif mode == "chat" and self.conversation_id is not None:
            history = self.conversation_items or []
        self._history_used = history
        return history

    async def finish(
        self, target: Target, response: dict[str, Any] | None, plan_token: str | None
    ) -> None:
        """Save the completed turn; a failure is logged, never surfaced to the client."""
        if not isinstance(response, dict) or response.get("status") not in (
            "completed",
            "incomplete",
        ):
            return
        try:
            await self._save(target, response, plan_token or self._pinned_token)
        except Exception:
            log.exception("response store write failed", extra={"response_id": response.get("id")})

    @property
    def _pinned_token(self) -> str | None:
        return self.found.plan_token if self.found is not None else None

    async def _save(self, target: Target, response: dict[str, Any], plan_token: str | None) -> None:
        response_id = response.get("id")
        output = [item for item in response.get("output") or [] if isinstance(item, dict)]
        if target.mode == "chat":
            if self.keep and isinstance(response_id, str):
                record = StoredRecord(
                    id=response_id,
                    created_at=int(response.get("created_at") or time.time()),
                    model=str(response.get("model") or target.model_id),
                    input_items=[*(self._history_used or []), *self.new_items],
                    output_items=output,
                    plan_token=plan_token,
                )
                await self.store.put(record)
            if self.conversation_id is not None:
                await self.store.append(self.conversation_id, [*self.new_items, *output])
            return
        pointer_ids = [response_id] if self.keep and isinstance(response_id, str) else []
        if self.conversation_id is not None:
            pointer_ids.append(_pointer_key(self.conversation_id))
        for key in pointer_ids:
            await self.store.put(
                Pointer(
                    id=key,
                    base_url=target.base_url,
                    model_id=target.model_id,
                    mode=target.mode,
                    auth_env=target.auth_env,
                    plan_token=plan_token,
                )
            )
