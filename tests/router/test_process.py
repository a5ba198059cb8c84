"""`python -m services.router` as a real process: serve, answer, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from services.common.grpc_client import check_health, open_channel
from services.common.pb import router_pb2, router_pb2_grpc
from tests.router.conftest import MIXTRAL, REFERENCE_CATALOG

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def router_env(
    tmp_path: Path, grpc_port: int, http_port: int, aliases: object, **extra: str
) -> dict[str, str]:
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
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    return env


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    children: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str]) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            [sys.executable, "-m", "services.router"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        children.append(child)
        return child

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
            child.wait()


async def wait_serving(child: subprocess.Popen[bytes], addr: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with open_channel(addr) as channel:
        while True:
            if child.poll() is not None:
                raise AssertionError(f"router exited early: {child.stderr.read()!r}")  # type: ignore[union-attr]
            serving, _, _ = await check_health(channel, "signalbox.router.v1.Router")
            if serving:
                return
            assert time.monotonic() < deadline, "router never became SERVING"
            await asyncio.sleep(0.1)


async def test_router_process_serves_and_drains(
    spawn: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
    free_port: Callable[[], int],
    redis_url: str,
    redis_prefix: str,
) -> None:
    grpc_port, http_port = free_port(), free_port()
    aliases = {
        "auto": {"policy": "knn", "candidates": [MIXTRAL], "default_model": MIXTRAL},
    }
    env = router_env(
        tmp_path,
        grpc_port,
        http_port,
        aliases,
        SIGNALBOX_REDIS_URL=redis_url,
        SIGNALBOX_REDIS_KEY_PREFIX=redis_prefix,
    )
    child = spawn(env)
    await wait_serving(child, f"127.0.0.1:{grpc_port}")

    async with open_channel(f"127.0.0.1:{grpc_port}") as channel:
        plan = await router_pb2_grpc.RouterStub(channel).Plan(
            router_pb2.RouteRequest(alias="auto", api="chat")
        )
    assert plan.upstream.model_id == "mistralai/Mixtral-8x7B-Instruct-v0.1"
    assert plan.policy.explain_detail["fallback_reason"] == "knn_unavailable"
    redis = aioredis.from_url(redis_url)
    assert await redis.exists(f"{redis_prefix}stk:{plan.stickiness.plan_token}")
    await redis.aclose()

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as http:
        response = await http.post("/route/plan", json={"alias": "vllm-qwen", "api": "chat"})
        assert response.status_code == 200
        assert response.json()["upstream"]["base_url"] == "http://vllm:8000/v1"
        assert response.headers["config-revision"] == plan.policy_rev
        assert (await http.get("/health")).json()["status"] == "healthy"

    child.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(child.wait, 20) == 0
    logs = child.stderr.read().decode()  # type: ignore[union-attr]
    lines = [orjson.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(line.get("message") == "router serving" for line in lines)
    assert all(line["service"] == "router" for line in lines)


async def test_invalid_config_aborts_start(
    spawn: Callable[..., subprocess.Popen[bytes]], tmp_path: Path, free_port: Callable[[], int]
) -> None:
    aliases = {"auto": {"policy": "knn", "candidates": ["ghost"], "default_model": "ghost"}}
    child = spawn(router_env(tmp_path, free_port(), free_port(), aliases))
    assert await asyncio.to_thread(child.wait, 20) == 1
    stderr = child.stderr.read().decode()  # type: ignore[union-attr]
    assert "invalid routing config" in stderr and "'ghost'" in stderr
