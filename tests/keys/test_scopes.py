"""Scope validation at generation and the checks the edge runs per request (keys §4)."""

from __future__ import annotations

import pytest

from services.keys.errors import KeyValidationError
from services.keys.scopes import check_scopes, model_allowed, validate_scopes

ALL_API = ["api:chat", "api:responses", "api:models", "api:*"]
GLOBS = ["models:gpt-4o*", "models:claude-[0-9]?", "models:exact"]


@pytest.mark.parametrize(
    ("scopes", "stored"),
    [
        (None, None),
        ([], None),
        (["*"], ["*"]),
        (ALL_API, ALL_API),
        (GLOBS, GLOBS),
        (["api:chat", "api:chat", "models:a"], ["api:chat", "models:a"]),
    ],
)
def test_valid_scopes(scopes: list[str] | None, stored: list[str] | None) -> None:
    assert validate_scopes(scopes) == stored


@pytest.mark.parametrize(
    "scope",
    [
        "",
        "admin",
        "api:",
        "api:embeddings",
        "API:chat",
        "models:",
        "models: gpt",
        "**",
        "api:chat ",
        "x" * 300,
        "models",
    ],
)
def test_unknown_scopes(scope: str) -> None:
    with pytest.raises(KeyValidationError) as err:
        validate_scopes(["api:chat", scope])
    assert err.value.code == "invalid_scope"


def test_too_many_scopes() -> None:
    with pytest.raises(KeyValidationError):
        validate_scopes([f"models:m{i}" for i in range(65)])


@pytest.mark.parametrize("scopes", [None, [], ["*"], ["*", "api:chat", "models:x"]])
def test_unrestricted(scopes: list[str] | None) -> None:
    for api in ("chat", "responses", "models"):
        assert check_scopes(scopes, api, "anything") is None
        assert check_scopes(scopes, api, None) is None


def test_api_scopes_gate_endpoints() -> None:
    scopes = ["api:chat", "api:models"]
    assert check_scopes(scopes, "chat", "m") is None
    assert check_scopes(scopes, "models", None) is None
    assert check_scopes(scopes, "responses", "m") == "api:responses"
    for api in ("chat", "responses", "models"):
        assert check_scopes(["api:*"], api, "m") is None


def test_model_scopes_gate_models_case_sensitively() -> None:
    scopes = ["models:gpt-4o*", "models:o[13]-mini"]
    assert check_scopes(scopes, "chat", "gpt-4o-mini") is None
    assert check_scopes(scopes, "responses", "o3-mini") is None
    assert check_scopes(scopes, "chat", "o2-mini") == "models:o2-mini"
    assert check_scopes(scopes, "chat", "GPT-4o") == "models:GPT-4o"
    assert check_scopes(scopes, "models", None) is None


def test_api_and_model_scopes_combine() -> None:
    scopes = ["api:responses", "models:claude-*"]
    assert check_scopes(scopes, "responses", "claude-3") is None
    assert check_scopes(scopes, "chat", "claude-3") == "api:chat"
    assert check_scopes(scopes, "responses", "gpt-4o") == "models:gpt-4o"
    assert check_scopes(["api:chat"], "chat", "any-model") is None


def test_model_listing_filter() -> None:
    scopes = ["api:models", "models:gpt-*"]
    models = ["gpt-4o", "claude-3", "gpt-5"]
    assert [m for m in models if model_allowed(scopes, m)] == ["gpt-4o", "gpt-5"]
    assert all(model_allowed(None, m) for m in models)


def test_unknown_endpoint_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        check_scopes(["api:chat"], "embeddings", None)  # type: ignore[arg-type]
