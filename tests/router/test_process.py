"""`python -m services.router` as a real process: serve, answer, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from services.common.grpc_client import open_channel
from services.common.pb import router_pb2, router_pb2_grpc
from tests.router.conftest import MIXTRAL
from tests.router.processes import Spawn, router_env, stderr_of, wait_serving

pytestmark = pytest.mark.e2e


async def test_router_process_serves_and_drains(
    spawn: Spawn,
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
    logs = stderr_of(child)
    lines = [orjson.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(line.get("message") == "router serving" for line in lines)
    assert all(line["service"] == "router" for line in lines)


async def test_invalid_config_aborts_start(
    spawn: Spawn, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    aliases = {"auto": {"policy": "knn", "candidates": ["ghost"], "default_model": "ghost"}}
    child = spawn(router_env(tmp_path, free_port(), free_port(), aliases))
    assert await asyncio.to_thread(child.wait, 20) == 1
    stderr = stderr_of(child)
    assert "invalid routing config" in stderr and "'ghost'" in stderr
