"""An analytics service started in-process on loopback (port 0), called through a real stub."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from services.analytics.app import AnalyticsApp
from services.analytics.settings import AnalyticsSettings
from services.common.grpc_client import open_channel
from services.common.pb import analytics_pb2, analytics_pb2_grpc

NOW = 1_800_000_000


class FakeClock:
    """A settable `time.time`, so default windows and retention are exact without sleeping."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_event(timestamp: float = NOW - 10, **sections: Any) -> dict[str, Any]:
    """A full §1 event as the edge builds it; `sections` replace or extend its parts."""
    event: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "request_id": "req_" + uuid.uuid4().hex[:12],
        "timestamp": timestamp,
        "request": {
            "endpoint": "/v1/chat/completions",
            "method": "POST",
            "model": "gpt-4o",
            "stream": False,
            "size_bytes": 120,
            "message_count": 1,
            "input_tokens": 10,
            "user_agent": "pytest",
            "client_ip": "127.0.0.1",
        },
        "response": {
            "status_code": 200,
            "size_bytes": 300,
            "output_tokens": 20,
            "success": True,
            "error_message": None,
        },
        "performance": {
            "duration_ms": 100.0,
            "ttfb_ms": 40.0,
            "upstream_duration_ms": 90.0,
            "tokens_per_second": 222.22,
        },
        "auth": {
            "authenticated": False,
            "api_key_id": None,
            "api_key_label": None,
            "auth_method": "none",
        },
        "routing": {
            "backend": "router",
            "upstream_mode": "chat",
            "mcp_enabled": False,
            "mcp_servers": [],
            "system_prompt_applied": False,
            "route_id": "rte_0123456789abcdef",
            "strategy": "alias_table",
            "policy_rev": "rev1",
            "resolved_model": "gpt-4o",
            "fallback_used": False,
            "fallback_index": None,
            "attempts": 1,
            "router_latency_ms": 1.5,
            "route_cache": "miss",
            "confidence": None,
        },
        "token_usage": {
            "prompt_tokens": 1000,
            "completion_tokens": 200,
            "total_tokens": 1200,
            "cached_tokens": 0,
            "reasoning_tokens": 0,
        },
        "cost": None,
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(event.get(name), dict):
            event[name] = {**event[name], **value}
        else:
            event[name] = value
    return event


def to_pb(event: dict[str, Any]) -> analytics_pb2.AnalyticsEvent:
    return json_format.ParseDict(event, analytics_pb2.AnalyticsEvent(), ignore_unknown_fields=True)


def batch(*events: dict[str, Any]) -> analytics_pb2.EventBatch:
    return analytics_pb2.EventBatch(events=[to_pb(e) for e in events])


@dataclass
class RunningAnalytics:
    app: AnalyticsApp
    channel: grpc.aio.Channel
    stub: analytics_pb2_grpc.AnalyticsStub
    clock: FakeClock

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.app.server.port}"

    async def ingest(self, *batches: analytics_pb2.EventBatch) -> analytics_pb2.IngestAck:
        return await self.stub.Ingest(iter(batches))

    async def export(
        self, fmt: str, **window: int
    ) -> tuple[bytes, list[analytics_pb2.ExportChunk]]:
        chunks = [
            c async for c in self.stub.Export(analytics_pb2.ExportRequest(format=fmt, **window))
        ]
        return b"".join(c.data for c in chunks), chunks


StartAnalytics = Callable[..., Awaitable[RunningAnalytics]]


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'analytics.db'}"


def settings_for(database_url: str, data_dir: Path, **overrides: Any) -> AnalyticsSettings:
    options: dict[str, Any] = {
        "analytics_bind": "127.0.0.1:0",
        "database_url": database_url,
        "data_dir": data_dir,
        "shutdown_grace_seconds": 1.0,
        "analytics_health_probe_seconds": 0.1,
        # Isolated from any SIGNALBOX_* variables of the shell running the tests.
        "internal_token": None,
        "analytics_retention_seconds": None,
        "pricing_config": None,
        "catalog_path": None,
        **overrides,
    }
    return AnalyticsSettings(**options)


@pytest.fixture(params=["postgres", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using it runs against the real Postgres and the embedded SQLite."""
    if request.param == "postgres":
        return request.getfixturevalue("pg_url")
    return sqlite_url(tmp_path)


@pytest.fixture
async def start_analytics(tmp_path: Path) -> AsyncIterator[StartAnalytics]:
    """Factory: `await start_analytics(database_url, **settings)`; everything stopped after."""
    running: list[RunningAnalytics] = []

    async def start(database_url: str, **overrides: Any) -> RunningAnalytics:
        clock = FakeClock()
        app = AnalyticsApp(settings_for(database_url, tmp_path, **overrides), clock=clock)
        port = await app.start()
        channel = open_channel(f"127.0.0.1:{port}", overrides.get("internal_token"))
        item = RunningAnalytics(app, channel, analytics_pb2_grpc.AnalyticsStub(channel), clock)
        running.append(item)
        return item

    yield start
    for item in running:
        await item.channel.close()
        await item.app.stop()


@pytest.fixture
async def analytics(database_url: str, start_analytics: StartAnalytics) -> RunningAnalytics:
    """`database_url` first: the database must outlive the service during teardown."""
    return await start_analytics(database_url)


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 30.0) -> None:
    """Poll until `check` holds; a bounded wait for background work, not a timing assertion."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not reached within {timeout}s")
        await asyncio.sleep(0.05)
