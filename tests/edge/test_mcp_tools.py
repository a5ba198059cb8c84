"""MCP tools merged into every request, seen from the upstream's side (config-files §6)."""

from __future__ import annotations

from pathlib import Path

from tests.edge.conftest import BEARER, EdgeFactory
from tests.mcp_servers.fixture import http_server, stdio_server, write_config
from tests.mock_upstream.fixture import MockUpstream

CONNECT_MS = 30_000
DEMO_TOOLS = {"demo_add", "demo_echo", "demo_env", "demo_fail", "demo_grow", "demo_crash"}
CLIENT_TOOL = {
    "type": "function",
    "function": {"name": "demo_echo", "description": "the client's own", "parameters": {}},
}


def _chat_names(tools: list[dict]) -> list[str]:
    return [t["function"]["name"] for t in tools]


async def test_chat_request_gets_mcp_tools_in_nested_form_and_client_tool_wins(
    tmp_path: Path, make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    config = write_config(tmp_path / "mcp.json", {"demo": stdio_server()})
    async with make_edge(
        mcp_config=config, mcp_connect_timeout_ms=CONNECT_MS, upstream_mode="chat"
    ) as edge:
        body = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [CLIENT_TOOL],
        }
        response = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
        assert response.status_code == 200, response.text
    [sent] = await mock_upstream.requests()
    assert sent["path"] == "/v1/chat/completions"
    tools = sent["body"]["tools"]
    names = _chat_names(tools)
    assert names[0] == "demo_echo" and tools[0] == CLIENT_TOOL  # the client's, first and only
    assert names.count("demo_echo") == 1
    assert set(names) == DEMO_TOOLS
    add = next(t for t in tools if t["function"]["name"] == "demo_add")
    assert add["type"] == "function"
    assert add["function"]["description"] == "Add two integers."
    assert add["function"]["parameters"]["properties"].keys() == {"a", "b"}
    echo_default = next(t for t in tools if t["function"]["name"] == "demo_echo")
    assert echo_default["function"]["description"] == "the client's own"
    assert all("source" not in t and "groups" not in t for t in tools)


async def test_responses_request_gets_flat_tools(
    tmp_path: Path, make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    config = write_config(tmp_path / "mcp.json", {"demo": stdio_server()})
    async with make_edge(
        mcp_config=config, mcp_connect_timeout_ms=CONNECT_MS, upstream_mode="responses"
    ) as edge:
        body = {"model": "gpt-4o-mini", "input": "hi"}
        response = await edge.client.post("/v1/responses", json=body, headers=BEARER)
        assert response.status_code == 200, response.text
    [sent] = await mock_upstream.requests()
    assert sent["path"] == "/v1/responses"
    tools = {t["name"]: t for t in sent["body"]["tools"]}
    assert set(tools) == DEMO_TOOLS
    assert tools["demo_add"]["type"] == "function"
    assert tools["demo_add"]["parameters"]["required"] == ["a", "b"]
    assert tools["demo_echo"]["description"] == "MCP tool"  # the server gave none


async def test_http_and_sse_servers_are_merged_alongside_stdio(
    tmp_path: Path, make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    with (
        http_server("streamable-http", "--prefix", "h") as http_url,
        http_server("sse", "--prefix", "s") as sse_url,
    ):
        config = write_config(
            tmp_path / "mcp.json",
            {"web": {"url": http_url}, "legacy": {"url": sse_url}, "demo": stdio_server()},
        )
        async with make_edge(
            mcp_config=config, mcp_connect_timeout_ms=CONNECT_MS, upstream_mode="chat"
        ) as edge:
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
            response = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
            assert response.status_code == 200, response.text
            servers = {s["name"]: s for s in edge.runtime.mcp.servers()}
    assert servers["web"]["transport"] == "streamable-http"
    assert servers["legacy"]["transport"] == "sse"
    assert all(s["status"] == "ok" and s["tools"] == 6 for s in servers.values())
    [sent] = await mock_upstream.requests()
    names = set(_chat_names(sent["body"]["tools"]))
    assert {"web_hadd", "legacy_sadd", "demo_add"} <= names
    assert len(names) == 18


async def test_no_config_sends_the_body_unchanged(
    make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    async with make_edge(upstream_mode="chat") as edge:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        response = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
        assert response.status_code == 200
    [sent] = await mock_upstream.requests()
    assert "tools" not in sent["body"]
