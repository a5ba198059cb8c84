"""Helpers to run `demo_server` for edge tests: stdio configs and HTTP server processes."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from deploy.local.stack import free_port

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


def stdio_server(*extra_args: str, **fields: Any) -> dict[str, Any]:
    """A config entry spawning the demo server over stdio."""
    return {
        "command": sys.executable,
        "args": ["-m", "tests.mcp_servers.demo_server", *extra_args],
        "cwd": str(REPO),
        **fields,
    }


def write_config(path: Path, servers: dict[str, Any], **extra: Any) -> Path:
    path.write_bytes(orjson.dumps({"mcpServers": servers, **extra}))
    return path


@contextmanager
def http_server(transport: str = "streamable-http", *extra_args: str) -> Iterator[str]:
    """The demo server as a real HTTP process; yields its endpoint URL."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="mcp_demo_", suffix=".log", delete=False)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.mcp_servers.demo_server", "--transport", transport,
         "--port", str(port), *extra_args],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"demo MCP server exited: {Path(log.name).read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("demo MCP server did not start") from None
                time.sleep(0.05)
        path = "/sse" if transport == "sse" else "/mcp"
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
