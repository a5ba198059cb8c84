"""The README's example client works against a running router, on both surfaces."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from services.router.app import RouterApp
from services.router.examples.client import RouterError, grpc_plan, http_plan, route_request

ROOT = Path(__file__).resolve().parents[2]


async def test_example_functions(router: RouterApp) -> None:
    request = route_request("nano-basic", "chat", 50)
    grpc_body, grpc_headers = await grpc_plan(f"127.0.0.1:{router.grpc_port}", request)
    http_body, http_headers = await http_plan(f"http://127.0.0.1:{router.http_port}", request)
    assert grpc_headers["x-route-id"] == grpc_body["route_id"]
    assert http_headers["x-route-id"] == http_body["route_id"]
    assert (
        grpc_body["upstream"]
        == http_body["upstream"]
        == {
            "base_url": "https://api.openai.com/v1",
            "mode": "responses",
            "model_id": "gpt-5-nano",
            "auth_env": "OPENAI_API_KEY",
        }
    )
    bad = route_request("auto", "chat", 50) | {"caps": ["vision"]}
    for call in (
        grpc_plan(f"127.0.0.1:{router.grpc_port}", bad),
        http_plan(f"http://127.0.0.1:{router.http_port}", bad),
    ):
        with pytest.raises(RouterError) as info:
            await call
        assert info.value.body["code"] == "NO_ROUTE"


async def test_example_cli(router: RouterApp) -> None:
    args = [
        sys.executable,
        "-m",
        "services.router.examples.client",
        "--alias",
        "vllm-llama",
        "--grpc",
        f"127.0.0.1:{router.grpc_port}",
        "--http",
        f"http://127.0.0.1:{router.http_port}",
    ]
    # The router runs in this test's event loop, so the client must not block it.
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert text.count("x-route-id=rte_") == 2
    first_json = text.split("\n", 1)[1].split("\nHTTP")[0]
    assert orjson.loads(first_json)["upstream"]["model_id"] == "vllm-llama"
