"""Exactly once across a crash: `python -m services.analytics` SIGKILLed mid-traffic, restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from services.common.grpc_client import check_health, open_channel
from services.edge.analytics_sink import AnalyticsSink
from tests.analytics.conftest import NOW, eventually, make_event

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TOTAL = 3000


class AnalyticsProcess:
    """The real service binary on a fixed port, so the sink reconnects to the same address."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.analytics"],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def service_process(
    pg_url: str, free_port: Callable[[], int], tmp_path: Path
) -> Iterator[tuple[AnalyticsProcess, str]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALBOX_")}
    env.update(
        SIGNALBOX_DATABASE_URL=pg_url,
        SIGNALBOX_ANALYTICS_BIND=f"127.0.0.1:{port}",
        SIGNALBOX_DATA_DIR=str(tmp_path / "data"),
        SIGNALBOX_LOG_LEVEL="WARNING",
    )
    process = AnalyticsProcess(env)
    yield process, f"127.0.0.1:{port}"
    process.stop()


async def _wait_serving(addr: str) -> None:
    async with open_channel(addr) as channel:

        async def serving() -> bool:
            return (await check_health(channel, timeout=0.5))[0]

        await eventually(serving, timeout=60)


async def _stored(pg_url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(pg_url)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT id) AS d FROM analytics_events"
        )
    finally:
        await conn.close()
    assert row is not None
    return row["n"], row["d"]


async def test_sigkill_mid_traffic_then_restart_stores_every_event_once(
    pg_url: str, service_process: tuple[AnalyticsProcess, str], tmp_path: Path
) -> None:
    process, addr = service_process
    process.start()
    await _wait_serving(addr)
    sink = AnalyticsSink(
        addr,
        internal_token=None,
        spool_dir=tmp_path / "spool",
        batch_size=50,
        flush_interval=0.02,
        replay_initial_delay=0.2,
        replay_max_delay=0.5,
        send_timeout=2.0,
    )
    await sink.start()
    events = [make_event(NOW - 5000 + i) for i in range(TOTAL)]

    async def traffic() -> None:
        for start in range(0, TOTAL, 50):
            for event in events[start : start + 50]:
                sink.submit(event)
            await asyncio.sleep(0.01)

    sending = asyncio.create_task(traffic())
    await eventually(lambda: sink.stats()["sent"] >= 500)
    process.kill()  # mid-traffic: some batches are in flight, some acked, some not
    await eventually(lambda: sink.stats()["spooled_events"] > 0)
    process.start()
    await _wait_serving(addr)
    await sending

    async def all_stored() -> bool:
        return (await _stored(pg_url))[0] >= TOTAL

    await eventually(all_stored, timeout=90)
    await eventually(lambda: sink.stats()["spool_segments"] == 0 and sink.stats()["queued"] == 0)
    await sink.close()
    assert await _stored(pg_url) == (TOTAL, TOTAL)
    stats = sink.stats()
    # A batch committed just before the kill loses its ack; its replay comes back as duplicates.
    assert stats["accepted"] <= TOTAL <= stats["accepted"] + stats["duplicates"]
    assert stats["dropped_invalid"] == 0 and stats["lost"] == 0
    assert stats["spooled_events"] > 0 and stats["replayed_events"] == stats["spooled_events"]
