"""`python -m services.edge` as a real process: config errors exit 1, SIGTERM drains and exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson

from tests.mock_upstream.fixture import MockUpstream


def edge_env(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNALBOX_", "OPENAI_"))}
    env.update(
        {
            "SIGNALBOX_EDGE_BIND": f"127.0.0.1:{port}",
            "SIGNALBOX_ROUTER_ADDR": "off",
            "SIGNALBOX_KEYS_ADDR": "off",
            "SIGNALBOX_ANALYTICS_ADDR": "off",
            "SIGNALBOX_DATA_DIR": str(tmp_path),
            **extra,
        }
    )
    return env


def test_short_admin_token_exits_1_without_echoing_it(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    secret = "too-short-secret"
    result = subprocess.run(
        [sys.executable, "-m", "services.edge"],
        env=edge_env(tmp_path, free_port(), SIGNALBOX_ADMIN_TOKEN=secret),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "SIGNALBOX_ADMIN_TOKEN must be at least 32 characters" in result.stderr
    assert secret not in result.stderr + result.stdout


async def test_serves_then_drains_on_sigterm(
    tmp_path: Path, free_port: Callable[[], int], mock_upstream: MockUpstream
) -> None:
    port = free_port()
    env = edge_env(tmp_path, port, OPENAI_BASE_URL=mock_upstream.base_url)
    log_path = tmp_path / "edge.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.edge", env=env, stdout=log, stderr=log
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            for _ in range(300):
                try:
                    if (await client.get("/_health/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            await mock_upstream.script({"latency_ms": 500})
            slow = asyncio.create_task(
                client.post(
                    "/v1/chat/completions", json=body, headers={"authorization": "Bearer t"}
                )
            )
            for _ in range(200):
                if await mock_upstream.requests():
                    break
                await asyncio.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            response = await slow  # in flight at SIGTERM: finishes within the grace
        assert response.status_code == 200
        assert await asyncio.wait_for(process.wait(), 30) == 0
        text = log_path.read_text().splitlines()
        lines = [orjson.loads(line) for line in text if line.startswith("{")]
        assert lines and all(line["service"] == "edge" for line in lines)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
