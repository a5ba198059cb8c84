"""System-prompt injection (config-files §5): selection, modes, all four paths, hot reload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from services.edge.system_prompt import SystemPromptConfig, inject, load_config
from tests.edge.conftest import BEARER, CHAT, EdgeFactory
from tests.mock_upstream.fixture import MockUpstream, mode_backends

ADMIN = "s" * 40
ADMIN_AUTH = {"authorization": f"Bearer {ADMIN}"}
SYS = {"role": "system", "content": "client system"}
DEV = {"role": "developer", "content": "client developer"}
USER = {"role": "user", "content": "hi"}


def config(**fields: Any) -> SystemPromptConfig:
    return SystemPromptConfig.model_validate(fields)


@pytest.mark.parametrize(
    ("fields", "api", "model", "expected"),
    [
        ({"global": "G"}, "chat", "m", "G"),
        ({"global": "G", "per_api": {"chat": "C"}}, "chat", "m", "C"),
        ({"global": "G", "per_api": {"chat": "C"}}, "responses", "m", "G"),
        ({"global": "G", "per_api": {"chat": "C"}, "per_model": {"m": "M"}}, "chat", "m", "M"),
        ({"global": "G", "per_model": {"other": "M"}}, "chat", "m", "G"),
        ({"global": "G", "enabled": False}, "chat", "m", None),
        ({}, "chat", "m", None),
    ],
)
def test_selection_order(
    fields: dict[str, Any], api: str, model: str, expected: str | None
) -> None:
    assert config(**fields).select(api, model) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mode", "messages", "expected_roles"),
    [
        ("prepend", [SYS, USER], ["system*", "system", "user"]),
        ("append", [SYS, DEV, USER], ["system", "developer", "system*", "user"]),
        ("append", [USER, SYS], ["system*", "user", "system"]),
        ("replace", [SYS, USER, DEV], ["system*", "user"]),
        ("something-unknown", [SYS, USER], ["system*", "system", "user"]),
    ],
)
def test_chat_modes(mode: str, messages: list[Any], expected_roles: list[str]) -> None:
    body = {"model": "m", "messages": messages}
    out = inject(config(**{"global": "OP", "injection_mode": mode}), "chat", body)
    roles = [m["role"] + ("*" if m["content"] == "OP" else "") for m in out["messages"]]
    assert roles == expected_roles
    assert body["messages"] == messages  # the client's body is not mutated


def test_responses_string_input_becomes_system_and_user_items() -> None:
    out = inject(config(**{"global": "OP"}), "responses", {"model": "m", "input": "hello"})
    assert out["input"] == [
        {"type": "message", "role": "system", "content": "OP"},
        {"type": "message", "role": "user", "content": "hello"},
    ]


def test_responses_replace_drops_instructions_and_system_items() -> None:
    body = {
        "model": "m",
        "instructions": "be terse",
        "input": [
            {"type": "message", "role": "developer", "content": "d"},
            {"role": "user", "content": "u"},
            {"type": "function_call_output", "call_id": "c", "output": "x"},
        ],
    }
    out = inject(config(**{"global": "OP", "injection_mode": "replace"}), "responses", body)
    assert "instructions" not in out
    assert [i.get("role") or i["type"] for i in out["input"]] == [
        "system",
        "user",
        "function_call_output",
    ]


def test_load_config_rejects_bad_files(tmp_path: Path) -> None:
    bad_json = tmp_path / "a.json"
    bad_json.write_text("{not json")
    wrong_type = tmp_path / "b.json"
    wrong_type.write_text('{"per_model": ["x"]}')
    for path, needle in ((bad_json, "not valid JSON"), (wrong_type, "per_model")):
        with pytest.raises(ValueError, match=needle):
            load_config(path)


def _write(path: Path, content: dict[str, Any]) -> None:
    path.write_bytes(orjson.dumps(content))


async def test_injected_on_all_four_paths(
    make_edge: EdgeFactory, mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    path = tmp_path / "system_prompt.json"
    _write(path, {"global": "OPERATOR", "per_api": {"responses": "OPERATOR-R"}})
    async with make_edge(system_prompt_config=path, backends=mode_backends(mock_upstream)) as edge:
        for model in ("chat-a", "resp-a"):
            r = await edge.client.post(
                "/v1/chat/completions", json={**CHAT, "model": model}, headers=BEARER
            )
            assert r.status_code == 200, r.text
            r = await edge.client.post(
                "/v1/responses",
                json={"model": model, "input": "hi", "store": False},
                headers=BEARER,
            )
            assert r.status_code == 200, r.text
    seen = await mock_upstream.requests()
    chat_to_chat, resp_to_chat, chat_to_resp, resp_to_resp = seen
    assert chat_to_chat["body"]["messages"][0] == {"role": "system", "content": "OPERATOR"}
    assert resp_to_chat["body"]["messages"][0] == {"role": "system", "content": "OPERATOR-R"}
    assert chat_to_resp["body"]["input"][0] == {
        "type": "message",
        "role": "system",
        "content": "OPERATOR",
    }
    assert resp_to_resp["body"]["input"][0] == {
        "type": "message",
        "role": "system",
        "content": "OPERATOR-R",
    }


async def test_reload_swaps_config_and_keeps_old_one_when_invalid(
    make_edge: EdgeFactory, mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    path = tmp_path / "system_prompt.json"
    _write(path, {"global": "FIRST"})
    async with make_edge(system_prompt_config=path, admin_token=ADMIN) as edge:
        await edge.client.post("/v1/chat/completions", json=CHAT, headers=BEARER)
        _write(path, {"global": "SECOND", "per_model": {"x": "y"}, "injection_mode": "append"})
        ok = await edge.client.post("/reload/system_prompt", headers=ADMIN_AUTH)
        await edge.client.post("/v1/chat/completions", json=CHAT, headers=BEARER)
        path.write_text("{broken")
        broken = await edge.client.post("/reload/system_prompt", headers=ADMIN_AUTH)
        await edge.client.post("/v1/chat/completions", json=CHAT, headers=BEARER)
        status = (await edge.client.get("/status")).json()
    assert ok.status_code == 200
    assert ok.json() == {
        "success": True,
        "message": "System prompt config reloaded",
        "enabled": True,
        "has_global": True,
        "per_model_count": 1,
        "per_api_count": 0,
        "injection_mode": "append",
    }
    assert broken.status_code == 500
    assert broken.json()["error"]["code"] == "config_invalid"
    contents = [r["body"]["messages"][0]["content"] for r in await mock_upstream.requests()]
    assert contents == ["FIRST", "SECOND", "SECOND"]
    assert status["features"]["system_prompt"] == {
        "enabled": True,
        "config_path": str(path),
        "injection_mode": "append",
    }


async def test_reload_without_a_config_path_is_config_not_set(make_edge: EdgeFactory) -> None:
    async with make_edge(admin_token=ADMIN) as edge:
        response = await edge.client.post("/reload/system_prompt", headers=ADMIN_AUTH)
        status = (await edge.client.get("/status")).json()
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "config_not_set"
    assert status["features"]["system_prompt"]["enabled"] is False


async def test_invalid_file_at_start_aborts(make_edge: EdgeFactory, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("[]")
    with pytest.raises(ValueError, match="JSON object"):
        async with make_edge(system_prompt_config=path):
            pass
