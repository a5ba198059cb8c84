"""Server-sent events: an incremental parser (bytes in, events out) and the wire encoders.

The parser follows the WHATWG event-stream rules: LF, CRLF or CR line ends (even when a
CRLF pair is split across reads), `:` comments, multi-line `data`, a UTF-8 BOM, and a
pending event that is only dispatched on its blank line.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Any, Final

import orjson

DONE: Final = "[DONE]"
"""The chat stream terminator, as data (`data: [DONE]`) and as the converters' marker."""

DEFAULT_MAX_EVENT_BYTES: Final = 16 * 1024 * 1024
_LINE_END = re.compile(r"\r\n|\r|\n")


class SSEProtocolError(Exception):
    """The upstream stream is not valid SSE/JSON, or an event exceeds the size limit."""


@dataclass(frozen=True, slots=True)
class SSEEvent:
    data: str
    event: str | None = None
    id: str | None = None


class SSEParser:
    """Feed raw bytes as they arrive; get back the events completed so far."""

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._max = max_event_bytes
        self._line = ""
        self._after_cr = False  # the last read ended in CR: a leading LF ends nothing
        self._started = False
        self._data: list[str] = []
        self._data_len = 0
        self._event: str | None = None
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._after_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF pair split across reads
        self._after_cr = text.endswith("\r")
        lines = _LINE_END.split(self._line + text)
        self._line = lines.pop()  # the unterminated tail waits for more bytes
        events = []
        for line in lines:
            event = self._process_line(line)
            if event is not None:
                events.append(event)
        if len(self._line) + self._data_len > self._max:
            raise SSEProtocolError(f"SSE event larger than {self._max} bytes")
        return events

    def _process_line(self, line: str) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # comment, e.g. `: keep-alive`
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
            self._data_len += len(value) + 1
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self._id = value
        return None  # `retry` and unknown fields are ignored, as the standard says

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = None
            return None
        event = SSEEvent(data="\n".join(self._data), event=self._event or None, id=self._id)
        self._data, self._data_len, self._event = [], 0, None
        return event


def decode_data(event: SSEEvent) -> dict[str, Any] | str:
    """The event's JSON payload, or `DONE` for the chat terminator."""
    if event.data == DONE:
        return DONE
    try:
        payload = orjson.loads(event.data)
    except orjson.JSONDecodeError as exc:
        raise SSEProtocolError(f"SSE data is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise SSEProtocolError("SSE data is not a JSON object")
    return payload


def encode_chat_chunk(chunk: dict[str, Any]) -> bytes:
    """`data: <json>` for a chat chunk (or a chat error frame)."""
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def encode_done() -> bytes:
    return b"data: [DONE]\n\n"


def encode_response_event(event: dict[str, Any]) -> bytes:
    """`event: <type>` + `data: <json>` for a Responses stream event."""
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def encode_comment(text: str) -> bytes:
    """A comment line, e.g. the `: keep-alive` sent after 15 s of silence."""
    return b": " + text.replace("\r", " ").replace("\n", " ").encode() + b"\n\n"
