"""`python -m services.router` as a real child process: its environment, start and readiness.

stderr goes to a file (a KNN router logs enough to fill a pipe nobody reads)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from services.common.grpc_client import check_health, open_channel

ROOT = Path(__file__).resolve().parents[2]
Spawn = Callable[[dict[str, str]], subprocess.Popen[bytes]]


def router_env(
    tmp_path: Path, grpc_port: int, http_port: int, aliases: object, **extra: str
) -> dict[str, str]:
    """A clean `SIGNALBOX_*` environment: nothing from the caller's shell, data under tmp."""
    from tests.router.conftest import REFERENCE_CATALOG

    alias_file = tmp_path / "router_aliases.json"
    alias_file.write_bytes(orjson.dumps(aliases))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALBOX_")}
    env.update(
        {
            "SIGNALBOX_ROUTER_BIND": f"127.0.0.1:{grpc_port}",
            "SIGNALBOX_ROUTER_HTTP_BIND": f"127.0.0.1:{http_port}",
            "SIGNALBOX_ROUTER_ALIASES": str(alias_file),
            "SIGNALBOX_CATALOG_PATH": str(REFERENCE_CATALOG),
            "SIGNALBOX_BACKENDS": "prefix=vllm-,base=http://vllm:8000/v1,mode=chat",
            "SIGNALBOX_SHUTDOWN_GRACE_SECONDS": "2",
            "SIGNALBOX_DATA_DIR": str(tmp_path / "data"),
            "SIGNALBOX_KNN_INDEX_DIR": str(tmp_path / "data" / "knn"),
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    return env


def stderr_of(child: subprocess.Popen[bytes]) -> str:
    return child.log_path.read_text()  # type: ignore[attr-defined]


def spawner(tmp_path: Path) -> tuple[Spawn, Callable[[], None]]:
    """(start a router child with this env, kill whatever is still running)."""
    children: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str]) -> subprocess.Popen[bytes]:
        log_path = tmp_path / f"router-{len(children)}.log"
        with log_path.open("wb") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "services.router"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        child.log_path = log_path  # type: ignore[attr-defined]
        children.append(child)
        return child

    def cleanup() -> None:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

    return start, cleanup


async def wait_serving(child: subprocess.Popen[bytes], addr: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with open_channel(addr) as channel:
        while True:
            if child.poll() is not None:
                raise AssertionError(f"router exited early: {stderr_of(child)}")
            serving, _, _ = await check_health(channel, "signalbox.router.v1.Router")
            if serving:
                return
            assert time.monotonic() < deadline, "router never became SERVING"
            await asyncio.sleep(0.1)
