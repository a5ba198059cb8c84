"""The whole stack through the official `openai` SDK: keys, router, analytics and edge processes.

One stack per module (starting four processes costs seconds); every request carries its own
`X-Request-Id` so the analytics events can be matched one to one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from deploy.local.stack import LocalStack, free_ports, issue_first_key
from services.common.grpc_client import open_channel
from services.common.pb import analytics_pb2, analytics_pb2_grpc
from tests.mock_upstream.fixture import MockUpstream

pytestmark = pytest.mark.e2e

PROVIDER_KEY = "sk-upstream-e2e"
# Every hop authenticates with it, streaming RPCs (Analytics.Ingest) included.
INTERNAL_TOKEN = "internal-" + "e2e" * 12
MESSAGES = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
async def stack(
    pg_url: str, mock_upstream: MockUpstream, tmp_path: Path
) -> AsyncIterator[LocalStack]:
    ports = free_ports()
    env = {
        "SIGNALBOX_DATABASE_URL": pg_url,
        "SIGNALBOX_REDIS_URL": "",
        "SIGNALBOX_INTERNAL_TOKEN": INTERNAL_TOKEN,
        "SIGNALBOX_DATA_DIR": str(tmp_path / "data"),
        "SIGNALBOX_ANALYTICS_SPOOL_DIR": str(tmp_path / "spool"),
        "SIGNALBOX_KNN_INDEX_DIR": str(tmp_path / "knn"),
        "SIGNALBOX_AUTH_MODE": "managed",
        # Loopback is not a trusted proxy here: a forwarded address from it must be ignored.
        "SIGNALBOX_TRUSTED_PROXIES": "203.0.113.0/24",
        "SIGNALBOX_SHUTDOWN_GRACE_SECONDS": "5",
        "OPENAI_API_KEY": PROVIDER_KEY,
        "OPENAI_BASE_URL": mock_upstream.base_url,
    }
    async with LocalStack(env=env, ports=ports, log_dir=tmp_path / "logs") as running:
        yield running


async def analytics_events(stack: LocalStack, expected: int) -> list[analytics_pb2.AnalyticsEvent]:
    """Poll the analytics service until `expected` events arrived (the edge batches per second)."""
    now = int(time.time())
    async with open_channel(stack.addr("analytics"), INTERNAL_TOKEN) as channel:
        stub = analytics_pb2_grpc.AnalyticsStub(channel)
        for _ in range(150):
            reply = await stub.Query(
                analytics_pb2.QueryRequest(start=now - 600, end=now + 600, limit=100), timeout=5
            )
            if len(reply.events) >= expected:
                return list(reply.events)
            await asyncio.sleep(0.1)
    raise AssertionError(f"analytics has {len(reply.events)} events, expected {expected}")


async def test_chat_completions_through_the_stack(
    stack: LocalStack, mock_upstream: MockUpstream
) -> None:
    token = await issue_first_key(stack, label="e2e")
    client = openai.AsyncOpenAI(
        base_url=f"{stack.edge_url}/v1", api_key=token, max_retries=0, timeout=30
    )

    completion = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        extra_headers={"X-Request-Id": "e2e-json", "X-Forwarded-For": "198.51.100.7"},
    )
    assert completion.choices[0].message.content == "Hello from the mock upstream."
    assert completion.usage is not None and completion.usage.total_tokens > 0

    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        extra_headers={"X-Request-Id": "e2e-stream"},
    )
    pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert "".join(pieces) == "Hello from the mock upstream."

    with pytest.raises(openai.AuthenticationError) as missing:
        await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            extra_headers={"X-Request-Id": "e2e-401", "Authorization": openai.omit},
        )
    assert missing.value.code == "missing_api_key"
    forged = openai.AsyncOpenAI(
        base_url=f"{stack.edge_url}/v1", api_key=token[:-8] + "00000000", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError) as invalid:
        await forged.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_headers={"X-Request-Id": "e2e-bad"}
        )
    assert invalid.value.code == "invalid_api_key"

    upstream_seen = await mock_upstream.requests()
    assert len(upstream_seen) == 2
    assert {r["headers"]["authorization"] for r in upstream_seen} == {f"Bearer {PROVIDER_KEY}"}

    events = await analytics_events(stack, expected=4)
    by_request = {e.request_id: e for e in events}
    assert len(events) == 4
    assert set(by_request) == {"e2e-json", "e2e-stream", "e2e-401", "e2e-bad"}
    ok = by_request["e2e-json"]
    assert ok.response.success and ok.response.status_code == 200
    assert ok.request.client_ip == "127.0.0.1"  # the peer, not the untrusted forwarded address
    assert ok.auth.auth_method == "managed" and ok.auth.api_key_label == "e2e"
    assert ok.routing.backend == "router"
    assert ok.token_usage.total_tokens == completion.usage.total_tokens
    assert ok.cost.total_cost_micro >= 0 and ok.cost.pricing_model == "gpt-4o-mini"
    streamed = by_request["e2e-stream"]
    assert streamed.request.stream and streamed.response.success
    assert streamed.token_usage.completion_tokens == 5
    for rejected in ("e2e-401", "e2e-bad"):
        assert by_request[rejected].response.status_code == 401
        assert not by_request[rejected].response.success
