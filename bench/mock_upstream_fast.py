"""A minimal, fast OpenAI Chat Completions upstream for the gateway benchmarks.

A bare ASGI callable on uvicorn (uvloop + httptools): no router, no request log, no
validation, response bytes cached per model, so its own cost per request is small next to
any gateway's and what the bench reports is the gateway, not the mock. The test suite's mock
(`tests/mock_upstream`) is richer (fault scripts, a request log) and measurably slower; the
bench reports both so the difference is on record.

Latency is fixed, picked by the model id: `<anything>-lat<N>` waits N ms before answering
(`bench-lat0`, `bench-lat50`), any other model waits `--latency-ms`. `"stream": true` answers
SSE: a role chunk, `--chunks` content chunks `--chunk-gap-ms` apart, a finish chunk, a usage
chunk when `stream_options.include_usage` is set, then `data: [DONE]`.

Run: `python -m bench.mock_upstream_fast --port 8199 [--latency-ms 0] [--chunks 16]`.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
import uvicorn

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_LATENCY_SUFFIX = re.compile(r"-lat(\d+)$")
_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_CREATED = 1_700_000_000
PROMPT_TOKENS = 12


@dataclass(frozen=True)
class MockConfig:
    """What every answer looks like; fixed for the life of the process."""

    latency_ms: float = 0.0
    chunks: int = 16
    chunk_gap_ms: float = 0.0


def latency_ms(model: str, default: float) -> float:
    """`bench-lat50` → 50; a model without the suffix gets the process default."""
    match = _LATENCY_SUFFIX.search(model)
    return float(match.group(1)) if match else default


def _usage(completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion,
        "total_tokens": PROMPT_TOKENS + completion,
    }


@lru_cache(maxsize=256)
def completion_body(model: str, chunks: int) -> bytes:
    text = "".join(f"tok{i} " for i in range(chunks)).rstrip()
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": _CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(chunks),
        }
    )


@lru_cache(maxsize=256)
def stream_events(model: str, chunks: int, include_usage: bool) -> tuple[bytes, ...]:
    """Every SSE event of one streamed answer, encoded once per (model, shape)."""
    base = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": model,
    }

    def event(choices: list[Any], **extra: Any) -> bytes:
        return b"data: " + orjson.dumps({**base, "choices": choices, **extra}) + b"\n\n"

    def choice(delta: dict[str, Any], finish: str | None = None) -> list[Any]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    events = [event(choice({"role": "assistant", "content": ""}))]
    events += [event(choice({"content": f"tok{i} "})) for i in range(chunks)]
    events.append(event(choice({}, "stop")))
    if include_usage:
        events.append(event([], usage=_usage(chunks)))
    events.append(b"data: [DONE]\n\n")
    return tuple(events)


async def _read_body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [*_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _error(message: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "invalid_request_error"}})


def create_app(config: MockConfig) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    gap_s = config.chunk_gap_ms / 1000

    async def chat(receive: Receive, send: Send) -> None:
        try:
            body = orjson.loads(await _read_body(receive))
        except orjson.JSONDecodeError:
            await _respond(send, 400, _error("body is not JSON"))
            return
        if not isinstance(body, dict):
            await _respond(send, 400, _error("body is not a JSON object"))
            return
        model = str(body.get("model", ""))
        delay_ms = latency_ms(model, config.latency_ms)
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        if body.get("stream") is not True:
            await _respond(send, 200, completion_body(model, config.chunks))
            return
        options = body.get("stream_options") or {}
        events = stream_events(model, config.chunks, options.get("include_usage") is True)
        await send({"type": "http.response.start", "status": 200, "headers": _SSE})
        for index, event in enumerate(events):
            if gap_s and 1 < index <= config.chunks:
                await asyncio.sleep(gap_s)
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if method == "POST" and path.endswith("/chat/completions"):
            await chat(receive, send)
        elif method == "GET" and path == "/health":
            await _respond(send, 200, b'{"status":"ok"}')
        elif method == "GET" and path.endswith("/models"):
            models = [{"id": "bench-lat0", "object": "model", "created": 0, "owned_by": "bench"}]
            await _respond(send, 200, orjson.dumps({"object": "list", "data": models}))
        else:
            await _respond(send, 404, _error(f"no route {method} {path}"))

    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fast mock OpenAI upstream for benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8199)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--chunk-gap-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    config = MockConfig(args.latency_ms, args.chunks, args.chunk_gap_ms)
    uvicorn.run(
        create_app(config),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":
    main()
