"""Pytest fixtures running the mock upstream as a real process on a free port.

One process per test session (starting it costs ~0.5 s); each test gets it reset, with an
empty script and request log, through the function-scoped `mock_upstream` fixture.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from deploy.local.stack import free_port

START_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class MockUpstream:
    """Handle on a running mock: its URLs and its control API."""

    url: str

    @property
    def base_url(self) -> str:
        """What `OPENAI_BASE_URL` / a plan's `base_url` should be."""
        return f"{self.url}/v1"

    async def _call(self, method: str, path: str, json: Any = None) -> Any:
        async with httpx.AsyncClient(base_url=self.url, timeout=5.0) as client:
            response = await client.request(method, path, json=json)
            response.raise_for_status()
            return response.json()

    async def script(self, *steps: Mapping[str, Any], replace: bool = False) -> None:
        """Queue behaviours (`status`, `latency_ms`, `first_byte_ms`, `cut_after`, …)."""
        await self._call("POST", "/_mock/script", {"steps": list(steps), "replace": replace})

    async def requests(self) -> list[dict[str, Any]]:
        """Every inference request received since the last reset, oldest first."""
        return (await self._call("GET", "/_mock/requests"))["requests"]

    async def reset(self) -> None:
        await self._call("POST", "/_mock/reset")


def mode_backends(mock: MockUpstream) -> str:
    """`SIGNALBOX_BACKENDS` sending `chat-*` models to chat mode, `resp-*` to responses mode."""
    return (
        f"prefix=chat-,base={mock.base_url},mode=chat;"
        f"prefix=resp-,base={mock.base_url},mode=responses"
    )


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connections are refused (fallback tests)."""
    return f"http://127.0.0.1:{free_port()}/v1"


def start_mock_upstream(port: int) -> subprocess.Popen[bytes]:
    """Spawn the mock and wait for its health route; its output goes to a temp log file."""
    log = tempfile.NamedTemporaryFile(prefix="mock_upstream_", suffix=".log", delete=False)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.mock_upstream", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            with open(log.name, errors="replace") as tail:
                err = tail.read()[-2000:]
            raise RuntimeError(f"mock upstream exited with {process.returncode}: {err}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_mock/health", timeout=1.0).is_success:
                return process
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise TimeoutError(f"mock upstream not up on port {port} after {START_TIMEOUT_S}s")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def mock_upstream_server() -> Iterator[MockUpstream]:
    port = free_port()
    process = start_mock_upstream(port)
    try:
        yield MockUpstream(f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def mock_upstream(mock_upstream_server: MockUpstream) -> AsyncIterator[MockUpstream]:
    await mock_upstream_server.reset()
    yield mock_upstream_server
