"""CPU time and memory of a gateway's processes, from psutil.

A gateway is one or more named groups of processes (a root plus whatever it forks: uvicorn
workers, LiteLLM's helpers). CPU-ms per request is a group's user+system CPU delta over a run
divided by the requests answered; RSS is summed over the group at the end of the run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psutil
from pydantic import BaseModel


def tree(root: psutil.Process) -> list[psutil.Process]:
    """The root and all its descendants (empty once the root is gone)."""
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cpu_s(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.NoSuchProcess:
        return 0


@dataclass(frozen=True)
class Snapshot:
    """CPU seconds and RSS bytes per named group of processes."""

    cpu_s: Mapping[str, float]
    rss: Mapping[str, int]


def snapshot(groups: Mapping[str, Sequence[psutil.Process]]) -> Snapshot:
    cpu = {name: sum(_cpu_s(p) for p in members) for name, members in groups.items()}
    rss = {name: sum(_rss(p) for p in members) for name, members in groups.items()}
    return Snapshot(cpu, rss)


def cpu_ms_per_request(before: Snapshot, after: Snapshot, name: str, requests: int) -> float:
    spent = after.cpu_s.get(name, 0.0) - before.cpu_s.get(name, 0.0)
    return round(spent * 1000 / max(requests, 1), 3)


class Usage(BaseModel):
    """What a gateway spent on one run; `by_process` splits it across its named roots."""

    cpu_ms_per_request: float
    rss_mb: float
    cpu_ms_per_request_by_process: dict[str, float]
    rss_mb_by_process: dict[str, float]


def usage(before: Snapshot, after: Snapshot, names: Sequence[str], requests: int) -> Usage:
    """CPU the `names` groups spent between the snapshots per request, and their RSS at `after`."""
    cpu = {n: cpu_ms_per_request(before, after, n, requests) for n in names}
    rss = {n: round(after.rss.get(n, 0) / 2**20, 1) for n in names}
    return Usage(
        cpu_ms_per_request=round(sum(cpu.values()), 3),
        rss_mb=round(sum(rss.values()), 1),
        cpu_ms_per_request_by_process=cpu,
        rss_mb_by_process=rss,
    )
