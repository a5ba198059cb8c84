"""Generate, verify, revoke, list: through real gRPC against Postgres and SQLite."""

from __future__ import annotations

import asyncio

from services.common.pb import keys_pb2
from services.keys.tokens import parse_token
from tests.keys.conftest import RunningKeys, rejected


async def verify(keys: RunningKeys, token: str) -> keys_pb2.VerifyResponse:
    return await keys.stub.Verify(keys_pb2.VerifyRequest(token=token))


async def test_generate_verify_revoke(keys: RunningKeys) -> None:
    generated = await keys.stub.Generate(
        keys_pb2.GenerateRequest(
            label="ci",
            scopes=["api:chat", "models:gpt-4o*"],
            rate_limit=keys_pb2.RateLimit(rpm=60),
            budget=keys_pb2.KeyBudget(limit_micro=5_000_000, period="day"),
            tenant="acme",
            project="search",
        )
    )
    assert generated.token.startswith(f"sk_{generated.id}.")
    secret = generated.token.split(".")[1]
    assert len(generated.id) == 32 and len(secret) == 64
    assert generated.label == "ci" and not generated.HasField("expires_at")

    reply = await verify(keys, generated.token)
    assert reply.result == keys_pb2.VALID
    info = reply.key
    assert info.id == generated.id and info.label == "ci" and not info.HasField("revoked_at")
    assert list(info.scopes) == ["api:chat", "models:gpt-4o*"]
    assert info.rate_limit.rpm == 60 and not info.rate_limit.HasField("tpm")
    assert (info.budget.limit_micro, info.budget.period) == (5_000_000, "day")
    assert (info.tenant, info.project) == ("acme", "search")
    assert info.created_at == generated.created_at

    revoked = await keys.stub.Revoke(keys_pb2.RevokeRequest(id=generated.id))
    assert (revoked.revoked, revoked.id) == (True, generated.id)
    reply = await verify(keys, generated.token)
    assert reply.result == keys_pb2.REVOKED and reply.key.HasField("revoked_at")

    again = await keys.stub.Revoke(keys_pb2.RevokeRequest(id=generated.id))
    assert again.revoked is False


async def test_only_salt_and_hash_are_stored(keys: RunningKeys) -> None:
    generated = await keys.stub.Generate(keys_pb2.GenerateRequest(label="stored"))
    secret = generated.token.split(".")[1]
    assert keys.app.db is not None
    row = await keys.app.db.fetchrow("SELECT * FROM api_keys WHERE id = $1", generated.id)
    assert row is not None
    assert len(row["salt_hex"]) == 32 and len(row["hash_hex"]) == 64
    assert all(secret not in str(value) for value in row.values())


async def test_hash_mismatch_not_found_and_bad_format(keys: RunningKeys) -> None:
    generated = await keys.stub.Generate(keys_pb2.GenerateRequest())
    parsed = parse_token(generated.token)
    assert parsed is not None
    wrong_secret = f"sk_{generated.id}.{'0' * 64}"
    mismatch = await verify(keys, wrong_secret)
    assert mismatch.result == keys_pb2.HASH_MISMATCH and not mismatch.HasField("key")

    unknown = f"sk_{'a' * 32}.{generated.token.split('.')[1]}"
    not_found = await verify(keys, unknown)
    assert not_found.result == keys_pb2.NOT_FOUND and not not_found.HasField("key")

    assert (await verify(keys, generated.token.upper().replace("SK_", "sk_"))).result == (
        keys_pb2.VALID
    )
    for token in ("", "sk_", generated.token[3:], f"{generated.token}.x", "Bearer x"):
        assert (await verify(keys, token)).result == keys_pb2.INVALID_FORMAT, token


async def test_revoke_unknown_or_malformed_id_is_not_an_error(keys: RunningKeys) -> None:
    for key_id in ("0" * 32, "nope", ""):
        reply = await keys.stub.Revoke(keys_pb2.RevokeRequest(id=key_id))
        assert (reply.revoked, reply.id) == (False, key_id)


async def test_list_filters_and_order(keys: RunningKeys) -> None:
    batch = await keys.stub.GenerateBatch(
        keys_pb2.GenerateBatchRequest(labels=["b", "a", "c"], label_prefix="team-")
    )
    other = await keys.stub.Generate(keys_pb2.GenerateRequest(label="Team-x"))
    unlabeled = await keys.stub.Generate(keys_pb2.GenerateRequest())
    await keys.stub.Revoke(keys_pb2.RevokeRequest(id=batch.keys[1].id))

    every = await keys.stub.List(keys_pb2.ListRequest())
    assert [k.id for k in every.keys] == [
        *(k.id for k in batch.keys),
        other.id,
        unlabeled.id,
    ]
    assert not every.keys[4].HasField("label")

    prefixed = await keys.stub.List(keys_pb2.ListRequest(label_prefix="team-"))
    assert [k.label for k in prefixed.keys] == ["team-b", "team-a", "team-c"]

    active = await keys.stub.List(keys_pb2.ListRequest(label_prefix="team-", include_revoked=False))
    assert [k.label for k in active.keys] == ["team-b", "team-c"]

    exact = await keys.stub.List(keys_pb2.ListRequest(label="team-a", label_prefix="Team"))
    assert [k.id for k in exact.keys] == [batch.keys[1].id]
    assert exact.keys[0].HasField("revoked_at")

    wildcard = await keys.stub.List(keys_pb2.ListRequest(label_prefix="team_"))
    assert list(wildcard.keys) == []


async def test_generate_batch_rules(keys: RunningKeys) -> None:
    reply = await keys.stub.GenerateBatch(
        keys_pb2.GenerateBatchRequest(
            labels=["  one ", "", "   ", "two"],
            label_prefix="svc/",
            ttl_seconds=3600,
            scopes=["api:*"],
        )
    )
    assert [k.label for k in reply.keys] == ["svc/one", "svc/two"]
    assert len({k.id for k in reply.keys}) == 2
    assert all(k.expires_at == k.created_at + 3600 for k in reply.keys)
    assert all(list(k.scopes) == ["api:*"] for k in reply.keys)
    for k in reply.keys:
        assert (await verify(keys, k.token)).result == keys_pb2.VALID

    message = await rejected(
        keys.stub.GenerateBatch(keys_pb2.GenerateBatchRequest(labels=[" ", ""])),
        "invalid_request",
    )
    assert message == "labels must include at least one non-empty entry"
    await rejected(
        keys.stub.GenerateBatch(keys_pb2.GenerateBatchRequest(labels=[])), "invalid_request"
    )
    await rejected(
        keys.stub.GenerateBatch(keys_pb2.GenerateBatchRequest(labels=["x"] * 1001)),
        "invalid_request",
    )


async def test_generate_batch_is_all_or_nothing(keys: RunningKeys) -> None:
    await rejected(
        keys.stub.GenerateBatch(
            keys_pb2.GenerateBatchRequest(labels=["ok", "x" * 300], label_prefix="atomic-")
        ),
        "invalid_request",
    )
    await rejected(
        keys.stub.GenerateBatch(keys_pb2.GenerateBatchRequest(labels=["a"], scopes=["api:x"])),
        "invalid_scope",
    )
    assert list((await keys.stub.List(keys_pb2.ListRequest())).keys) == []

    full = await keys.stub.GenerateBatch(
        keys_pb2.GenerateBatchRequest(labels=[f"k{i}" for i in range(1000)])
    )
    assert [k.label for k in full.keys] == [f"k{i}" for i in range(1000)]
    assert len((await keys.stub.List(keys_pb2.ListRequest())).keys) == 1000


async def test_concurrent_generate_gives_distinct_keys(keys: RunningKeys) -> None:
    replies = await asyncio.gather(
        *(keys.stub.Generate(keys_pb2.GenerateRequest(label=f"c{i}")) for i in range(200))
    )
    assert len({r.id for r in replies}) == 200
    assert len({r.token for r in replies}) == 200
    listed = await keys.stub.List(keys_pb2.ListRequest(label_prefix="c"))
    assert {k.id for k in listed.keys} == {r.id for r in replies}


BAD_ATTRIBUTES: list[tuple[dict[str, object], str]] = [
    ({"scopes": ["api:chat", "admin"]}, "invalid_scope"),
    ({"scopes": ["models:"]}, "invalid_scope"),
    ({"rate_limit": keys_pb2.RateLimit(rpm=0)}, "invalid_request"),
    ({"rate_limit": keys_pb2.RateLimit(tpm=-5)}, "invalid_request"),
    ({"budget": keys_pb2.KeyBudget(limit_micro=100, period="week")}, "invalid_request"),
    ({"budget": keys_pb2.KeyBudget(limit_micro=0, period="day")}, "invalid_request"),
    ({"label": "x" * 257}, "invalid_request"),
    ({"tenant": "t" * 257}, "invalid_request"),
]


async def test_generate_rejects_bad_attributes(keys: RunningKeys) -> None:
    for request_fields, error_code in BAD_ATTRIBUTES:
        await rejected(keys.stub.Generate(keys_pb2.GenerateRequest(**request_fields)), error_code)
    assert list((await keys.stub.List(keys_pb2.ListRequest())).keys) == []


async def test_empty_rate_limit_is_no_limit(keys: RunningKeys) -> None:
    generated = await keys.stub.Generate(
        keys_pb2.GenerateRequest(rate_limit=keys_pb2.RateLimit(), scopes=[])
    )
    assert not generated.HasField("rate_limit") and list(generated.scopes) == []
