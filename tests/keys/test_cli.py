"""`signalbox keys …` as an operator runs it: a CLI process against a real keys process on
Postgres, with the internal token from the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.common.grpc_client import open_channel
from services.common.pb import keys_pb2, keys_pb2_grpc
from tests.keys.test_process import INTERNAL_TOKEN, REPO, spawn, wait_serving

pytestmark = pytest.mark.e2e


@pytest.fixture
def keys_addr(tmp_path: Path, free_port: Callable[[], int], pg_url: str) -> Iterator[str]:
    port = free_port()
    process = spawn(tmp_path, port, SIGNALBOX_DATABASE_URL=pg_url)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(30)


def cli(addr: str, *args: str, token: str | None = INTERNAL_TOKEN) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALBOX_")}
    if token is not None:
        env["SIGNALBOX_INTERNAL_TOKEN"] = token
    env["SIGNALBOX_KEYS_ADDR"] = addr
    return subprocess.run(
        [sys.executable, "-m", "services.keys.cli", "keys", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=60,
    )


def ok(result: subprocess.CompletedProcess) -> Any:
    assert result.returncode == 0, result.stderr.decode()
    return orjson.loads(result.stdout)


async def verify(addr: str, token: str) -> int:
    async with open_channel(addr, INTERNAL_TOKEN) as channel:
        reply = await keys_pb2_grpc.KeysStub(channel).Verify(
            keys_pb2.VerifyRequest(token=token), timeout=5
        )
    return reply.result


async def test_create_list_revoke_expire(keys_addr: str) -> None:
    await wait_serving(keys_addr)
    created = ok(
        cli(
            keys_addr,
            "create",
            "--label=ops",
            "--ttl-seconds=3600",
            "--scope=api:chat",
            "--scope=models:gpt-4o*",
            "--rpm=30",
            "--budget-micro=2000000",
            "--budget-period=day",
            "--tenant=acme",
        )
    )
    assert created["label"] == "ops" and created["tenant"] == "acme"
    assert created["scopes"] == ["api:chat", "models:gpt-4o*"]
    assert created["rate_limit"] == {"rpm": 30, "tpm": None}
    assert created["budget"] == {"limit_micro": 2_000_000, "period": "day"}
    assert created["expires_at"] - created["created_at"] == 3600
    assert await verify(keys_addr, created["token"]) == keys_pb2.VALID

    batch = ok(cli(keys_addr, "create", "--labels= b,,a ", "--label-prefix=ci-"))
    assert [k["label"] for k in batch] == ["ci-b", "ci-a"]

    listed = ok(cli(keys_addr, "list"))
    assert [k["label"] for k in listed] == ["ops", "ci-b", "ci-a"]
    assert all("token" not in k for k in listed)
    assert [k["label"] for k in ok(cli(keys_addr, "list", "--label-prefix=ci-"))] == [
        "ci-b",
        "ci-a",
    ]

    assert ok(cli(keys_addr, "revoke", created["id"])) == {"revoked": True, "id": created["id"]}
    assert ok(cli(keys_addr, "revoke", created["id"]))["revoked"] is False
    assert await verify(keys_addr, created["token"]) == keys_pb2.REVOKED
    assert [k["label"] for k in ok(cli(keys_addr, "list", "--active"))] == ["ci-b", "ci-a"]

    target = batch[0]["id"]
    dated = ok(cli(keys_addr, "expire", target, "--ttl-seconds=60"))
    assert dated["updated"] is True and isinstance(dated["expires_at"], int)
    cleared = ok(cli(keys_addr, "expire", target))
    assert cleared == {"updated": True, "id": target, "expires_at": None}
    ok(cli(keys_addr, "expire", target, "--expires-at=1000"))
    assert await verify(keys_addr, batch[0]["token"]) == keys_pb2.EXPIRED
    assert ok(cli(keys_addr, "expire", "f" * 32, "--ttl-seconds=5"))["updated"] is False


async def test_rejections_and_outages_have_distinct_exit_statuses(
    keys_addr: str, free_port: Callable[[], int]
) -> None:
    await wait_serving(keys_addr)
    bad_scope = cli(keys_addr, "create", "--scope=admin:all")
    assert bad_scope.returncode == 2
    assert b"invalid_scope" in bad_scope.stderr and not bad_scope.stdout
    bad_ttl = cli(keys_addr, "create", "--ttl-seconds=0")
    assert bad_ttl.returncode == 2 and b"invalid_ttl" in bad_ttl.stderr
    no_token = cli(keys_addr, "list", token=None)
    assert no_token.returncode == 1 and b"UNAUTHENTICATED" in no_token.stderr
    down = cli(f"127.0.0.1:{free_port()}", "list")
    assert down.returncode == 1 and b"UNAVAILABLE" in down.stderr
