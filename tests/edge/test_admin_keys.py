"""Admin key routes (keys.md §6) through the edge to the real keys service on Postgres."""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
import pytest

from tests.edge.conftest import CHAT, Edge, EdgeFactory, RunningKeys
from tests.edge.test_errors import assert_error

ADMIN = "admin-" + "x" * 40
KEY_INFO_FIELDS = {
    "id",
    "label",
    "created_at",
    "expires_at",
    "revoked_at",
    "scopes",
    "rate_limit",
    "budget",
    "tenant",
    "project",
}
GENERATED_FIELDS = KEY_INFO_FIELDS - {"revoked_at"} | {"token"}


def admin_edge(make_edge: EdgeFactory, keys: RunningKeys | None, **extra: Any) -> Any:
    settings = {
        "auth_mode": "managed",
        "openai_api_key": "sk-provider-secret",
        "keys_addr": keys.addr if keys else "off",
        "admin_token": ADMIN,
    }
    return make_edge(**{**settings, **extra})


async def admin(edge: Edge, method: str, path: str, body: Any = None, **params: Any) -> Any:
    response = await edge.client.request(
        method, path, json=body, params=params, headers={"authorization": f"Bearer {ADMIN}"}
    )
    return response


async def chat(edge: Edge, token: str) -> httpx.Response:
    return await edge.client.post(
        "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {token}"}
    )


async def test_admin_token_is_required(make_edge: EdgeFactory, keys_service: RunningKeys) -> None:
    async with admin_edge(make_edge, keys_service) as edge:
        missing = await edge.client.get("/keys")
        wrong = await edge.client.post(
            "/keys/generate", json={}, headers={"authorization": "Bearer " + "y" * 40}
        )
    assert_error(missing, 401, "missing_admin_token", "authentication_error")
    assert_error(wrong, 401, "invalid_admin_token", "authentication_error")


async def test_generate_shows_the_token_once_and_never_logs_it(
    make_edge: EdgeFactory, keys_service: RunningKeys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = {
        "label": "team-a",
        "ttl_seconds": 3600,
        "scopes": ["api:chat", "models:gpt-4o*"],
        "rate_limit": {"rpm": 10},
        "budget": {"limit_micro": 5_000_000, "period": "month"},
        "tenant": "acme",
        "project": "web",
    }
    async with admin_edge(make_edge, keys_service) as edge:
        generated = await admin(edge, "POST", "/keys/generate", body)
        used = await chat(edge, generated.json()["token"])
        listed = await admin(edge, "GET", "/keys")
    assert generated.status_code == 200, generated.text
    key = generated.json()
    assert set(key) == GENERATED_FIELDS
    assert key["token"].startswith(f"sk_{key['id']}.")
    assert key["label"] == "team-a" and key["tenant"] == "acme" and key["project"] == "web"
    assert key["scopes"] == ["api:chat", "models:gpt-4o*"]
    assert key["rate_limit"] == {"rpm": 10, "tpm": None}
    assert key["budget"] == {"limit_micro": 5_000_000, "period": "month"}
    assert key["expires_at"] - key["created_at"] == 3600
    assert used.status_code == 200 and used.headers["x-ratelimit-limit-requests"] == "10"
    (info,) = listed.json()
    assert set(info) == KEY_INFO_FIELDS and "token" not in listed.text
    assert info["id"] == key["id"] and info["revoked_at"] is None
    secret = key["token"].split(".")[1]
    for record in caplog.records:
        assert secret not in record.getMessage()
        assert all(secret not in str(value) for value in vars(record).values())


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"scopes": ["admin:all"]}, "invalid_scope"),
        ({"expires_at": 1_000}, "invalid_expiration"),
        ({"ttl_seconds": 0}, "invalid_ttl"),
        ({"budget": {"limit_micro": 10, "period": "week"}}, "invalid_request"),
        ({"unknown_field": 1}, "invalid_request"),
    ],
)
async def test_generate_rejects_bad_input(
    make_edge: EdgeFactory, keys_service: RunningKeys, body: dict[str, Any], code: str
) -> None:
    async with admin_edge(make_edge, keys_service) as edge:
        response = await admin(edge, "POST", "/keys/generate", body)
    assert_error(response, 400, code, "invalid_request_error")


async def test_generate_batch_trims_prefixes_and_keeps_order(
    make_edge: EdgeFactory, keys_service: RunningKeys
) -> None:
    async with admin_edge(make_edge, keys_service) as edge:
        batch = await admin(
            edge,
            "POST",
            "/keys/generate_batch",
            {"labels": [" b ", "", "a", "   "], "label_prefix": "ci-", "ttl_seconds": 60},
        )
        empty = await admin(edge, "POST", "/keys/generate_batch", {"labels": [" ", ""]})
    assert batch.status_code == 200, batch.text
    keys = batch.json()
    assert [k["label"] for k in keys] == ["ci-b", "ci-a"]
    assert all(set(k) == GENERATED_FIELDS for k in keys)
    assert len({k["id"] for k in keys}) == 2
    error = assert_error(empty, 400, "invalid_request", "invalid_request_error")
    assert error["message"] == "labels must include at least one non-empty entry"


async def test_list_filters(make_edge: EdgeFactory, keys_service: RunningKeys) -> None:
    async with admin_edge(make_edge, keys_service) as edge:
        await admin(edge, "POST", "/keys/generate_batch", {"labels": ["web-1", "web-2", "cli"]})
        everything = (await admin(edge, "GET", "/keys")).json()
        revoked_id = everything[0]["id"]
        await admin(edge, "POST", "/keys/revoke", {"id": revoked_id})
        by_prefix = await admin(edge, "GET", "/keys", label_prefix="web-")
        exact_wins = await admin(edge, "GET", "/keys", label="cli", label_prefix="web-")
        active = await admin(edge, "GET", "/keys", include_revoked="false")
        with_revoked = await admin(edge, "GET", "/keys")
    assert [k["label"] for k in everything] == ["web-1", "web-2", "cli"]
    assert [k["label"] for k in by_prefix.json()] == ["web-1", "web-2"]
    assert [k["label"] for k in exact_wins.json()] == ["cli"]
    assert [k["label"] for k in active.json()] == ["web-2", "cli"]
    assert with_revoked.json()[0]["revoked_at"] is not None


async def test_revoke_evicts_this_edges_cache_at_once(
    make_edge: EdgeFactory, keys_service: RunningKeys
) -> None:
    key = await keys_service.generate()
    async with admin_edge(make_edge, keys_service, keys_cache_ms=60_000) as edge:
        before = await chat(edge, key.token)
        revoked = await admin(edge, "POST", "/keys/revoke", {"id": key.id})
        after = await chat(edge, key.token)
        again = await admin(edge, "POST", "/keys/revoke", {"id": key.id})
        unknown = await admin(edge, "POST", "/keys/revoke", {"id": "0" * 32})
    assert before.status_code == 200
    assert revoked.json() == {"revoked": True, "id": key.id}
    assert_error(after, 401, "api_key_revoked", "authentication_error")
    assert again.status_code == 200 and again.json() == {"revoked": False, "id": key.id}
    assert unknown.json() == {"revoked": False, "id": "0" * 32}


async def test_set_expiration(make_edge: EdgeFactory, keys_service: RunningKeys) -> None:
    key = await keys_service.generate()
    async with admin_edge(make_edge, keys_service, keys_cache_ms=60_000) as edge:
        assert (await chat(edge, key.token)).status_code == 200
        ttl = await admin(edge, "POST", "/keys/set_expiration", {"id": key.id, "ttl_seconds": 600})
        cleared = await admin(edge, "POST", "/keys/set_expiration", {"id": key.id})
        past = int(time.time()) - 5
        expired = await admin(
            edge, "POST", "/keys/set_expiration", {"id": key.id, "expires_at": past}
        )
        after = await chat(edge, key.token)
        unknown = await admin(edge, "POST", "/keys/set_expiration", {"id": "f" * 32})
    now = int(time.time())
    assert ttl.json()["updated"] is True and now + 590 <= ttl.json()["expires_at"] <= now + 600
    assert cleared.json() == {"updated": True, "id": key.id, "expires_at": None}
    assert expired.json() == {"updated": True, "id": key.id, "expires_at": past}
    assert_error(after, 401, "api_key_expired", "authentication_error")
    assert unknown.json() == {"updated": False, "id": "f" * 32}


async def test_expiration_policy_is_the_services(
    make_edge: EdgeFactory, pg_url: str, tmp_path: Any
) -> None:
    from tests.edge.conftest import running_keys

    async with running_keys(pg_url, tmp_path, keys_require_expiration=True) as keys:
        async with admin_edge(make_edge, keys) as edge:
            missing = await admin(edge, "POST", "/keys/generate", {"label": "x"})
            ok = await admin(edge, "POST", "/keys/generate", {"ttl_seconds": 60})
            clear = await admin(edge, "POST", "/keys/set_expiration", {"id": ok.json()["id"]})
    assert_error(missing, 400, "expiration_required", "invalid_request_error")
    assert ok.status_code == 200
    assert_error(clear, 400, "expiration_required", "invalid_request_error")


async def test_keys_service_off_or_down_is_503(make_edge: EdgeFactory) -> None:
    async with admin_edge(make_edge, None) as edge:
        off = await admin(edge, "GET", "/keys")
    async with admin_edge(make_edge, None, keys_addr="127.0.0.1:1") as edge:
        down = await admin(edge, "POST", "/keys/generate", {})
    assert_error(off, 503, "keys_unavailable", "service_unavailable_error")
    assert_error(down, 503, "keys_unavailable", "service_unavailable_error")
    assert down.headers["retry-after"] == "1"
