"""`POST /convert` (http-api §5): the §1 translation, state query params, internal config."""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.edge.conftest import EdgeFactory
from tests.mcp_servers.fixture import stdio_server, write_config
from tests.mock_upstream.fixture import MockUpstream

ADMIN = "c" * 40
CHAT_BODY = {
    "model": "my-alias",
    "messages": [
        {"role": "system", "content": "client system"},
        {"role": "user", "content": [{"type": "text", "text": "look"}]},
    ],
    "max_tokens": 50,
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "response_format": {"type": "json_object"},
}


async def test_converts_without_auth_and_without_an_upstream_call(
    make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    async with make_edge(auth_mode="managed") as edge:
        response = await edge.client.post("/convert", json=CHAT_BODY)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "model": "my-alias",
        "input": [
            {"type": "message", "role": "system", "content": "client system"},
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "look"}],
            },
        ],
        "max_output_tokens": 50,
        "store": False,
        "text": {"format": {"type": "json_object"}},
        # chat's default strict is false, Responses' is true: stated explicitly
        "tools": [
            {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": False}
        ],
    }
    assert await mock_upstream.requests() == []


async def test_state_query_parameters(make_edge: EdgeFactory) -> None:
    async with make_edge() as edge:
        conv = await edge.client.post("/convert?conversation_id=conv_1", json=CHAT_BODY)
        prev = await edge.client.post("/convert?previous_response_id=resp_1", json=CHAT_BODY)
        both = await edge.client.post(
            "/convert?conversation_id=c&previous_response_id=r", json=CHAT_BODY
        )
    assert conv.json()["conversation"] == "conv_1"
    assert "previous_response_id" not in conv.json()
    assert prev.json()["previous_response_id"] == "resp_1"
    assert "conversation" not in prev.json()
    assert both.status_code == 400
    assert both.json()["error"]["code"] == "invalid_request"


async def test_untranslatable_and_malformed_bodies(make_edge: EdgeFactory) -> None:
    async with make_edge() as edge:
        n2 = await edge.client.post("/convert", json={**CHAT_BODY, "n": 2})
        not_json = await edge.client.post("/convert", content=b"{nope")
        no_messages = await edge.client.post("/convert", json={"model": "m"})
    assert n2.status_code == 400
    assert n2.json()["error"] == {
        "message": "'n' cannot be translated for a responses-mode upstream",
        "type": "invalid_request_error",
        "param": "n",
        "code": "unsupported_parameter",
    }
    assert not_json.json()["error"]["code"] == "invalid_json"
    assert no_messages.json()["error"]["param"] == "messages"


async def test_internal_config_needs_admin_and_applies_the_responses_prompt(
    make_edge: EdgeFactory, tmp_path: Path
) -> None:
    path = tmp_path / "sp.json"
    path.write_bytes(orjson.dumps({"global": "G", "per_api": {"responses": "R", "chat": "C"}}))
    url = "/convert?include_internal_config=true"
    async with make_edge(system_prompt_config=path, admin_token=ADMIN) as edge:
        anonymous = await edge.client.post(url, json=CHAT_BODY)
        admin = await edge.client.post(
            url, json=CHAT_BODY, headers={"authorization": f"Bearer {ADMIN}"}
        )
        plain = await edge.client.post("/convert", json=CHAT_BODY)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "missing_admin_token"
    assert admin.status_code == 200
    assert admin.json()["input"][0] == {"type": "message", "role": "system", "content": "R"}
    assert plain.json()["input"][0]["content"] == "client system"


async def test_public_internal_config_flag(make_edge: EdgeFactory, tmp_path: Path) -> None:
    path = tmp_path / "sp.json"
    path.write_bytes(orjson.dumps({"global": "G", "injection_mode": "replace"}))
    async with make_edge(system_prompt_config=path, public_convert_internal_config=True) as edge:
        response = await edge.client.post("/convert?include_internal_config=1", json=CHAT_BODY)
    assert response.status_code == 200
    assert [i["role"] for i in response.json()["input"]] == ["system", "user"]
    assert response.json()["input"][0]["content"] == "G"


async def test_internal_config_adds_mcp_tools_with_source_and_groups(
    make_edge: EdgeFactory, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "mcp.json", {"demo": stdio_server()})
    async with make_edge(
        mcp_config=config, mcp_connect_timeout_ms=30_000, public_convert_internal_config=True
    ) as edge:
        internal = await edge.client.post("/convert?include_internal_config=true", json=CHAT_BODY)
        plain = await edge.client.post("/convert", json=CHAT_BODY)
    tools = {t["name"]: t for t in internal.json()["tools"]}
    assert "f" in tools  # the client's own tool is kept
    demo = [t for name, t in tools.items() if name.startswith("demo_")]
    assert demo and all(t["source"] == "mcp" and t["groups"] == ["demo"] for t in demo)
    assert [t["name"] for t in plain.json()["tools"]] == ["f"]
