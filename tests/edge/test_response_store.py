"""`previous_response_id` and `conversation` (conversion §6) on SQLite and Postgres."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.common.db import connect
from services.edge.response_store import Pointer, ResponseStore, StoredRecord
from tests.edge.conftest import BEARER, Edge, EdgeFactory
from tests.edge.test_passthrough import sse_data
from tests.mock_upstream.fixture import MockUpstream, mode_backends

MOCK_TEXT = "Hello from the mock upstream."


@pytest.fixture(params=["sqlite", "postgres"])
def stateful_edge(
    request: pytest.FixtureRequest, make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> Callable[..., AbstractAsyncContextManager[Edge]]:
    """An edge with chat-/resp- prefix rules, its store on SQLite or on a fresh Postgres DB."""
    database_url = request.getfixturevalue("pg_url") if request.param == "postgres" else None

    def factory(**overrides: Any) -> AbstractAsyncContextManager[Edge]:
        return make_edge(
            database_url=database_url, backends=mode_backends(mock_upstream), **overrides
        )

    return factory


async def _respond(edge: Edge, **body: Any) -> Any:
    return await edge.client.post("/v1/responses", json=body, headers=BEARER)


async def test_chat_upstream_chain_replays_history(
    stateful_edge: Callable[..., AbstractAsyncContextManager[Edge]], mock_upstream: MockUpstream
) -> None:
    async with stateful_edge() as edge:
        first = await _respond(edge, model="chat-a", input="first", instructions="be brief")
        assert first.status_code == 200, first.text
        second = await _respond(
            edge, model="chat-a", input="second", previous_response_id=first.json()["id"]
        )
        assert second.status_code == 200, second.text
        third = await _respond(
            edge,
            model="chat-a",
            input=[{"role": "user", "content": "third"}],
            previous_response_id=second.json()["id"],
        )
        assert third.status_code == 200, third.text
    assert second.json()["previous_response_id"] == first.json()["id"]
    messages = [r["body"]["messages"] for r in await mock_upstream.requests()]
    assert messages[1] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": MOCK_TEXT},
        {"role": "user", "content": "second"},
    ]  # instructions of earlier turns are not carried over
    assert [m["content"] for m in messages[2]] == [
        "first",
        MOCK_TEXT,
        "second",
        MOCK_TEXT,
        "third",
    ]


async def test_streamed_turn_is_stored_before_its_terminal_event(
    stateful_edge: Callable[..., AbstractAsyncContextManager[Edge]], mock_upstream: MockUpstream
) -> None:
    async with stateful_edge() as edge:
        streamed = await _respond(edge, model="chat-a", input="first", stream=True)
        events = [orjson.loads(d) for d in sse_data(streamed.text)]
        assert events[-1]["type"] == "response.completed"
        response_id = events[-1]["response"]["id"]
        chained = await _respond(
            edge, model="chat-a", input="next", previous_response_id=response_id
        )
    assert chained.status_code == 200, chained.text
    last = (await mock_upstream.requests())[-1]["body"]["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "user"]
    assert last[1]["content"] == MOCK_TEXT


async def test_responses_upstream_gets_a_pointer_and_the_id_forwarded(
    stateful_edge: Callable[..., AbstractAsyncContextManager[Edge]], mock_upstream: MockUpstream
) -> None:
    async with stateful_edge() as edge:
        first = await _respond(edge, model="resp-a", input="first")
        stored = await edge.runtime.response_store.get(first.json()["id"])
        second = await _respond(
            edge, model="resp-a", input="second", previous_response_id=first.json()["id"]
        )
        unknown = await _respond(
            edge, model="resp-a", input="x", previous_response_id="resp_not_ours"
        )
    assert isinstance(stored, Pointer)
    assert (stored.mode, stored.model_id) == ("responses", "resp-a")
    assert stored.base_url == mock_upstream.base_url
    assert second.status_code == 200 and unknown.status_code == 200
    seen = [r["body"] for r in await mock_upstream.requests()]
    assert seen[1]["previous_response_id"] == first.json()["id"]
    assert seen[1]["input"] == "second"
    assert seen[2]["previous_response_id"] == "resp_not_ours"


async def test_full_record_on_a_responses_upstream_sends_the_expanded_input(
    stateful_edge: Callable[..., AbstractAsyncContextManager[Edge]], mock_upstream: MockUpstream
) -> None:
    async with stateful_edge() as edge:
        first = await _respond(edge, model="chat-a", input="first")
        second = await _respond(
            edge, model="resp-a", input="second", previous_response_id=first.json()["id"]
        )
    assert second.status_code == 200, second.text
    sent = (await mock_upstream.requests())[1]["body"]
    assert "previous_response_id" not in sent
    assert [(i.get("role"), i["type"]) for i in sent["input"]] == [
        ("user", "message"),
        ("assistant", "message"),
        ("user", "message"),
    ]
    assert sent["input"][1]["content"][0]["text"] == MOCK_TEXT


async def test_unknown_or_unstored_previous_response_on_chat_upstream_is_404(
    stateful_edge: Callable[..., AbstractAsyncContextManager[Edge]], mock_upstream: MockUpstream
) -> None:
    async with stateful_edge() as edge:
        unknown = await _respond(edge, model="chat-a", input="x", previous_response_id="resp_nope")
        not_stored = await _respond(edge, model="chat-a", input="x", store=False)
        chained = await _respond(
            edge, model="chat-a", input="y", previous_response_id=not_stored.json()["id"]
        )
    for response in (unknown, chained):
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == "previous_response_not_found"
        assert error["param"] == "previous_response_id"
        assert error["type"] == "not_found_error"
    assert len(await mock_upstream.requests()) == 1


async def test_conversation_on_chat_upstream_is_a_managed_item_list(
    stateful_edge: Callable[..., AbstractAsyncContextManager[Edge]], mock_upstream: MockUpstream
) -> None:
    async with stateful_edge() as edge:
        one = await _respond(edge, model="chat-a", input="one", conversation="conv_1")
        two = await _respond(edge, model="chat-a", input="two", conversation={"id": "conv_1"})
        other = await _respond(edge, model="chat-a", input="solo", conversation="conv_2")
    assert {one.status_code, two.status_code, other.status_code} == {200}
    seen = [r["body"]["messages"] for r in await mock_upstream.requests()]
    assert [m["content"] for m in seen[0]] == ["one"]  # unknown id starts empty
    assert [m["content"] for m in seen[1]] == ["one", MOCK_TEXT, "two"]
    assert [m["content"] for m in seen[2]] == ["solo"]


async def test_conversation_on_responses_upstream_is_forwarded_and_pinned(
    stateful_edge: Callable[..., AbstractAsyncContextManager[Edge]], mock_upstream: MockUpstream
) -> None:
    async with stateful_edge() as edge:
        first = await _respond(edge, model="resp-a", input="one", conversation="conv_r")
        pinned = await edge.runtime.response_store.get("conversation:conv_r")
    assert first.status_code == 200
    assert isinstance(pinned, Pointer) and pinned.model_id == "resp-a"
    [seen] = await mock_upstream.requests()
    assert seen["body"]["conversation"] == "conv_r"


async def test_invalid_state_fields(
    stateful_edge: Callable[..., AbstractAsyncContextManager[Edge]],
) -> None:
    async with stateful_edge() as edge:
        both = await _respond(
            edge, model="chat-a", input="x", previous_response_id="resp_1", conversation="c"
        )
        on_chat = await edge.client.post(
            "/v1/chat/completions",
            json={
                "model": "chat-a",
                "messages": [{"role": "user", "content": "x"}],
                "previous_response_id": "resp_1",
            },
            headers=BEARER,
        )
    assert both.status_code == 400
    assert both.json()["error"]["param"] == "conversation"
    assert on_chat.status_code == 400
    assert on_chat.json()["error"]["code"] == "unsupported_parameter"
    assert on_chat.json()["error"]["param"] == "previous_response_id"


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[ResponseStore]:
    db = await connect(None, tmp_path / "store.db")
    try:
        yield ResponseStore(db, ttl_seconds=60)
    finally:
        await db.close()


async def test_ttl_expiry_and_purge(sqlite_store: ResponseStore) -> None:
    record = StoredRecord("resp_1", 1, "m", [{"role": "user", "content": "a"}], [], None)
    await sqlite_store.put(record)
    await sqlite_store.append("conv", [{"role": "user", "content": "a"}])
    assert await sqlite_store.get("resp_1") == record
    assert len(await sqlite_store.conversation("conv")) == 1
    await sqlite_store.purge(now=time.time() + 61)
    assert await sqlite_store.get("resp_1") is None
    assert await sqlite_store.conversation("conv") == []
    count = await sqlite_store.db.fetchval("SELECT count(*) FROM stored_responses")
    assert count == 0
