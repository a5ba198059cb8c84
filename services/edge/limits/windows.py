"""Fixed UTC windows of the per-key limits (keys.md §4): the minute, the day or the month.

Pure arithmetic on one clock reading, so a request's counters all name the same windows and
`retry-after` tells the seconds until the window that refused it resets.
"""

from __future__ import annotations

import calendar
import math
import time
from dataclasses import dataclass
from typing import Literal

MINUTE_S = 60
DAY_S = 86_400
MINUTE_KEY_TTL_S = 120
Period = Literal["day", "month"]


@dataclass(frozen=True)
class Window:
    """One counter window: its Redis key suffix, when it resets and how long its key lives."""

    suffix: str
    reset_s: float
    ttl_s: int

    @property
    def retry_after(self) -> int:
        """Whole seconds until the reset, at least 1 (http-api §2)."""
        return max(1, math.ceil(self.reset_s))


def minute_window(now: float) -> Window:
    minute = int(now // MINUTE_S)
    return Window(str(minute), (minute + 1) * MINUTE_S - now, MINUTE_KEY_TTL_S)


def budget_window(now: float, period: Period) -> Window:
    """`YYYYMMDD` or `YYYYMM` in UTC; the key outlives its period by a day (keys.md §4)."""
    t = time.gmtime(now)
    if period == "day":
        start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
        length = DAY_S
        suffix = f"{t.tm_year:04d}{t.tm_mon:02d}{t.tm_mday:02d}"
    else:
        start = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
        length = calendar.monthrange(t.tm_year, t.tm_mon)[1] * DAY_S
        suffix = f"{t.tm_year:04d}{t.tm_mon:02d}"
    return Window(suffix, start + length - now, length + DAY_S)
