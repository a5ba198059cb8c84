"""JSON-lines logging for every service, with secrets scrubbed before anything is written."""

from __future__ import annotations

import logging
import re
import sys

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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _QUIET_AT_DEBUG:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv = logging.getLogger(name)
        uv.handlers[:] = []
        uv.propagate = True
