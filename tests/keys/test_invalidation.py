"""Revoke and SetExpiration publish the key id on `<prefix>keys:invalidate` (real Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from services.common.pb import keys_pb2
from services.keys.invalidation import InvalidationPublisher, channel_name
from tests.keys.conftest import RunningKeys, StartKeys, sqlite_url

pytestmark = pytest.mark.redis


@pytest.fixture
async def subscription(redis_url: str, redis_prefix: str) -> AsyncIterator[aioredis.client.PubSub]:
    client = aioredis.from_url(redis_url)
    pubsub = client.pubsub()
    await pubsub.subscribe(channel_name(redis_prefix))
    assert (await pubsub.get_message(timeout=2))["type"] == "subscribe"
    yield pubsub
    await pubsub.aclose()
    await client.aclose()


async def next_message(pubsub: aioredis.client.PubSub) -> bytes | None:
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    return None if message is None else message["data"]


@pytest.fixture
async def keys(
    start_keys: StartKeys, database_url: str, redis_url: str, redis_prefix: str
) -> RunningKeys:
    return await start_keys(database_url, redis_url=redis_url, redis_key_prefix=redis_prefix)


async def test_revoke_and_set_expiration_publish_the_id(
    keys: RunningKeys, subscription: aioredis.client.PubSub
) -> None:
    """Messages arrive in publish order, so each expected id also proves nothing came before."""
    first = await keys.stub.Generate(keys_pb2.GenerateRequest(label="pub-1"))
    second = await keys.stub.Generate(keys_pb2.GenerateRequest(label="pub-2"))

    await keys.stub.SetExpiration(keys_pb2.SetExpirationRequest(id=second.id, ttl_seconds=9))
    assert await next_message(subscription) == second.id.encode()  # generation published nothing

    await keys.stub.Revoke(keys_pb2.RevokeRequest(id=first.id.upper()))
    assert await next_message(subscription) == first.id.encode()

    await keys.stub.Revoke(keys_pb2.RevokeRequest(id=first.id))  # already revoked
    await keys.stub.SetExpiration(keys_pb2.SetExpirationRequest(id="e" * 32, ttl_seconds=9))
    await keys.stub.Revoke(keys_pb2.RevokeRequest(id=second.id))
    assert await next_message(subscription) == second.id.encode()


async def test_redis_down_does_not_fail_the_revocation(
    start_keys: StartKeys, tmp_path: Path, redis_prefix: str
) -> None:
    keys = await start_keys(
        sqlite_url(tmp_path), redis_url="redis://127.0.0.1:1/0", redis_key_prefix=redis_prefix
    )
    generated = await keys.stub.Generate(keys_pb2.GenerateRequest())
    reply = await keys.stub.Revoke(keys_pb2.RevokeRequest(id=generated.id))
    assert reply.revoked
    verify = await keys.stub.Verify(keys_pb2.VerifyRequest(token=generated.token))
    assert verify.result == keys_pb2.REVOKED


async def test_publisher_uses_the_configured_prefix(
    redis_url: str, redis_prefix: str, subscription: aioredis.client.PubSub
) -> None:
    publisher = InvalidationPublisher(redis_url, redis_prefix)
    assert publisher.channel == f"{redis_prefix}keys:invalidate"
    try:
        await asyncio.wait_for(publisher.publish("a" * 32), 2)
    finally:
        await publisher.close()
    assert await next_message(subscription) == b"a" * 32
