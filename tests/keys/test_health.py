"""Health follows the database, and the internal token guards every RPC but health."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.grpc_client import check_health, open_channel
from services.common.pb import keys_pb2, keys_pb2_grpc
from services.keys.service import SERVICE_NAME
from tests.conftest import PG_ADMIN_URL
from tests.keys.conftest import StartKeys, sqlite_url


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def wait_health(channel: grpc.aio.Channel, serving: bool) -> None:
    """Follows `Health.Watch` until the background probe has flipped the status."""
    wanted = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    call = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=SERVICE_NAME)
    )
    async for reply in call:
        if reply.status == wanted:
            call.cancel()
            return


@pytest.mark.postgres
async def test_not_serving_while_postgres_refuses_then_back(
    start_keys: StartKeys, pg_url: str
) -> None:
    keys = await start_keys(pg_url)
    database = pg_url.rpartition("/")[2]
    assert (await check_health(keys.channel, SERVICE_NAME))[0]
    assert (await check_health(keys.channel, ""))[0]
    generated = await keys.stub.Generate(keys_pb2.GenerateRequest(label="before"))

    await _admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    await _admin(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
    )
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await keys.stub.Verify(keys_pb2.VerifyRequest(token=generated.token))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        await wait_health(keys.channel, serving=False)
    finally:
        await _admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')

    await wait_health(keys.channel, serving=True)
    reply = await keys.stub.Verify(keys_pb2.VerifyRequest(token=generated.token))
    assert reply.result == keys_pb2.VALID


async def test_internal_token_required_except_for_health(
    start_keys: StartKeys, tmp_path: Path
) -> None:
    token = "i" * 40
    keys = await start_keys(sqlite_url(tmp_path), internal_token=token)
    generated = await keys.stub.Generate(keys_pb2.GenerateRequest())

    for presented in (None, "wrong-token"):
        async with open_channel(keys.addr, presented) as channel:
            serving, _, _ = await check_health(channel, SERVICE_NAME)
            assert serving
            stub = keys_pb2_grpc.KeysStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Verify(keys_pb2.VerifyRequest(token=generated.token))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Generate(keys_pb2.GenerateRequest())
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    listed = await keys.stub.List(keys_pb2.ListRequest())
    assert [k.id for k in listed.keys] == [generated.id]


async def test_health_names_the_service_and_the_server(
    start_keys: StartKeys, tmp_path: Path
) -> None:
    keys = await start_keys(sqlite_url(tmp_path))
    for name in ("", "signalbox.keys.v1.Keys"):
        serving, _, error = await check_health(keys.channel, name)
        assert serving and error is None
