"""The export documents of analytics.md §4, produced page by page so memory stays flat.

CSV follows RFC 4180 quoting, and text cells that a spreadsheet would evaluate as a formula are
neutralised with a leading `'` first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from services.analytics.store import EventStore, Window

CSV_COLUMNS = (
    "id",
    "timestamp",
    "endpoint",
    "method",
    "model",
    "stream",
    "status_code",
    "success",
    "duration_ms",
    "tokens_per_second",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_cost",
    "backend",
    "upstream_mode",
)
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_NEEDS_QUOTES = (",", '"', "\r", "\n")
CRLF = "\r\n"
FORMATS = ("json", "csv")


def quote_cell(text: str) -> str:
    if any(ch in text for ch in _NEEDS_QUOTES):
        return '"' + text.replace('"', '""') + '"'
    return text


def text_cell(value: Any) -> str:
    """A free-text cell: formula escape, then RFC 4180 quoting."""
    if value is None:
        return ""
    text = str(value)
    if text.startswith(FORMULA_TRIGGERS):
        text = "'" + text
    return quote_cell(text)


def number_cell(value: Any, fmt: str | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if fmt is not None:
        return fmt % value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def csv_row(event: dict[str, Any]) -> str:
    """One event as one CSV record (CRLF-terminated)."""
    request = event.get("request") or {}
    response = event.get("response") or {}
    perf = event.get("performance") or {}
    usage = event.get("token_usage") or {}
    cost = event.get("cost") or {}
    routing = event.get("routing") or {}
    cells = (
        text_cell(event.get("id")),
        number_cell(event.get("timestamp")),
        text_cell(request.get("endpoint")),
        text_cell(request.get("method")),
        text_cell(request.get("model")),
        number_cell(request.get("stream")),
        number_cell(response.get("status_code")),
        number_cell(response.get("success")),
        number_cell(perf.get("duration_ms")),
        number_cell(perf.get("tokens_per_second"), "%.2f"),
        number_cell(usage.get("prompt_tokens")),
        number_cell(usage.get("completion_tokens")),
        number_cell(usage.get("cached_tokens")),
        number_cell(usage.get("reasoning_tokens")),
        number_cell(cost.get("total_cost"), "%.6f"),
        text_cell(routing.get("backend")),
        text_cell(routing.get("upstream_mode")),
    )
    return ",".join(cells) + CRLF


def csv_header() -> str:
    return ",".join(CSV_COLUMNS) + CRLF


async def csv_document(pages: AsyncIterator[list[str]]) -> AsyncIterator[bytes]:
    yield csv_header().encode()
    async for page in pages:
        yield "".join(csv_row(orjson.loads(doc)) for doc in page).encode()


async def json_document(pages: AsyncIterator[list[str]], window: Window) -> AsyncIterator[bytes]:
    """`{"events":[…],"count":n,"period":{"start","end"}}`; documents are spliced in as stored."""
    yield b'{"events":['
    count = 0
    async for page in pages:
        yield (b"," if count else b"") + ",".join(page).encode()
        count += len(page)
    tail = {"start": window.start, "end": window.end}
    yield b'],"count":' + str(count).encode() + b',"period":' + orjson.dumps(tail) + b"}"


def export_document(store: EventStore, fmt: str, window: Window) -> AsyncIterator[bytes]:
    pages = store.pages(window)
    return csv_document(pages) if fmt == "csv" else json_document(pages, window)
