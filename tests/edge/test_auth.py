"""Managed auth against the real keys service (keys.md §3): mapping, cache, provider keys."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from services.common import metrics
from services.common.pb import keys_pb2
from tests.edge.conftest import CHAT, EdgeFactory, RunningKeys, running_keys
from tests.edge.test_errors import assert_error
from tests.mock_upstream.fixture import MockUpstream, closed_port_url

PROVIDER_KEY = "sk-provider-secret"


def managed(keys: RunningKeys | None = None, **extra: object) -> dict[str, object]:
    return {
        "auth_mode": "managed",
        "openai_api_key": PROVIDER_KEY,
        "keys_addr": keys.addr if keys else "off",
        **extra,
    }


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_valid_key_uses_provider_key_upstream(
    make_edge: EdgeFactory, keys_service: RunningKeys, mock_upstream: MockUpstream
) -> None:
    key = await keys_service.generate(label="team-a", tenant="acme")
    async with make_edge(**managed(keys_service)) as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json=CHAT, headers=bearer(key.token)
        )
        # An upstream that rejects the provider key is our misconfiguration, not the client's.
        rejected = await edge.client.post(
            "/v1/chat/completions",
            json={**CHAT, "model": "mock-fail-401"},
            headers=bearer(key.token),
        )
    assert_error(rejected, 502, "upstream_auth_failed", "upstream_error")
    assert response.status_code == 200, response.text
    seen = (await mock_upstream.requests())[0]
    assert seen["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"
    event = edge.events[0]
    assert event["auth"] == {
        "authenticated": True,
        "api_key_id": key.id,
        "api_key_label": "team-a",
        "auth_method": "managed",
    }


async def test_unknown_malformed_and_forged_keys_are_401(
    make_edge: EdgeFactory, keys_service: RunningKeys
) -> None:
    key = await keys_service.generate()
    forged = key.token[:-4] + ("0000" if not key.token.endswith("0000") else "1111")
    unknown = "sk_" + "0" * 32 + "." + "a" * 64
    async with make_edge(**managed(keys_service)) as edge:
        for token in ("not-a-key", unknown, forged):
            response = await edge.client.post(
                "/v1/chat/completions", json=CHAT, headers=bearer(token)
            )
            error = assert_error(response, 401, "invalid_api_key", "authentication_error")
            assert error["message"] == "Invalid API key"


async def test_revoked_and_expired_keys(make_edge: EdgeFactory, keys_service: RunningKeys) -> None:
    revoked = await keys_service.generate()
    await keys_service.stub.Revoke(keys_pb2.RevokeRequest(id=revoked.id), timeout=5)
    expiring = await keys_service.generate(expires_at=int(time.time()) + 1)
    async with make_edge(**managed(keys_service)) as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json=CHAT, headers=bearer(revoked.token)
        )
        error = assert_error(response, 401, "api_key_revoked", "authentication_error")
        assert error["message"] == "API key revoked"
        await keys_service.stub.SetExpiration(
            keys_pb2.SetExpirationRequest(id=expiring.id, expires_at=int(time.time()) - 1),
            timeout=5,
        )
        response = await edge.client.post(
            "/v1/chat/completions", json=CHAT, headers=bearer(expiring.token)
        )
        assert_error(response, 401, "api_key_expired", "authentication_error")


async def test_valid_result_is_cached_until_ttl(
    make_edge: EdgeFactory, keys_service: RunningKeys
) -> None:
    key = await keys_service.generate()
    async with make_edge(**managed(keys_service, keys_cache_ms=60_000)) as edge:
        first = await edge.client.post("/v1/chat/completions", json=CHAT, headers=bearer(key.token))
        await keys_service.stub.Revoke(keys_pb2.RevokeRequest(id=key.id), timeout=5)
        cached = await edge.client.post(
            "/v1/chat/completions", json=CHAT, headers=bearer(key.token)
        )
    assert first.status_code == cached.status_code == 200
    async with make_edge(**managed(keys_service, keys_cache_ms=0)) as edge:
        fresh = await edge.client.post("/v1/chat/completions", json=CHAT, headers=bearer(key.token))
    assert_error(fresh, 401, "api_key_revoked", "authentication_error")


async def test_a_cold_cache_burst_makes_one_verify_call(
    make_edge: EdgeFactory, keys_service: RunningKeys
) -> None:
    key = await keys_service.generate()
    verifies = metrics.KEY_VERIFY.collect()[0]
    before = _histogram_count(verifies)
    async with make_edge(**managed(keys_service, keys_cache_ms=60_000)) as edge:
        responses = await asyncio.gather(
            *(
                edge.client.post("/v1/chat/completions", json=CHAT, headers=bearer(key.token))
                for _ in range(40)
            )
        )
    assert [r.status_code for r in responses] == [200] * 40
    assert _histogram_count(metrics.KEY_VERIFY.collect()[0]) - before == 1


def _histogram_count(metric) -> float:  # type: ignore[no-untyped-def]
    return next(s.value for s in metric.samples if s.name.endswith("_count"))


async def test_scopes_are_enforced(make_edge: EdgeFactory, keys_service: RunningKeys) -> None:
    chat_only = await keys_service.generate(scopes=["api:responses"])
    model_glob = await keys_service.generate(scopes=["models:gpt-4o*"])
    async with make_edge(**managed(keys_service)) as edge:
        wrong_api = await edge.client.post(
            "/v1/chat/completions", json=CHAT, headers=bearer(chat_only.token)
        )
        wrong_model = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "o1"}, headers=bearer(model_glob.token)
        )
        allowed = await edge.client.post(
            "/v1/chat/completions", json=CHAT, headers=bearer(model_glob.token)
        )
    assert_error(wrong_api, 403, "insufficient_scope", "permission_error")
    error = assert_error(wrong_model, 403, "insufficient_scope", "permission_error")
    assert error["param"] == "model"
    assert allowed.status_code == 200


async def test_keys_unreachable_is_503(make_edge: EdgeFactory) -> None:
    async with make_edge(**managed(keys_addr=closed_port_url()[7:-3])) as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json=CHAT, headers=bearer("sk_" + "1" * 32 + "." + "2" * 64)
        )
    assert_error(response, 503, "keys_unavailable", "service_unavailable_error")
    assert response.headers["retry-after"] == "1"


async def test_keys_off_in_managed_mode_is_503(make_edge: EdgeFactory) -> None:
    async with make_edge(**managed()) as edge:
        response = await edge.client.post("/v1/chat/completions", json=CHAT, headers=bearer("x"))
    assert_error(response, 503, "keys_unavailable", "service_unavailable_error")


async def test_revocation_broadcast_evicts_the_cached_verification(
    make_edge: EdgeFactory, pg_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    redis = {"redis_url": redis_url, "redis_key_prefix": redis_prefix}
    async with running_keys(pg_url, tmp_path, **redis) as keys:
        key = await keys.generate()
        async with make_edge(**managed(keys, keys_cache_ms=600_000, **redis)) as edge:
            listener = edge.runtime.key_invalidation
            assert listener is not None
            await asyncio.wait_for(listener.subscribed.wait(), 10)
            ok = await edge.client.post(
                "/v1/chat/completions", json=CHAT, headers=bearer(key.token)
            )
            assert ok.status_code == 200
            await keys.stub.Revoke(keys_pb2.RevokeRequest(id=key.id), timeout=5)
            for _ in range(100):  # pub/sub delivery is asynchronous but quick
                response = await edge.client.post(
                    "/v1/chat/completions", json=CHAT, headers=bearer(key.token)
                )
                if response.status_code != 200:
                    break
                await asyncio.sleep(0.05)
    assert_error(response, 401, "api_key_revoked", "authentication_error")
