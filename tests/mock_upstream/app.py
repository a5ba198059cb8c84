"""The mock upstream as a Starlette app: OpenAI endpoints plus `/_mock/*` control routes.

Kept lean (orjson, no per-request validation beyond what a provider does) because it is
also the upstream for `make run`'s demo mode and for the benchmarks.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.mock_upstream import payloads
from tests.mock_upstream.behaviour import Behaviour, Script, from_request

REQUEST_LOG_SIZE = 10_000


class UpstreamCut(Exception):
    """Raised inside a streaming body to drop the connection mid-response."""


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status, headers, media_type="application/json")


def create_app() -> Starlette:
    script = Script()
    log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
    counter = itertools.count(1)

    async def inference(request: Request) -> Response:
        raw = await request.body()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _json(payloads.error_body(400), 400)
        if not isinstance(body, dict):
            return _json(payloads.error_body(400), 400)
        model = str(body.get("model", ""))
        behaviour = script.take(model) or from_request(model, request.headers)
        entry = {
            "seq": next(counter),
            "time": time.time(),
            "path": request.url.path,
            "model": model,
            "headers": dict(request.headers),
            "body": body,
            "outcome": "pending",
        }
        log.append(entry)
        if behaviour.latency_ms:
            await asyncio.sleep(behaviour.latency_ms / 1000)
        if behaviour.status >= 400:
            entry["outcome"] = "error"
            return _error(behaviour)
        chat = request.url.path.endswith("/chat/completions")
        prompt = payloads.prompt_tokens(body)
        calls = behaviour.tool_calls
        if body.get("stream") is True:
            if calls and chat:
                options = body.get("stream_options") or {}
                include = options.get("include_usage") is True
                events = payloads.chat_tool_stream(model, calls, prompt, include)
            elif calls:
                events = payloads.response_tool_stream(model, calls, prompt)
            elif chat:
                options = body.get("stream_options") or {}
                events = payloads.chat_stream(
                    model, behaviour.text, prompt, options.get("include_usage") is True
                )
            else:
                events = payloads.response_stream(model, behaviour.text, prompt)
            return StreamingResponse(
                _paced(events, behaviour, entry),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache"},
            )
        if calls:
            tool_reply = payloads.chat_tool_calls if chat else payloads.response_tool_calls
            content = tool_reply(model, calls, prompt)
        elif chat:
            content = payloads.chat_completion(model, behaviour.text, prompt)
        else:
            content = payloads.response(model, behaviour.text, prompt)
        encoded = orjson.dumps(content)
        if behaviour.first_byte_ms or behaviour.cut_after is not None:
            return StreamingResponse(
                _paced(iter([encoded]), behaviour, entry, split=True),
                media_type="application/json",
            )
        entry["outcome"] = "completed"
        return Response(encoded, media_type="application/json")

    async def set_script(request: Request) -> Response:
        payload = orjson.loads(await request.body())
        if payload.get("replace"):
            script.clear()
        try:
            queued = script.extend(payload.get("steps", []))
        except (TypeError, ValueError) as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"queued": queued, "pending": len(script)})

    async def requests(_request: Request) -> Response:
        return _json({"requests": list(log)})

    async def reset(_request: Request) -> Response:
        script.clear()
        log.clear()
        return _json({"reset": True})

    async def health(_request: Request) -> Response:
        return _json({"status": "ok"})

    async def models(_request: Request) -> Response:
        data = [{"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}]
        return _json({"object": "list", "data": data})

    routes = [
        Route(path, inference, methods=["POST"])
        for path in ("/v1/chat/completions", "/v1/responses", "/chat/completions", "/responses")
    ]
    routes += [
        Route("/v1/models", models, methods=["GET"]),
        Route("/_mock/script", set_script, methods=["POST"]),
        Route("/_mock/requests", requests, methods=["GET"]),
        Route("/_mock/reset", reset, methods=["POST"]),
        Route("/_mock/health", health, methods=["GET"]),
    ]
    return Starlette(routes=routes)


def _error(behaviour: Behaviour) -> Response:
    headers = {}
    if behaviour.retry_after is not None:
        headers["retry-after"] = str(behaviour.retry_after)
    if behaviour.non_json:
        return Response(b"<html>upstream exploded</html>", behaviour.status, headers, "text/html")
    return _json(payloads.error_body(behaviour.status), behaviour.status, headers)


async def _paced(
    events: Iterator[bytes], behaviour: Behaviour, entry: dict[str, Any], *, split: bool = False
) -> AsyncIterator[bytes]:
    """Yield events with the behaviour's delays; `entry["outcome"]` says how it ended.

    `split` cuts a single JSON body in half instead of after `cut_after` events.
    """
    try:
        if behaviour.first_byte_ms:
            await asyncio.sleep(behaviour.first_byte_ms / 1000)
        for index, event in enumerate(events):
            if split and behaviour.cut_after is not None:
                yield event[: len(event) // 2]
                raise UpstreamCut("cut mid-body")
            if behaviour.cut_after is not None and index >= behaviour.cut_after:
                raise UpstreamCut(f"cut after {behaviour.cut_after} events")
            if index and behaviour.chunk_delay_ms:
                await asyncio.sleep(behaviour.chunk_delay_ms / 1000)
            yield event
    except UpstreamCut:
        entry["outcome"] = "cut"
        raise
    except (asyncio.CancelledError, GeneratorExit):
        entry["outcome"] = "cancelled"  # the client (the edge) went away
        raise
    entry["outcome"] = "completed"
