"""The JSON log lines of a request: one summary line, the request id everywhere, no secrets."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.common.logging import configure_logging
from tests.edge.conftest import CHAT, RouterFactory, edge_settings, running_edge, running_keys
from tests.mock_upstream.fixture import MockUpstream, closed_port_url

UPSTREAM_SECRET = "sk-upstream-secret-0123456789"
# Loops of their own (catalog polling, analytics batches, feedback batches): not request work.
BACKGROUND_LOGGERS = frozenset(
    {"services.edge.catalog_view", "services.edge.analytics_sink", "services.edge.route_feedback"}
)


@pytest.fixture
def log_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The services' real JSON logging, written to a buffer instead of stderr."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    configure_logging("test", "INFO")
    yield buffer
    root.handlers[:], level = saved
    root.setLevel(level)


def parse(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


@pytest.mark.postgres
async def test_request_lines_carry_the_request_id_and_no_secret(
    pg_url: str,
    tmp_path: Path,
    router_service: RouterFactory,
    mock_upstream: MockUpstream,
    log_lines: io.StringIO,
) -> None:
    up = mock_upstream.base_url
    aliases = {
        # A failing primary makes the edge log its fallback, the router and keys run their code.
        "resilient": {
            "base_url": closed_port_url(),
            "mode": "chat",
            "model_id": "primary",
            "fallbacks": [{"base_url": up, "mode": "chat", "model_id": "backup"}],
        }
    }
    async with running_keys(pg_url, tmp_path) as keys, router_service(aliases) as router:
        key = await keys.generate(label="logged")
        settings = edge_settings(
            tmp_path,
            up,
            auth_mode="managed",
            openai_api_key=UPSTREAM_SECRET,
            keys_addr=keys.addr,
            router_addr=router.addr,
        )
        async with running_edge(settings) as edge:
            start = len(log_lines.getvalue())
            response = await edge.client.post(
                "/v1/chat/completions",
                json={**CHAT, "model": "resilient"},
                headers={"authorization": f"Bearer {key.token}", "x-request-id": "req-log-test-1"},
            )
            assert response.status_code == 200, response.text
            during = log_lines.getvalue()[start:]
    lines = [orjson.loads(line) for line in during.splitlines() if line.strip()]
    # The test's own HTTP client logs its call to the in-process edge; that line is not the edge's.
    lines = [line for line in lines if "http://edge/" not in line["message"]]
    assert len(lines) >= 3, lines  # the fallback, the upstream calls, the summary at least
    lines = [line for line in lines if line["logger"] not in BACKGROUND_LOGGERS]
    missing = [line for line in lines if line.get("request_id") != "req-log-test-1"]
    assert not missing, missing
    assert "served by a fallback" in {line["message"] for line in lines}
    [summary] = [line for line in lines if line["logger"] == "signalbox.request"]
    assert summary["message"] == "request finished"
    assert summary["key_id"] == key.id
    assert summary["route_id"] == response.headers["x-route-id"]
    assert summary["status"] == 200
    assert summary["resolved_model"] == "backup"
    assert summary["attempts"] == 2
    assert summary["duration_ms"] >= summary["ttfb_ms"] > 0
    assert summary["overhead_ms"] >= 0 and summary["router_ms"] > 0
    everything = log_lines.getvalue()
    secret = key.token.split(".", 1)[1]
    assert secret not in everything
    assert UPSTREAM_SECRET not in everything
    assert CHAT["messages"][0]["content"] not in everything


async def test_request_log_can_be_turned_off(
    tmp_path: Path, mock_upstream: MockUpstream, log_lines: io.StringIO
) -> None:
    settings = edge_settings(tmp_path, mock_upstream.base_url, request_log=False)
    async with running_edge(settings) as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer client-token"}
        )
        assert response.status_code == 200
    assert not [line for line in parse(log_lines) if line["logger"] == "signalbox.request"]
