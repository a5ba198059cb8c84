"""The images' HEALTHCHECK commands, run for real against a gRPC server and an HTTP server.

The commands are taken from the Dockerfile verbatim; only `python` becomes this interpreter
(the image's venv has the same packages).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

from services.common.grpc_server import GrpcServer
from tests.deploy.dockerfile import parse_dockerfile
from tests.deploy.upstream_app import UpstreamState, serve_upstream

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = parse_dockerfile((REPO / "deploy" / "docker" / "Dockerfile").read_text())


def _probe(target: str) -> list[str]:
    healthcheck = DOCKERFILE.last(target, "HEALTHCHECK")
    assert healthcheck is not None
    command = healthcheck.exec_form()
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


async def _run(command: list[str], env: dict[str, str]) -> int:
    process = await asyncio.create_subprocess_exec(
        *command,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), 30)


async def test_grpc_probe_follows_the_health_service(free_port: Callable[[], int]) -> None:
    for target in ("router", "keys", "analytics"):
        assert _probe(target) == _probe("keys")  # one probe for every gRPC service
    port = free_port()
    env = {"SIGNALBOX_HEALTHCHECK_ADDR": f"127.0.0.1:{port}"}
    server = GrpcServer(f"127.0.0.1:{port}", ["signalbox.keys.v1.Keys"], internal_token="t" * 32)
    await server.start()
    try:
        await server.set_serving(True)
        assert await _run(_probe("keys"), env) == 0  # health is open despite the token

        await server.set_serving(False)
        assert await _run(_probe("keys"), env) == 1
    finally:
        await server.stop()
    assert await _run(_probe("keys"), env) != 0  # nothing listening


async def test_edge_probe_follows_http_status(free_port: Callable[[], int]) -> None:
    port = free_port()
    async with serve_upstream(UpstreamState(), port) as url:
        live = {"SIGNALBOX_HEALTHCHECK_URL": f"{url}/_health/live"}
        failing = {"SIGNALBOX_HEALTHCHECK_URL": f"{url}/_health/failing"}
        assert await _run(_probe("edge"), live) == 0
        assert await _run(_probe("edge"), failing) != 0
    assert await _run(_probe("edge"), live) != 0
