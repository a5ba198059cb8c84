"""`POST /reload/mcp` and `/reload/all`, tools/list_changed, and failing MCP servers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from services.edge.mcp import McpConfigError, McpManager
from tests.edge.conftest import BEARER, EdgeFactory
from tests.edge.test_process import edge_env
from tests.mcp_servers.fixture import stdio_server, write_config
from tests.mock_upstream.fixture import MockUpstream

CONNECT_MS = 30_000
ADMIN = "a" * 40
ADMIN_AUTH = {"authorization": f"Bearer {ADMIN}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
DEAD = {"command": sys.executable, "args": ["-c", "import sys; sys.exit(2)"]}


async def _sent_tool_names(edge_client, mock_upstream: MockUpstream) -> set[str]:
    await mock_upstream.reset()
    response = await edge_client.post("/v1/chat/completions", json=CHAT, headers=BEARER)
    assert response.status_code == 200, response.text
    [sent] = await mock_upstream.requests()
    return {t["function"]["name"] for t in sent["body"].get("tools", [])}


async def test_reload_applies_a_changed_config_and_keeps_it_on_an_invalid_file(
    tmp_path: Path, make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    path = write_config(tmp_path / "mcp.json", {"demo": stdio_server()})
    async with make_edge(
        mcp_config=path, mcp_connect_timeout_ms=CONNECT_MS, upstream_mode="chat",
        admin_token=ADMIN,
    ) as edge:  # fmt: skip
        before = await _sent_tool_names(edge.client, mock_upstream)
        assert "demo_add" in before and len(before) == 6

        write_config(path, {"demo": stdio_server(), "more": stdio_server("--prefix", "x")})
        reloaded = await edge.client.post("/reload/mcp", headers=ADMIN_AUTH)
        assert reloaded.status_code == 200, reloaded.text
        body = reloaded.json()
        assert body["success"] is True and body["count"] == 12
        assert body["changes"] == {
            "added": ["more"], "removed": [], "restarted": [], "refreshed": ["demo"]
        }  # fmt: skip
        assert {s["name"]: s["tools"] for s in body["servers"]} == {"demo": 6, "more": 6}
        after = await _sent_tool_names(edge.client, mock_upstream)
        assert "more_xadd" in after and len(after) == 12

        path.write_text("{not json")
        broken = await edge.client.post("/reload/mcp", headers=ADMIN_AUTH)
        assert broken.status_code == 500
        assert broken.json()["error"]["code"] == "config_invalid"
        assert "not valid JSON" in broken.json()["error"]["message"]
        assert await _sent_tool_names(edge.client, mock_upstream) == after  # old config kept

        write_config(path, {"more": {"url": "http://x", "command": "y"}})
        schema = await edge.client.post("/reload/mcp", headers=ADMIN_AUTH)
        assert schema.status_code == 500 and "exactly one of" in schema.json()["error"]["message"]

        write_config(path, {"more": stdio_server("--prefix", "y")})
        swapped = (await edge.client.post("/reload/mcp", headers=ADMIN_AUTH)).json()
        assert swapped["changes"]["removed"] == ["demo"]
        assert swapped["changes"]["restarted"] == ["more"]
        assert await _sent_tool_names(edge.client, mock_upstream) == {
            f"more_y{t}" for t in ("add", "echo", "env", "fail", "grow", "crash")
        }

        everything = await edge.client.post("/reload/all", headers=ADMIN_AUTH)
        assert everything.status_code == 200
        assert everything.json()["mcp"]["success"] is True


async def test_reload_without_a_config_path_is_400(make_edge: EdgeFactory) -> None:
    async with make_edge(admin_token=ADMIN) as edge:
        response = await edge.client.post("/reload/mcp", headers=ADMIN_AUTH)
        unauthenticated = await edge.client.post("/reload/mcp")
        everything = await edge.client.post("/reload/all", headers=ADMIN_AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "config_not_set"
    assert unauthenticated.status_code == 401
    assert everything.json()["mcp"] == {
        "success": False,
        "message": "No MCP config: set SIGNALBOX_MCP_CONFIG",
        "code": "config_not_set",
    }


async def test_tools_list_changed_notification_refreshes_the_catalog(tmp_path: Path) -> None:
    path = write_config(tmp_path / "mcp.json", {"demo": stdio_server()})
    manager = await McpManager.open(path, connect_timeout_s=30, default_max_rounds=5)
    try:
        assert "demo_extra" not in manager.catalog.by_name
        output = await manager.connections["demo"].call_tool("grow", {})
        assert output == "grown"
        async with asyncio.timeout(20):
            while "demo_extra" not in manager.catalog.by_name:  # noqa: ASYNC110 (no hook)
                await asyncio.sleep(0.05)
        assert manager.servers()[0]["tools"] == 7
    finally:
        await manager.close()


async def test_a_broken_file_at_start_aborts(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text('{"mcpServers": {"bad name!": {"command": "x"}}}')
    with pytest.raises(McpConfigError, match="server name"):
        await McpManager.open(path, connect_timeout_s=1, default_max_rounds=5)


async def test_a_dead_server_is_skipped_and_reported_unhealthy(
    tmp_path: Path, make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    path = write_config(
        tmp_path / "mcp.json",
        {"dead": DEAD, "gone": {"command": str(tmp_path / "missing")}, "demo": stdio_server()},
    )
    async with make_edge(
        mcp_config=path, mcp_connect_timeout_ms=CONNECT_MS, upstream_mode="chat"
    ) as edge:
        names = await _sent_tool_names(edge.client, mock_upstream)
        status = (await edge.client.get("/status")).json()
        ready = await edge.client.get("/_health/ready")
    assert names == {f"demo_{t}" for t in ("add", "echo", "env", "fail", "grow", "crash")}
    servers = {s["name"]: s for s in status["features"]["mcp"]["servers"]}
    assert servers["dead"]["status"] == "error" and servers["dead"]["tools"] == 0
    assert servers["gone"]["status"] == "error" and "missing" in servers["gone"]["error"]
    assert servers["demo"]["status"] == "ok" and servers["demo"]["tools"] == 6
    assert ready.status_code == 503
    check = ready.json()["checks"]["mcp"]
    assert check["status"] == "error"
    assert "dead" in check["error"] and "gone" in check["error"] and "demo" not in check["error"]


async def test_a_server_crashing_mid_request_never_fails_the_request(
    tmp_path: Path, make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    path = write_config(tmp_path / "mcp.json", {"demo": stdio_server(execute=True)})
    async with make_edge(
        mcp_config=path, mcp_connect_timeout_ms=CONNECT_MS, upstream_mode="chat",
        admin_token=ADMIN,
    ) as edge:  # fmt: skip
        ready_before = await edge.client.get("/_health/ready")
        await mock_upstream.script(
            {"tool_calls": [{"name": "demo_crash", "arguments": "{}"}]}, {"text": "sorry"}
        )
        response = await edge.client.post("/v1/chat/completions", json=CHAT, headers=BEARER)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "sorry"
        _, second = await mock_upstream.requests()
        assert "error" in second["body"]["messages"][-1]["content"]

        status = (await edge.client.get("/status")).json()
        ready_after = await edge.client.get("/_health/ready")
        tools_after = await _sent_tool_names(edge.client, mock_upstream)

        recovered = await edge.client.post("/reload/mcp", headers=ADMIN_AUTH)
        assert recovered.json()["changes"]["restarted"] == ["demo"]
        assert len(await _sent_tool_names(edge.client, mock_upstream)) == 6
    assert ready_before.json()["checks"]["mcp"]["status"] == "ok"
    [server] = status["features"]["mcp"]["servers"]
    assert server["status"] == "error" and server["healthy"] is False
    assert ready_after.status_code == 503
    assert tools_after == set()


def test_mcp_config_flag_is_read_and_a_broken_file_stops_the_edge(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    path = tmp_path / "mcp.json"
    path.write_text('{"mcpServers": {"x": {}}}')
    result = subprocess.run(
        [sys.executable, "-m", "services.edge", "--mcp-config", str(path)],
        env=edge_env(tmp_path, free_port()),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "exactly one of 'command' (stdio) or 'url' (HTTP)" in result.stderr + result.stdout
