"""JSON-lines logging for every service, with secrets scrubbed before anything is written."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import orjson

# (pattern, replacement, a substring of the lowered text without which it cannot match).
_SECRET_PATTERNS = (
    # Signalbox tokens keep their public id, lose the secret.
    (re.compile(r"(sk_[0-9a-fA-F]{32})\.[0-9a-fA-F]+"), r"\1.***", "sk_"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***", "bearer"),
    (re.compile(r"(?i)(redis://[^:@/\s]*:)[^@\s]+@"), r"\1***@", "redis://"),
    (re.compile(r"(?i)(postgres(?:ql)?://[^:@/\s]*:)[^@\s]+@"), r"\1***@", "postgres"),
)


# Libraries whose DEBUG lines carry request data (aiosqlite logs SQL parameters: key hashes and
# salts; httpcore/hpack log headers: bearer tokens). They stay at INFO even under DEBUG.
_QUIET_AT_DEBUG = ("aiosqlite", "httpcore", "hpack", "asyncpg")


# The id of the request being handled: set by the edge middleware and by the gRPC servers
# (from `x-request-id` metadata), stamped on every log line emitted while it is set.
request_id_var: ContextVar[str | None] = ContextVar("signalbox_request_id", default=None)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (unless the call passed one) and, when tracing, `trace_id`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            request_id = request_id_var.get()
            if request_id is not None:
                record.request_id = request_id
        if _trace_ids is not None and getattr(record, "trace_id", None) is None:
            ids = _trace_ids()
            if ids is not None:
                record.trace_id, record.span_id = ids
        return True


TraceIds = Callable[[], "tuple[str, str] | None"]
# Set by services.common.tracing when tracing is on; None keeps logging free of OTel.
_trace_ids: TraceIds | None = None


def set_trace_id_source(source: TraceIds | None) -> None:
    """Where `RequestIdFilter` reads the current (trace_id, span_id); None turns it off."""
    global _trace_ids
    _trace_ids = source


def scrub(text: str) -> str:
    """Remove bearer tokens, key secrets and URL passwords from a string.

    Each regex runs only when its literal is present: most lines hold none, and four
    case-insensitive scans of every line were the largest cost of the request log line.
    """
    lowered = text.lower()
    for pattern, replacement, needle in _SECRET_PATTERNS:
        if needle in lowered:
            text = pattern.sub(replacement, text)
    return text


# LogRecord attributes that are not `extra=` fields (python-json-logger's reserved set).
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _fallback(value: object) -> str:
    return str(value)


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, service, then the `extra=`
    fields, then exc_info / stack_info; the whole line scrubbed.

    orjson instead of python-json-logger: the request summary line cost ~0.15 ms per request
    there, most of it in the stdlib encoder and the per-record field bookkeeping.
    """

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self._second = -1
        self._stamp = ""

    def _ts(self, created: float) -> str:
        """`logging`'s default asctime (`2026-01-02 03:04:05,678`); strftime once a second."""
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(created))
        return f"{self._stamp},{int((created - second) * 1000):03d}"

    def format(self, record: logging.LogRecord) -> str:
        given = record.msg if isinstance(record.msg, dict) else None
        record.message = "" if given is not None else record.getMessage()
        line: dict[str, Any] = {
            "ts": self._ts(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.message,
            "service": self.service,
        }
        if given is not None:
            line.update(given)
        if record.exc_info and not line.get("exc_info"):
            line["exc_info"] = self.formatException(record.exc_info)
        if not line.get("exc_info") and record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info and not line.get("stack_info"):
            line["stack_info"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value
        try:
            text = orjson.dumps(line, default=_fallback, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # e.g. an int beyond 64 bits
            text = json.dumps(line, default=_fallback, ensure_ascii=False)
        return scrub(text)


def _skip_unused_record_fields() -> None:
    """The logging HOWTO's "Optimization" switches for record fields `JsonLineFormatter` never
    writes: the caller's frame (a stack walk per line), thread and process ids and names. The
    edge's request line: 194k → 170k instructions. `stack_info=True` is ignored from then on
    (nothing here asks for it; `exc_info` is unaffected)."""
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route the root logger (and uvicorn's) to one JSON object per line on stderr."""
    _skip_unused_record_fields()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter(service))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _QUIET_AT_DEBUG:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv = logging.getLogger(name)
        uv.handlers[:] = []
        uv.propagate = True
