"""Server-side execution of MCP tool calls (config-files §6, `"execute": true`).

Wraps the proxy's `open_first`: each round's reply is read whole; when every function call
in it targets an executable MCP tool, the edge runs the calls, appends the call and its
output to the client-shaped body (which the proxy's `build` re-translates for the next
attempt) and asks the same upstream again, up to `max_rounds` times. The last reply is handed
back as an ordinary `OpenAttempt`, so the proxy relays, translates and accounts it as usual;
its usage is rewritten to the sum over all rounds. With streaming, each round is buffered
until it ends (only then is it known to be final) and the final round is replayed as SSE.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, Literal

import httpx
import orjson

from services.edge.mcp.connection import error_output
from services.edge.mcp.replies import (
    FunctionCall,
    Reply,
    add_usage,
    json_reply,
    stream_reply,
    sum_usage,
)
from services.edge.mcp.tools import ToolCatalog
from services.edge.translate import DONE, SSEEvent, SSEParser, SSEProtocolError, decode_data
from services.edge.upstream import OpenAttempt

log = logging.getLogger(__name__)

Api = Literal["chat", "responses"]
Opener = Callable[..., Awaitable[OpenAttempt]]
ToolRunner = Callable[[str, dict[str, Any]], Awaitable[str]]


@dataclass(frozen=True)
class RequestTools:
    """What the merge gave this request: the snapshot used and its executable tool names."""

    catalog: ToolCatalog
    executable: frozenset[str]


# Set by the merge (step 5) and read when the attempts open: same request, same task.
current_request: ContextVar[RequestTools | None] = ContextVar("mcp_request_tools", default=None)


@dataclass
class Round:
    """One upstream reply read in full: raw chunks (SSE) or the JSON body."""

    opened: OpenAttempt
    chunks: list[bytes]
    events: list[SSEEvent]
    payloads: list[dict[str, Any]]
    failure: BaseException | None = None

    @property
    def mode(self) -> str:
        return self.opened.target.mode


async def read_round(opened: OpenAttempt, stream: bool) -> Round:
    if not stream:
        return Round(opened, [opened.first], [], [])
    chunks, parser = [opened.first], SSEParser()
    failure: BaseException | None = None
    while True:
        try:
            chunk = await opened.next_chunk()
        except (httpx.TransportError, TimeoutError) as exc:
            failure = exc
            break
        if chunk is None:
            break
        chunks.append(chunk)
    events: list[SSEEvent] = []
    payloads: list[dict[str, Any]] = []
    try:
        for chunk in chunks:
            events.extend(parser.feed(chunk))
        for event in events:
            payload = decode_data(event)
            if payload != DONE:
                assert isinstance(payload, dict)
                payloads.append(payload)
    except SSEProtocolError:
        payloads = []  # the relay reports the broken stream when it replays it
    return Round(opened, chunks, events, payloads, failure)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    """The body as a JSON object; None lets the proxy report an invalid upstream answer."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def parse_round(round_: Round, stream: bool) -> Reply:
    if stream:
        return stream_reply(round_.mode, round_.payloads)
    body = _json_object(round_.opened.first)
    return Reply() if body is None else json_reply(round_.mode, body)


def wants_execution(reply: Reply, executable: frozenset[str]) -> bool:
    """Every function call targets an executable MCP tool, and there is at least one."""
    if not reply.calls or reply.other_calls:
        return False
    return all(call.name in executable for call in reply.calls)


def append_history(api: Api, body: dict[str, Any], reply: Reply, outputs: list[str]) -> None:
    """Add the calls and their outputs to the client-shaped body (a new list each time)."""
    pairs = list(zip(reply.calls, outputs, strict=True))
    if api == "chat":
        assistant = {
            "role": "assistant",
            "content": reply.text,
            "tool_calls": [
                {"id": c.call_id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for c, _ in pairs
            ],
        }  # fmt: skip
        results = [{"role": "tool", "tool_call_id": c.call_id, "content": out} for c, out in pairs]
        body["messages"] = [*body["messages"], assistant, *results]
        return
    current = body.get("input")
    items: list[Any] = (
        [{"type": "message", "role": "user", "content": current}]
        if isinstance(current, str)
        else list(current or [])
    )
    for call, output in pairs:
        items.append(
            {"type": "function_call", "call_id": call.call_id, "name": call.name,
             "arguments": call.arguments}
        )  # fmt: skip
        items.append({"type": "function_call_output", "call_id": call.call_id, "output": output})
    body["input"] = items


async def run_calls(calls: list[FunctionCall], run: ToolRunner) -> list[str]:
    async def one(call: FunctionCall) -> str:
        try:
            arguments = orjson.loads(call.arguments or "{}")
        except orjson.JSONDecodeError as exc:
            return error_output(f"arguments are not valid JSON: {exc}")
        if not isinstance(arguments, dict):
            return error_output("arguments must be a JSON object")
        return await run(call.name, arguments)

    return list(await asyncio.gather(*(one(call) for call in calls)))


def _encode(event: SSEEvent, data: str) -> bytes:
    head = f"event: {event.event}\n" if event.event else ""
    return f"{head}data: {data}\n\n".encode()


def _with_total_usage(mode: str, payload: dict[str, Any], extra: Any) -> dict[str, Any] | None:
    """The payload with summed usage, or None when it carries no usage."""
    if isinstance(payload.get("usage"), dict):  # chat body or chunk, Responses body
        return {**payload, "usage": add_usage(payload["usage"], extra)}
    response = payload.get("response")
    if mode != "chat" and isinstance(response, Mapping) and isinstance(response.get("usage"), dict):
        return {**payload, "response": {**response, "usage": add_usage(response["usage"], extra)}}
    return None


async def _replay(chunks: list[bytes], failure: BaseException | None) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
    if failure is not None:
        raise failure


def final_attempt(round_: Round, stream: bool, earlier: list[dict[str, Any] | None]) -> OpenAttempt:
    """The last reply as an `OpenAttempt` the proxy relays; usage summed over all rounds."""
    extra = sum_usage(earlier)
    opened = round_.opened
    if not stream:
        body = _json_object(opened.first) if extra is not None else None
        updated = _with_total_usage(round_.mode, body, extra) if body is not None else None
        return opened if updated is None else replace(opened, first=orjson.dumps(updated))
    chunks = round_.chunks
    if extra is not None and round_.payloads and len(round_.events) > 0:
        chunks = []
        for event in round_.events:
            payload = decode_data(event)
            updated = None
            if isinstance(payload, dict):
                updated = _with_total_usage(round_.mode, payload, extra)
            data = event.data if updated is None else orjson.dumps(updated).decode()
            chunks.append(_encode(event, data))
    replay = _replay(chunks[1:], round_.failure)
    return replace(opened, first=chunks[0], chunks=replay)


async def run_rounds(
    opener: Opener,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    *,
    api: Api,
    body: dict[str, Any],
    tools: RequestTools,
    max_rounds: int,
    run: ToolRunner,
) -> OpenAttempt:
    """`opener(*args, **kwargs)` repeated while the model only calls executable MCP tools."""
    stream = bool(kwargs.get("stream"))
    earlier: list[dict[str, Any] | None] = []
    for executed in range(max_rounds + 1):
        opened = await opener(*args, **kwargs)
        try:
            round_ = await read_round(opened, stream)
            reply = parse_round(round_, stream)
            last = executed == max_rounds or round_.failure is not None
            if last or not wants_execution(reply, tools.executable):
                return final_attempt(round_, stream, earlier)
        except BaseException:
            await opened.aclose()
            raise
        await opened.aclose()
        log.info(
            "mcp tools executed for the model",
            extra={"round": executed + 1, "tools": [call.name for call in reply.calls]},
        )
        outputs = await run_calls(reply.calls, run)
        append_history(api, body, reply, outputs)
        earlier.append(reply.usage)
    raise AssertionError("unreachable")
