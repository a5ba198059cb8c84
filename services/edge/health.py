"""Liveness and readiness (http-api §7): dependencies probed concurrently, 1 s each."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from services.common.grpc_client import check_health
from services.edge.runtime import EdgeRuntime

CHECK_TIMEOUT_S = 1.0
GRPC_SERVICES = {
    "router": "signalbox.router.v1.Router",
    "keys": "signalbox.keys.v1.Keys",
    "analytics": "signalbox.analytics.v1.Analytics",
}


async def _timed(probe: Awaitable[Any]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await probe
    except TimeoutError:
        error = f"no answer within {CHECK_TIMEOUT_S:g}s"
    except Exception as exc:  # a probe's failure is a check result, never a 500
        error = f"{type(exc).__name__}: {exc}"
    else:
        error = None
    latency = round((time.perf_counter() - started) * 1000, 3)
    if error is None:
        return {"status": "ok", "latency_ms": latency}
    return {"status": "error", "latency_ms": latency, "error": error}


async def _grpc_serving(runtime: EdgeRuntime, name: str) -> None:
    channel = runtime.channels[name]
    assert channel is not None
    serving, _, error = await check_health(channel, GRPC_SERVICES[name], CHECK_TIMEOUT_S)
    if not serving:
        raise ConnectionError(error or "not serving")


async def readiness_checks(runtime: EdgeRuntime) -> dict[str, dict[str, Any]]:
    probes: dict[str, Awaitable[Any]] = {}
    checks: dict[str, dict[str, Any]] = {}
    for name in GRPC_SERVICES:
        if runtime.channels[name] is None:
            checks[name] = {"status": "skipped"}
        else:
            probes[name] = _grpc_serving(runtime, name)
    probes["database"] = runtime.database.ping()
    if runtime.redis is None:
        checks["redis"] = {"status": "skipped"}
    else:
        probes["redis"] = runtime.redis.ping()
    if runtime.mcp.connections:  # a failed MCP server shows here and in /status (issue 7)
        probes["mcp"] = runtime.mcp.check(CHECK_TIMEOUT_S)
    else:
        checks["mcp"] = {"status": "skipped"}
    results = await asyncio.gather(*(_timed(p) for p in probes.values()))
    checks.update(zip(probes, results, strict=True))
    return checks
