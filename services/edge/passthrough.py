"""Same-API stream relays (conversion §0): forward upstream events, meter usage, end cleanly.

Chat: the upstream is always asked for `include_usage`; the usage chunk is removed again when
the client did not ask for it. Responses: events pass through unchanged. Both synthesise the
§5.3 ending when the upstream breaks after the first byte.
"""

from __future__ import annotations

from typing import Any

from services.edge.translate.sse import (
    DONE,
    SSEEvent,
    decode_data,
    encode_chat_chunk,
    encode_done,
    encode_response_event,
)

STREAM_ERROR_CODE = "upstream_stream_error"
EOF_MESSAGE = "the upstream stream ended before the response was complete"


def _data_frame(data: str, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "data: " + data.replace("\n", "\ndata: ") + "\n\n").encode()


def chat_error_frame(message: str, code: Any = None) -> bytes:
    """§5.3 chat ending: an error frame, then `[DONE]`."""
    error = {
        "message": message,
        "type": "server_error",
        "param": None,
        "code": code if isinstance(code, str) and code else STREAM_ERROR_CODE,
    }
    return encode_chat_chunk({"error": error}) + encode_done()


class ChatPassthroughStream:
    """chat -> chat. `usage` is the upstream's final usage object, whatever the client sees."""

    def __init__(self, client_wants_usage: bool) -> None:
        self._wants_usage = client_wants_usage
        self.usage: dict[str, Any] | None = None
        self.finished = False
        self.error: str | None = None
        self._finish_reason_seen = False

    @property
    def response(self) -> dict[str, Any] | None:
        return None  # a chat client has no Responses object

    def feed(self, event: SSEEvent) -> bytes:
        if self.finished:
            return b""
        payload = decode_data(event)
        if payload == DONE:
            self.finished = True
            return encode_done()
        assert isinstance(payload, dict)
        if "error" in payload:
            error = payload["error"] if isinstance(payload["error"], dict) else {}
            return self.fail(str(error.get("message") or "upstream error"), error.get("code"))
        usage = payload.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = payload.get("choices")
        if isinstance(choices, list) and any(
            isinstance(c, dict) and c.get("finish_reason") for c in choices
        ):
            self._finish_reason_seen = True
        if self._wants_usage or "usage" not in payload:
            return _data_frame(event.data)
        if isinstance(usage, dict) and not payload.get("choices"):
            return b""  # the usage chunk the client did not ask for
        del payload["usage"]
        return encode_chat_chunk(payload)

    def fail(self, message: str, code: Any = None) -> bytes:
        if self.finished:
            return b""
        self.finished = True
        self.error = message
        return chat_error_frame(message, code)

    def finish(self) -> bytes:
        """EOF: a stream that reached its finish_reason only lacks `[DONE]`; else it broke."""
        if self.finished:
            return b""
        if self._finish_reason_seen:
            self.finished = True
            return encode_done()
        return self.fail(EOF_MESSAGE)


class ResponsesPassthroughStream:
    """responses -> responses. Keeps the response object and finished items for §5.3."""

    _TERMINAL_OK = ("response.completed", "response.incomplete")

    def __init__(self) -> None:
        self.usage: dict[str, Any] | None = None
        self.finished = False
        self.error: str | None = None
        self._response: dict[str, Any] = {}
        self._items: list[Any] = []
        self._next_seq = 0

    @property
    def response(self) -> dict[str, Any] | None:
        """The upstream's response object as last seen (the terminal one once finished)."""
        return self._response or None

    def feed(self, event: SSEEvent) -> bytes:
        if self.finished:
            return b""
        payload = decode_data(event)
        if not isinstance(payload, dict):
            return b""  # a stray chat terminator means nothing to a Responses client
        kind = str(payload.get("type") or event.event or "")
        seq = payload.get("sequence_number")
        if isinstance(seq, int):
            self._next_seq = seq + 1
        response = payload.get("response")
        if isinstance(response, dict):
            self._response = response
            if isinstance(response.get("usage"), dict):
                self.usage = response["usage"]
        if kind == "response.output_item.done":
            self._items.append(payload.get("item"))
        if kind in self._TERMINAL_OK:
            self.finished = True
        elif kind in ("response.failed", "error"):
            self.finished = True
            error = payload.get("error") or (response or {}).get("error") or {}
            self.error = str(error.get("message") if isinstance(error, dict) else error)
        return _data_frame(event.data, event.event or kind or None)

    def fail(self, message: str, code: Any = None) -> bytes:
        """`response.failed` with the items completed so far."""
        if self.finished:
            return b""
        self.finished = True
        self.error = message
        response = {
            **self._response,
            "status": "failed",
            "error": {"code": code or "server_error", "message": message},
            "output": [item for item in self._items if item is not None],
        }
        event = {"type": "response.failed", "sequence_number": self._next_seq, "response": response}
        return encode_response_event(event)

    def finish(self) -> bytes:
        """EOF without a terminal event: the stream broke."""
        return self.fail(EOF_MESSAGE)
