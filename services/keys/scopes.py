"""Key scopes (spec keys §4): validated here at generation, enforced by the edge per request.

Pure functions, no I/O: the edge imports this module directly.

| Scope | Grants |
|---|---|
| `*` | everything |
| `api:chat` / `api:responses` / `api:models` | the matching endpoint |
| `api:*` | all three endpoints |
| `models:<glob>` | a requested model matching the case-sensitive fnmatch glob |

No scopes (null or `[]`) means unrestricted. `api:` scopes, when present, must admit the
endpoint; `models:` scopes, when present, must admit the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from typing import Literal

from services.keys.errors import KeyValidationError

EndpointApi = Literal["chat", "responses", "models"]
ENDPOINT_APIS: tuple[EndpointApi, ...] = ("chat", "responses", "models")
ALL = "*"
API_PREFIX = "api:"
MODELS_PREFIX = "models:"
MAX_SCOPES = 64
MAX_SCOPE_LENGTH = 256
_KNOWN_API_SCOPES = frozenset({f"{API_PREFIX}{api}" for api in (*ENDPOINT_APIS, ALL)})


def _check_one(scope: str) -> None:
    if len(scope) > MAX_SCOPE_LENGTH:
        raise KeyValidationError(
            "invalid_scope", f"scope longer than {MAX_SCOPE_LENGTH} characters"
        )
    if scope == ALL or scope in _KNOWN_API_SCOPES:
        return
    glob = scope.removeprefix(MODELS_PREFIX)
    if scope.startswith(MODELS_PREFIX) and glob.strip() == glob and glob:
        return
    raise KeyValidationError(
        "invalid_scope",
        f"unknown scope {scope!r}: expected '*', 'api:chat', 'api:responses', 'api:models', "
        "'api:*' or 'models:<glob>'",
    )


def validate_scopes(scopes: Iterable[str] | None) -> list[str] | None:
    """The scopes to store (duplicates dropped, order kept), or None when unrestricted.

    Raises `KeyValidationError("invalid_scope")` for anything outside the table above.
    """
    if scopes is None:
        return None
    unique = list(dict.fromkeys(scopes))
    if len(unique) > MAX_SCOPES:
        raise KeyValidationError("invalid_scope", f"at most {MAX_SCOPES} scopes per key")
    for scope in unique:
        _check_one(scope)
    return unique or None


def model_allowed(scopes: Sequence[str] | None, model: str) -> bool:
    """Whether the key may use `model`; also how the edge filters `GET /v1/models`."""
    if not scopes or ALL in scopes:
        return True
    globs = [s.removeprefix(MODELS_PREFIX) for s in scopes if s.startswith(MODELS_PREFIX)]
    return not globs or any(fnmatchcase(model, glob) for glob in globs)


def check_scopes(
    scopes: Sequence[str] | None, endpoint_api: EndpointApi, model: str | None
) -> str | None:
    """The scope the request lacks (`api:<endpoint>` or `models:<model>`), or None if allowed.

    `model` is None for requests that name no model (the models listing); those are only
    checked against `api:` scopes.
    """
    if endpoint_api not in ENDPOINT_APIS:
        raise ValueError(f"endpoint_api must be one of {ENDPOINT_APIS}, got {endpoint_api!r}")
    if not scopes or ALL in scopes:
        return None
    apis = {s for s in scopes if s.startswith(API_PREFIX)}
    wanted = f"{API_PREFIX}{endpoint_api}"
    if apis and wanted not in apis and f"{API_PREFIX}{ALL}" not in apis:
        return wanted
    if model is not None and not model_allowed(scopes, model):
        return f"{MODELS_PREFIX}{model}"
    return None
