"""JSON-lines logging for every service, with secrets scrubbed before anything is written."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

_SECRET_PATTERNS = (
    # Signalbox tokens keep their public id, lose the secret.
    (re.compile(r"(sk_[0-9a-fA-F]{32})\.[0-9a-fA-F]+"), r"\1.***"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
    (re.compile(r"(?i)(redis://[^:@/\s]*:)[^@\s]+@"), r"\1***@"),
    (re.compile(r"(?i)(postgres(?:ql)?://[^:@/\s]*:)[^@\s]+@"), r"\1***@"),
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
    """Remove bearer tokens, key secrets and URL passwords from a string."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class _ScrubbingFormatter(JsonFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route the root logger (and uvicorn's) to one JSON object per line on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _ScrubbingFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
            static_fields={"service": service},
            timestamp=False,
        )
    )
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
