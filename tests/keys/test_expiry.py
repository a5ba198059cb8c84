"""Expiry policy (keys §5) and set_expiration (§6) through gRPC, with a settable clock."""

from __future__ import annotations

import pytest

from services.common.pb import keys_pb2
from services.keys.expiry import EXPIRATION_REQUIRED_MESSAGE, MAX_EXPIRES_AT
from tests.keys.conftest import FakeClock, RunningKeys, StartKeys, rejected

NOW = 1_800_000_000


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW + 0.25)


@pytest.fixture
async def keys(start_keys: StartKeys, database_url: str, clock: FakeClock) -> RunningKeys:
    return await start_keys(database_url, clock=clock)


async def result(keys: RunningKeys, token: str) -> int:
    return (await keys.stub.Verify(keys_pb2.VerifyRequest(token=token))).result


async def test_expired_from_the_exact_second(keys: RunningKeys, clock: FakeClock) -> None:
    generated = await keys.stub.Generate(keys_pb2.GenerateRequest(expires_at=NOW + 10))
    assert (generated.created_at, generated.expires_at) == (NOW, NOW + 10)
    clock.now = NOW + 9.999
    assert await result(keys, generated.token) == keys_pb2.VALID
    clock.now = NOW + 10
    reply = await keys.stub.Verify(keys_pb2.VerifyRequest(token=generated.token))
    assert reply.result == keys_pb2.EXPIRED and reply.key.expires_at == NOW + 10


async def test_ttl_counts_from_creation(keys: RunningKeys, clock: FakeClock) -> None:
    generated = await keys.stub.Generate(keys_pb2.GenerateRequest(ttl_seconds=60))
    assert generated.expires_at == NOW + 60
    clock.now = NOW + 60
    assert await result(keys, generated.token) == keys_pb2.EXPIRED


async def test_expires_at_wins_over_ttl(keys: RunningKeys) -> None:
    generated = await keys.stub.Generate(
        keys_pb2.GenerateRequest(expires_at=NOW + 5, ttl_seconds=999)
    )
    assert generated.expires_at == NOW + 5


async def test_past_expires_at_is_rejected(keys: RunningKeys) -> None:
    for expires_at in (NOW, NOW - 1, 0):
        message = await rejected(
            keys.stub.Generate(keys_pb2.GenerateRequest(expires_at=expires_at)),
            "invalid_expiration",
        )
        assert message == "expires_at must be in the future"
        await rejected(
            keys.stub.GenerateBatch(
                keys_pb2.GenerateBatchRequest(labels=["a"], expires_at=expires_at)
            ),
            "invalid_expiration",
        )


async def test_expiry_beyond_year_9999_is_rejected(keys: RunningKeys) -> None:
    await rejected(
        keys.stub.Generate(keys_pb2.GenerateRequest(expires_at=MAX_EXPIRES_AT + 1)),
        "invalid_expiration",
    )
    await rejected(keys.stub.Generate(keys_pb2.GenerateRequest(ttl_seconds=2**62)), "invalid_ttl")


async def test_ttl_below_one_is_rejected(keys: RunningKeys) -> None:
    for ttl in (0, -1):
        await rejected(keys.stub.Generate(keys_pb2.GenerateRequest(ttl_seconds=ttl)), "invalid_ttl")
    assert list((await keys.stub.List(keys_pb2.ListRequest())).keys) == []


async def test_default_ttl_applies_when_nothing_is_given(
    start_keys: StartKeys, database_url: str, clock: FakeClock
) -> None:
    keys = await start_keys(database_url, clock=clock, keys_default_ttl_seconds=300)
    assert (await keys.stub.Generate(keys_pb2.GenerateRequest())).expires_at == NOW + 300
    assert (await keys.stub.Generate(keys_pb2.GenerateRequest(ttl_seconds=5))).expires_at == (
        NOW + 5
    )
    batch = await keys.stub.GenerateBatch(keys_pb2.GenerateBatchRequest(labels=["a", "b"]))
    assert [k.expires_at for k in batch.keys] == [NOW + 300, NOW + 300]


async def test_required_expiration(
    start_keys: StartKeys, database_url: str, clock: FakeClock
) -> None:
    keys = await start_keys(database_url, clock=clock, keys_require_expiration=True)
    message = await rejected(keys.stub.Generate(keys_pb2.GenerateRequest()), "expiration_required")
    assert message == EXPIRATION_REQUIRED_MESSAGE
    await rejected(
        keys.stub.GenerateBatch(keys_pb2.GenerateBatchRequest(labels=["a"])),
        "expiration_required",
    )
    generated = await keys.stub.Generate(keys_pb2.GenerateRequest(ttl_seconds=10))
    await rejected(
        keys.stub.SetExpiration(keys_pb2.SetExpirationRequest(id=generated.id)),
        "expiration_required",
    )
    listed = await keys.stub.List(keys_pb2.ListRequest())
    assert [k.expires_at for k in listed.keys] == [NOW + 10]


async def test_required_with_default_ttl_or_allowance(
    start_keys: StartKeys, database_url: str, clock: FakeClock
) -> None:
    with_default = await start_keys(
        database_url, clock=clock, keys_require_expiration=True, keys_default_ttl_seconds=60
    )
    assert (await with_default.stub.Generate(keys_pb2.GenerateRequest())).expires_at == NOW + 60
    allowed = await start_keys(
        database_url, clock=clock, keys_require_expiration=True, keys_allow_no_expiration=True
    )
    assert not (await allowed.stub.Generate(keys_pb2.GenerateRequest())).HasField("expires_at")


async def test_set_expiration(keys: RunningKeys, clock: FakeClock) -> None:
    generated = await keys.stub.Generate(keys_pb2.GenerateRequest())

    reply = await keys.stub.SetExpiration(
        keys_pb2.SetExpirationRequest(id=generated.id, ttl_seconds=30)
    )
    assert (reply.updated, reply.id, reply.expires_at) == (True, generated.id, NOW + 30)
    assert await result(keys, generated.token) == keys_pb2.VALID

    reply = await keys.stub.SetExpiration(
        keys_pb2.SetExpirationRequest(id=generated.id, expires_at=NOW - 100, ttl_seconds=30)
    )
    assert reply.updated and reply.expires_at == NOW - 100
    assert await result(keys, generated.token) == keys_pb2.EXPIRED

    reply = await keys.stub.SetExpiration(keys_pb2.SetExpirationRequest(id=generated.id))
    assert reply.updated and not reply.HasField("expires_at")
    assert await result(keys, generated.token) == keys_pb2.VALID
    listed = await keys.stub.List(keys_pb2.ListRequest())
    assert not listed.keys[0].HasField("expires_at")


async def test_set_expiration_unknown_and_invalid(keys: RunningKeys) -> None:
    reply = await keys.stub.SetExpiration(keys_pb2.SetExpirationRequest(id="f" * 32, ttl_seconds=5))
    assert (reply.updated, reply.id, reply.HasField("expires_at")) == (False, "f" * 32, False)
    generated = await keys.stub.Generate(keys_pb2.GenerateRequest())
    await rejected(
        keys.stub.SetExpiration(keys_pb2.SetExpirationRequest(id=generated.id, ttl_seconds=0)),
        "invalid_ttl",
    )
    await rejected(
        keys.stub.SetExpiration(keys_pb2.SetExpirationRequest(id=generated.id, expires_at=-1)),
        "invalid_expiration",
    )
