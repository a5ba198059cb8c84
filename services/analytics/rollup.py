"""Per-minute roll-ups of `analytics_events`, so aggregates over millions of rows stay fast.

Two tables follow the events through database triggers (so every writer, idempotent ingest,
retention deletes and bulk loads alike, keeps them exact):
- `analytics_rollup`: per minute and (model, endpoint, backend, strategy), the counts and sums
  the aggregate needs;
- `analytics_duration_hist`: per minute, a log-scale histogram of `duration_ms` (bins 1 % wide)
  for percentiles over windows too large to sort.

An aggregate reads whole minutes from the roll-ups and only the partial minutes at the window's
edges from the events. The SQL of one roll-up row is written once here and shared by the
Postgres statement trigger, the SQLite row trigger, the backfill and the edge reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from services.analytics.events import COLUMNS
from services.common.db import Dialect

BUCKET_SECONDS = 60
# Histogram bins are powers of this ratio: an estimate is off by at most half a bin (~0.5 %).
BIN_RATIO = 1.01
MIN_DURATION_MS = 0.001
# The dimension columns; NULL is stored as '' so the primary key can hold it.
DIMENSIONS = ("model_key", "endpoint", "backend", "strategy")

# (roll-up column, SQL of one event's contribution; `r` is the event row).
SUMS: tuple[tuple[str, str], ...] = (
    ("requests", "1"),
    ("successes", "CASE WHEN r.success THEN 1 ELSE 0 END"),
    ("fallbacks", "CASE WHEN r.fallback_used THEN 1 ELSE 0 END"),
    ("prompt_tokens", "coalesce(r.prompt_tokens, 0)"),
    ("completion_tokens", "coalesce(r.completion_tokens, 0)"),
    ("cached_tokens", "coalesce(r.cached_tokens, 0)"),
    ("reasoning_tokens", "coalesce(r.reasoning_tokens, 0)"),
    ("duration_sum", "coalesce(r.duration_ms, 0)"),
    ("duration_n", "CASE WHEN r.duration_ms IS NULL THEN 0 ELSE 1 END"),
    ("tps_sum", "coalesce(r.tokens_per_second, 0)"),
    ("tps_n", "CASE WHEN r.tokens_per_second IS NULL THEN 0 ELSE 1 END"),
    ("cost_sum", "coalesce(r.total_cost, 0)"),
    ("cost_n", "CASE WHEN r.total_cost IS NULL THEN 0 ELSE 1 END"),
)
_FLOAT_SUMS = frozenset({"duration_sum", "tps_sum", "cost_sum"})
_KEY = "bucket, " + ", ".join(DIMENSIONS)
_SUM_COLUMNS = ", ".join(name for name, _ in SUMS)


def _bucket_sql() -> str:
    return f"CAST(floor(r.timestamp / {BUCKET_SECONDS}) AS BIGINT) * {BUCKET_SECONDS}"


def bin_sql(dialect: Dialect) -> str:
    """The histogram bin of `r.duration_ms` (greatest() is max() in SQLite)."""
    greatest = "greatest" if dialect == "postgres" else "max"
    return (
        f"CAST(floor(ln({greatest}(r.duration_ms, {MIN_DURATION_MS})) / ln({BIN_RATIO}))"
        " AS INTEGER)"
    )


def bin_value(index: int) -> float:
    """The estimate of a bin: its geometric middle."""
    return BIN_RATIO ** (index + 0.5)


def _dimension_sql() -> str:
    return ", ".join(f"coalesce(r.{d}, '') AS {d}" for d in DIMENSIONS)


def rollup_select(source: str, sign: int = 1, where: str = "true") -> str:
    """Roll-up rows (bucket, dimensions, sums) of the events in `source` (aliased `r`)."""
    sums = ", ".join(f"{sign} * sum({expr}) AS {name}" for name, expr in SUMS)
    return (
        f"SELECT {_bucket_sql()} AS bucket, {_dimension_sql()}, {sums}"
        f" FROM {source} AS r WHERE {where} GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5"
    )


def hist_select(source: str, dialect: Dialect, sign: int = 1, where: str = "true") -> str:
    return (
        f"SELECT {_bucket_sql()} AS bucket, {bin_sql(dialect)} AS bin, {sign} * count(*) AS n"
        f" FROM {source} AS r WHERE ({where}) AND r.duration_ms IS NOT NULL"
        " GROUP BY 1, 2 ORDER BY 1, 2"
    )


def _upsert_rollup(select: str) -> str:
    updates = ", ".join(f"{name} = analytics_rollup.{name} + excluded.{name}" for name, _ in SUMS)
    return (
        f"INSERT INTO analytics_rollup ({_KEY}, {_SUM_COLUMNS}) {select}"
        f" ON CONFLICT ({_KEY}) DO UPDATE SET {updates}"
    )


def _upsert_hist(select: str) -> str:
    return (
        f"INSERT INTO analytics_duration_hist (bucket, bin, n) {select}"
        " ON CONFLICT (bucket, bin) DO UPDATE SET n = analytics_duration_hist.n + excluded.n"
    )


def _tables(dialect: Dialect) -> str:
    integer, real = ("BIGINT", "DOUBLE PRECISION") if dialect == "postgres" else ("INTEGER", "REAL")
    sums = ", ".join(
        f"{name} {real if name in _FLOAT_SUMS else integer} NOT NULL" for name, _ in SUMS
    )
    dims = ", ".join(f"{d} TEXT NOT NULL" for d in DIMENSIONS)
    return (
        f"CREATE TABLE analytics_rollup (bucket {integer} NOT NULL, {dims}, {sums},"
        f" PRIMARY KEY ({_KEY}));\n"
        f"CREATE TABLE analytics_duration_hist (bucket {integer} NOT NULL,"
        f" bin INTEGER NOT NULL, n {integer} NOT NULL, PRIMARY KEY (bucket, bin));\n"
    )


def _backfill(dialect: Dialect) -> str:
    return (
        _upsert_rollup(rollup_select("analytics_events"))
        + ";\n"
        + _upsert_hist(hist_select("analytics_events", dialect))
        + ";\n"
    )


def postgres_migration() -> str:
    """Tables, a statement-level trigger per direction (transition tables hold exactly the rows
    an `INSERT … ON CONFLICT DO NOTHING` really inserted), and a backfill of existing events."""
    functions = []
    for op, table, sign in (("insert", "new_rows", 1), ("delete", "old_rows", -1)):
        functions.append(
            f"CREATE FUNCTION analytics_rollup_{op}() RETURNS trigger LANGUAGE plpgsql AS $fn$\n"
            f"BEGIN\n  {_upsert_rollup(rollup_select(table, sign))};\n"
            f"  {_upsert_hist(hist_select(table, 'postgres', sign))};\n"
            "  RETURN NULL;\nEND\n$fn$;\n"
            f"CREATE TRIGGER analytics_events_rollup_{op} AFTER {op.upper()} ON analytics_events"
            f" REFERENCING {'NEW' if sign > 0 else 'OLD'} TABLE AS {table}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION analytics_rollup_{op}();\n"
        )
    return _tables("postgres") + "".join(functions) + _backfill("postgres")


def sqlite_migration() -> str:
    """SQLite has only row triggers: the same SELECT over a one-row `NEW`/`OLD` subquery."""
    triggers = []
    for op, ref, sign in (("insert", "NEW", 1), ("delete", "OLD", -1)):
        row = "(SELECT " + ", ".join(f"{ref}.{c} AS {c}" for c in COLUMNS if c != "event") + ")"
        triggers.append(
            f"CREATE TRIGGER analytics_events_rollup_{op} AFTER {op.upper()} ON analytics_events"
            f" BEGIN\n  {_upsert_rollup(rollup_select(row, sign))};\n"
            f"  {_upsert_hist(hist_select(row, 'sqlite', sign))};\nEND;\n"
        )
    return _tables("sqlite") + "".join(triggers) + _backfill("sqlite")


PRUNE_EMPTY = (
    "DELETE FROM analytics_rollup WHERE requests = 0",
    "DELETE FROM analytics_duration_hist WHERE n = 0",
)


# Events of a window outside its whole minutes ($1..$4 = `Split.args`).
RAW_EDGES = "r.timestamp >= $1 AND r.timestamp < $2 AND (r.timestamp < $3 OR r.timestamp >= $4)"


@dataclass(frozen=True)
class Split:
    """A window `[lo, hi)` as whole roll-up minutes `[full_lo, full_hi)` plus raw edges."""

    lo: float
    hi: float
    full_lo: int
    full_hi: int

    @classmethod
    def of(cls, lo: float, hi: float) -> Split:
        full_lo = math.ceil(lo / BUCKET_SECONDS) * BUCKET_SECONDS
        full_hi = math.floor(hi / BUCKET_SECONDS) * BUCKET_SECONDS
        if full_lo >= full_hi:
            full_lo = full_hi = 0  # no whole minute inside: everything is read raw
        return cls(lo, hi, full_lo, full_hi)

    @property
    def args(self) -> tuple[float, float, int, int]:
        return self.lo, self.hi, self.full_lo, self.full_hi


def window_rollup_sql() -> str:
    """Roll-up rows of one window: the whole minutes plus the raw edges, summed per dimension."""
    sums = ", ".join(
        f"sum({name}) AS {name}"
        if name in _FLOAT_SUMS
        else f"CAST(sum({name}) AS BIGINT) AS {name}"  # Postgres sums bigints as numeric
        for name, _ in SUMS
    )
    dims = ", ".join(DIMENSIONS)
    edges = rollup_select("analytics_events", where=RAW_EDGES)
    return (
        f"SELECT {dims}, {sums} FROM ("
        f"SELECT {dims}, {_SUM_COLUMNS} FROM analytics_rollup"
        " WHERE bucket >= $3 AND bucket < $4"
        f" UNION ALL SELECT {dims}, {_SUM_COLUMNS} FROM ({edges}) AS edges"
        f") AS parts GROUP BY {dims}"
    )


def window_hist_sql(dialect: Dialect) -> str:
    edges = hist_select("analytics_events", dialect, where=RAW_EDGES)
    return (
        "SELECT bin, CAST(sum(n) AS BIGINT) AS n FROM ("
        "SELECT bin, n FROM analytics_duration_hist WHERE bucket >= $3 AND bucket < $4"
        f" UNION ALL SELECT bin, n FROM ({edges}) AS edges"
        ") AS parts GROUP BY bin ORDER BY bin"
    )


def hist_percentile(bins: Sequence[tuple[int, int]], p: float) -> float | None:
    """percentile_cont over a histogram: the two neighbouring order statistics, interpolated."""
    total = sum(n for _, n in bins)
    if total <= 0:
        return None
    position = (total - 1) * p
    wanted = (math.floor(position), math.ceil(position))
    values: list[float] = []
    seen = 0
    for index, n in bins:
        while len(values) < 2 and wanted[len(values)] < seen + n:
            values.append(bin_value(index))
        seen += n
        if len(values) == 2:
            break
    low, high = values[0], values[-1]
    return low + (high - low) * (position - math.floor(position))
