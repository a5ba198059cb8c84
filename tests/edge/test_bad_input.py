"""Hostile and odd input at the edge (issue 10): a clear OpenAI-style answer, never a 500."""

from __future__ import annotations

import pytest

from tests.edge.conftest import BEARER, CHAT, EdgeFactory
from tests.edge.test_errors import assert_error


async def test_non_ascii_model_names_do_not_break_response_headers(make_edge: EdgeFactory) -> None:
    """Found by the schemathesis run: a model name went verbatim into `x-resolved-model`."""
    async with make_edge() as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "mödel-\U000ecf8d\x07"}, headers=BEARER
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-resolved-model"] == "m%C3%B6del-%F3%AC%BE%8D%07"


async def test_deeply_nested_json_is_a_400(make_edge: EdgeFactory) -> None:
    body = b'{"model":"m","messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    async with make_edge() as edge:
        response = await edge.client.post(
            "/v1/chat/completions",
            content=body,
            headers={**BEARER, "content-type": "application/json"},
        )
    assert_error(response, 400, "invalid_json", "invalid_request_error")


async def test_invalid_utf8_is_a_400(make_edge: EdgeFactory) -> None:
    body = b'{"model":"m","messages":[{"role":"user","content":"\xff\xfe"}]}'
    async with make_edge() as edge:
        response = await edge.client.post(
            "/v1/chat/completions",
            content=body,
            headers={**BEARER, "content-type": "application/json"},
        )
    assert_error(response, 400, "invalid_json", "invalid_request_error")


@pytest.mark.parametrize(
    "extra",
    [
        {"n": 10**12},
        {"max_tokens": 10**15},
        {"max_completion_tokens": -1},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": "not-an-object"}}]},
        {"tools": "not-a-list"},
        {"messages": [{"role": "user", "content": {"nested": True}}]},
        {"stream": "yes"},
    ],
)
async def test_odd_parameters_never_500(make_edge: EdgeFactory, extra: dict) -> None:
    async with make_edge() as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, **extra}, headers=BEARER
        )
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"] and error["type"]
