"""The bench harness's tests: the fast mock runs as a real process, once per session."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from deploy.local.stack import free_port

STREAM_CHUNKS = 3
START_TIMEOUT_S = 20.0


@pytest.fixture(scope="session")
def fast_mock_url() -> Iterator[str]:
    """`bench.mock_upstream_fast` with 3 chunks per stream, no chunk gap."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.mock_upstream_fast", "--port", str(port)]
    process = subprocess.Popen([*argv, "--chunks", str(STREAM_CHUNKS)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            assert process.poll() is None, f"fast mock exited {process.returncode}"
            try:
                if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "fast mock did not come up"
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)
