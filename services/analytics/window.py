"""Request windows (analytics.md §4): defaults, inclusive seconds, `start > end` refused."""

from __future__ import annotations

import math

from services.analytics.store import Window

QUERY_WINDOW_SECONDS = 3600
EXPORT_WINDOW_SECONDS = 86400
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000


class InvalidQuery(ValueError):
    """Bad query parameters; mapped to INVALID_ARGUMENT (HTTP 400 at the edge)."""


def resolve_window(start: int | None, end: int | None, default_seconds: int, now: float) -> Window:
    """Missing `end` is now; missing `start` is `end - default_seconds`."""
    resolved_end = math.floor(now) if end is None else end
    resolved_start = resolved_end - default_seconds if start is None else start
    if resolved_start > resolved_end:
        raise InvalidQuery(f"start ({resolved_start}) must not be after end ({resolved_end})")
    return Window(resolved_start, resolved_end)


def resolve_limit(limit: int | None) -> int:
    """Default 1000; larger requests are capped at 10000 rather than refused."""
    if limit is None:
        return DEFAULT_LIMIT
    if limit <= 0:
        raise InvalidQuery(f"limit must be positive, got {limit}")
    return min(limit, MAX_LIMIT)
