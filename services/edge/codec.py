"""Which translation an attempt needs, chosen by (client endpoint, upstream mode).

Every attempt of a request may land on a different `mode` (fallbacks), so the proxy asks
`codec_for` per attempt: passthrough when the APIs match, the `translate` package otherwise.
All stream relays share one small interface: SSE events in, client bytes out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from services.edge.errors import ApiError
from services.edge.passthrough import ChatPassthroughStream, ResponsesPassthroughStream
from services.edge.response_store import input_items
from services.edge.translate import (
    DONE,
    ChatToResponsesStream,
    ResponsesToChatStream,
    SSEEvent,
    TranslationError,
    chat_completion_to_response,
    chat_to_responses_request,
    decode_data,
    encode_chat_chunk,
    encode_done,
    encode_response_event,
    flatten_response_tools,
    prepare_chat_passthrough,
    responses_to_chat_completion,
    responses_to_chat_request,
)

Api = Literal["chat", "responses"]
History = list[Any] | None
PATHS: dict[str, str] = {"chat": "/chat/completions", "responses": "/responses"}


class StreamRelay(Protocol):
    """Turns upstream SSE events into client bytes; `usage` is the upstream's final usage."""

    finished: bool
    error: str | None
    usage: dict[str, Any] | None

    @property
    def response(self) -> dict[str, Any] | None:
        """The Responses object as last sent (None for chat clients)."""
        ...

    def feed(self, event: SSEEvent) -> bytes: ...
    def fail(self, message: str) -> bytes: ...
    def finish(self) -> bytes: ...


class _TranslatedStream:
    """Adapts a `translate.streams` converter (dicts in, dicts out) to `StreamRelay`."""

    def __init__(
        self,
        converter: ChatToResponsesStream | ResponsesToChatStream,
        encode: Callable[[Any], bytes],
    ) -> None:
        self._converter = converter
        self._encode = encode
        self.error: str | None = None

    @property
    def finished(self) -> bool:
        return self._converter.done

    @property
    def usage(self) -> dict[str, Any] | None:
        return self._converter.usage

    @property
    def response(self) -> dict[str, Any] | None:
        converter = self._converter
        return converter.response if isinstance(converter, ChatToResponsesStream) else None

    def _emit(self, outputs: list[Any]) -> bytes:
        for out in outputs:
            if isinstance(out, dict) and (out.get("error") or out.get("type") == "response.failed"):
                error = out.get("error") or (out.get("response") or {}).get("error") or {}
                self.error = str(error.get("message", "upstream stream error"))
        return b"".join(self._encode(out) for out in outputs)

    def feed(self, event: SSEEvent) -> bytes:
        payload = decode_data(event)
        if payload == DONE and isinstance(self._converter, ResponsesToChatStream):
            return b""
        return self._emit(self._converter.feed(payload))  # type: ignore[arg-type]

    def fail(self, message: str) -> bytes:
        return self._emit(self._converter.fail(message))

    def finish(self) -> bytes:
        return self._emit(self._converter.finish())


def _encode_chat(out: Any) -> bytes:
    return encode_done() if out == DONE else encode_chat_chunk(out)


@dataclass(frozen=True)
class Codec:
    """How one attempt talks to its upstream and how its answer reaches the client.

    `prepare(body, history)` gives the upstream body (without `model`) and whether the client
    asked for stream usage; `history` (Responses clients only) is the earlier turns' items
    from the response store, None when the body goes as it is; `response` converts a JSON
    answer (None: relay the bytes unchanged);
    `stream(body, wants_usage, model_id)` builds the relay for an SSE answer.
    """

    upstream_path: str
    prepare: Callable[[dict[str, Any], History], tuple[dict[str, Any], bool]]
    response: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None
    stream: Callable[[dict[str, Any], bool, str], StreamRelay]


def with_history(body: dict[str, Any], history: History) -> dict[str, Any]:
    """conversion §6: a stored record is replayed as expanded `input`, not referenced."""
    if history is None:
        return body
    out = {k: v for k, v in body.items() if k != "previous_response_id"}
    out["input"] = [*history, *input_items(body.get("input"))]
    return out


def _wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


_CODECS: dict[tuple[str, str], Codec] = {
    ("chat", "chat"): Codec(
        PATHS["chat"],
        lambda body, _history: prepare_chat_passthrough(body),
        None,
        lambda _body, wants, _model: ChatPassthroughStream(wants),
    ),
    ("responses", "responses"): Codec(
        PATHS["responses"],
        lambda body, history: (flatten_response_tools(with_history(body, history)), True),
        None,
        lambda _body, _wants, _model: ResponsesPassthroughStream(),
    ),
    ("chat", "responses"): Codec(
        PATHS["responses"],
        lambda body, _history: (chat_to_responses_request(body), _wants_usage(body)),
        lambda upstream, _body: responses_to_chat_completion(upstream),
        lambda _body, wants, model: _TranslatedStream(
            ResponsesToChatStream(model, wants), _encode_chat
        ),
    ),
    ("responses", "chat"): Codec(
        PATHS["chat"],
        lambda body, history: (responses_to_chat_request(body, history=history), True),
        lambda upstream, body: chat_completion_to_response(upstream, body),
        lambda body, _wants, _model: _TranslatedStream(
            ChatToResponsesStream(body), encode_response_event
        ),
    ),
}


def codec_for(api: Api, mode: str) -> Codec:
    codec = _CODECS.get((api, mode))
    if codec is None:
        raise ApiError(502, "unsupported_upstream_mode", f"Upstream mode {mode!r} is not supported")
    return codec


def translation_error(exc: TranslationError) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message, param=exc.param)
