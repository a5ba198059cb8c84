"""Pure parts of the MCP feature: config validation, tool merge, reply parsing, usage sums."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from services.edge.events import Usage
from services.edge.mcp import McpConfigError, ToolCatalog, load_config
from services.edge.mcp.execution import append_history, wants_execution
from services.edge.mcp.replies import Reply, add_usage, json_reply, stream_reply
from services.edge.mcp.tools import build_tools


def _catalog(execute: bool = False) -> ToolCatalog:
    tools = [
        SimpleNamespace(name="add", description="Add.", input_schema={"type": "object"}),
        SimpleNamespace(name="bad name!", description=None, input_schema={}),
        SimpleNamespace(name="echo", description=None, input_schema={"type": "string"}),
    ]
    return ToolCatalog.of(build_tools("srv", tools, execute=execute))


def test_config_accepts_stdio_and_http_servers(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(
        '{"mcpServers": {"a": {"command": "x", "args": ["1"], "env": {"K": "V"}},'
        ' "b": {"url": "http://h/sse"}, "c": {"url": "http://h/mcp", "type": "http"},'
        ' "d": {"url": "http://h/x", "transport": "sse", "execute": true}},'
        ' "execution": {"max_rounds": 2}}'
    )
    config = load_config(path)
    kinds = {name: server.kind for name, server in config.servers.items()}
    assert kinds == {"a": "stdio", "b": "sse", "c": "streamable-http", "d": "sse"}
    assert config.servers["d"].execute is True and config.execution.max_rounds == 2


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[]", "expected a JSON object"),
        ("{", "not valid JSON"),
        ('{"mcpServers": {"a": {}}}', "exactly one of"),
        ('{"mcpServers": {"a": {"command": "x", "timeout_ms": 0}}}', "timeout_ms"),
        ('{"mcpServers": {"a b": {"command": "x"}}}', "server name"),
        ('{"mcpServers": {"a": {"url": "http://h", "type": "stdio"}}}', "not 'stdio'"),
    ],
)
def test_config_errors_name_the_problem(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(text)
    with pytest.raises(McpConfigError, match=reason):
        load_config(path)
    with pytest.raises(McpConfigError, match="cannot read"):
        load_config(tmp_path / "absent.json")


def test_merge_skips_invalid_names_defaults_and_keeps_client_tools_first() -> None:
    catalog = _catalog(execute=True)
    assert list(catalog.by_name) == ["srv_add", "srv_echo"]
    echo = catalog.by_name["srv_echo"]
    assert echo.description == "MCP tool"
    assert echo.parameters == {"type": "object", "properties": {}}  # non-object schema replaced
    mine = {"type": "function", "name": "srv_add", "parameters": {}}
    body, added = catalog.merge("responses", {"input": "x", "tools": [mine]})
    assert body["tools"][0] is mine and [t["name"] for t in body["tools"]] == [
        "srv_add",
        "srv_echo",
    ]
    assert added == {"srv_echo"}
    unchanged = {"input": "x", "tools": "nonsense"}
    assert catalog.merge("responses", unchanged) == (unchanged, frozenset())
    internal, _ = catalog.merge("responses", {"input": "x"}, internal=True)
    assert internal["tools"][0]["source"] == "mcp" and internal["tools"][0]["groups"] == ["srv"]


def test_chat_stream_reply_merges_tool_call_deltas() -> None:
    chunks = [
        {"choices": [{"delta": {"role": "assistant", "content": "Let me "}}]},
        {"choices": [{"delta": {"content": "check."}}]},
        {"choices": [{"delta": {"tool_calls": [
            {"index": 0, "id": "c1", "type": "function", "function": {"name": "srv_add"}}]}}]},
        {"choices": [{"delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": '{"a":'}}]}}]},
        {"choices": [{"delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": "1}"}}]}}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
    ]  # fmt: skip
    reply = stream_reply("chat", chunks)
    assert reply.text == "Let me check."
    [call] = reply.calls
    assert (call.call_id, call.name, call.arguments) == ("c1", "srv_add", '{"a":1}')
    assert reply.usage == {"prompt_tokens": 3, "completion_tokens": 2}


def test_responses_reply_flags_client_side_calls() -> None:
    body = {
        "output": [
            {"type": "function_call", "call_id": "c1", "name": "srv_add", "arguments": "{}"},
            {"type": "custom_tool_call", "call_id": "c2", "name": "grep", "input": "x"},
        ]
    }
    reply = json_reply("responses", body)
    assert reply.other_calls is True
    assert not wants_execution(reply, frozenset({"srv_add"}))
    assert not wants_execution(Reply(), frozenset({"srv_add"}))


def test_usage_sums_keep_the_shape() -> None:
    extra = Usage(10, 5, 15, 2, 1)
    chat = add_usage({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}, extra)
    assert chat == {
        "prompt_tokens": 11,
        "completion_tokens": 6,
        "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 2},
        "completion_tokens_details": {"reasoning_tokens": 1},
    }
    responses = add_usage({"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}, extra)
    assert responses["input_tokens"] == 11 and responses["output_tokens"] == 7
    assert responses["input_tokens_details"] == {"cached_tokens": 2}


def test_history_is_appended_in_the_client_shape() -> None:
    reply = json_reply(
        "chat",
        {"choices": [{"message": {"content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "srv_add", "arguments": "{}"}}]}}]},
    )  # fmt: skip
    responses_body = {"input": "hi"}
    append_history("responses", responses_body, reply, ["3"])
    assert responses_body["input"] == [
        {"type": "message", "role": "user", "content": "hi"},
        {"type": "function_call", "call_id": "c1", "name": "srv_add", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "3"},
    ]
    original = [{"role": "user", "content": "hi"}]
    chat_body = {"messages": original}
    append_history("chat", chat_body, reply, ["3"])
    assert original == [{"role": "user", "content": "hi"}]  # a new list, the old one untouched
    assert chat_body["messages"][-1] == {"role": "tool", "tool_call_id": "c1", "content": "3"}
