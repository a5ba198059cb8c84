"""A real edge process (passthrough auth, the mock upstream as provider) for fuzzing."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy.local.stack import free_port
from tests.edge.test_process import edge_env
from tests.mock_upstream.fixture import (  # noqa: F401 (pytest fixtures)
    MockUpstream,
    mock_upstream_server,
)

START_TIMEOUT_S = 30.0
BODY_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def edge_url(
    tmp_path_factory: pytest.TempPathFactory,
    mock_upstream_server: MockUpstream,  # noqa: F811
) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("fuzz-edge")
    port = free_port()
    env = edge_env(
        tmp,
        port,
        OPENAI_BASE_URL=mock_upstream_server.base_url,
        SIGNALBOX_MAX_BODY_BYTES=str(1024 * 1024),
        SIGNALBOX_UPSTREAM_TIMEOUT_MS="10000",
        SIGNALBOX_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT_S),
    )
    log = (tmp / "edge.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.edge"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"{url}/_health/ready", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"edge did not start: {(tmp / 'edge.log').read_text()[-2000:]}")
        time.sleep(0.05)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(15)
        log.close()
        errors = [
            line for line in (tmp / "edge.log").read_text().splitlines() if "Traceback" in line
        ]
        assert not errors, "the edge logged tracebacks:\n" + "\n".join(errors[:3])
