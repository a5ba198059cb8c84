"""`python -m services.keys` as a real process: health, reflection, RPCs, SIGTERM, clean logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.common.grpc_client import open_channel
from services.common.pb import keys_pb2, keys_pb2_grpc
from services.keys.service import SERVICE_NAME

pytestmark = pytest.mark.e2e

INTERNAL_TOKEN = "internal-" + "z" * 40
REPO = Path(__file__).resolve().parents[2]


def spawn(tmp_path: Path, port: int, **env_overrides: str) -> subprocess.Popen[bytes]:
    """The service with only our SIGNALBOX_* settings; stderr goes to `tmp_path/keys.stderr`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALBOX_")}
    env.update(
        SIGNALBOX_KEYS_BIND=f"127.0.0.1:{port}",
        SIGNALBOX_DATA_DIR=str(tmp_path / "data"),
        SIGNALBOX_INTERNAL_TOKEN=INTERNAL_TOKEN,
        SIGNALBOX_LOG_LEVEL="DEBUG",
        SIGNALBOX_SHUTDOWN_GRACE_SECONDS="2",
        SIGNALBOX_KEYS_METRICS_BIND="off",  # tests run several keys processes at once
        PYTHONUNBUFFERED="1",
        **env_overrides,
    )
    with (tmp_path / "keys.stderr").open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "services.keys"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def json_log(path: Path) -> list[dict[str, object]]:
    """Every stderr line must be one JSON object."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def keys_process(
    tmp_path: Path, free_port: Callable[[], int]
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = free_port()
    process = spawn(tmp_path, port)
    try:
        yield process, f"127.0.0.1:{port}", tmp_path / "keys.stderr"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def wait_serving(addr: str) -> None:
    async with open_channel(addr) as channel:
        call = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), wait_for_ready=True, timeout=30
        )
        async for reply in call:
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                call.cancel()
                return


async def reflected_services(addr: str) -> set[str]:
    async with open_channel(addr) as channel:
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        await call.done_writing()
        reply = await call.read()
        return {s.name for s in reply.list_services_response.service}


async def test_process_serves_stops_cleanly_and_logs_no_secret(
    keys_process: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    process, addr, stderr_path = keys_process
    await wait_serving(addr)
    assert SERVICE_NAME in await reflected_services(addr)

    async with open_channel(addr, INTERNAL_TOKEN) as channel:
        stub = keys_pb2_grpc.KeysStub(channel)
        generated = await stub.Generate(keys_pb2.GenerateRequest(label="e2e", ttl_seconds=600))
        reply = await stub.Verify(keys_pb2.VerifyRequest(token=generated.token))
        assert reply.result == keys_pb2.VALID
        wrong = f"sk_{generated.id}.{'0' * 64}"
        assert (await stub.Verify(keys_pb2.VerifyRequest(token=wrong))).result == (
            keys_pb2.HASH_MISMATCH
        )
        assert (await stub.Revoke(keys_pb2.RevokeRequest(id=generated.id))).revoked

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0

    stderr = stderr_path.read_text()
    records = json_log(stderr_path)
    messages = {r["message"] for r in records}
    assert {"keys service started", "key generated", "key revoked", "stopped"} <= messages
    assert all(r["service"] == "keys" for r in records)
    assert any(r.get("key_id") == generated.id for r in records)
    secret = generated.token.split(".")[1]
    for leaked in (generated.token, secret, INTERNAL_TOKEN):
        assert leaked not in stderr
    assert (stderr_path.parent / "data" / "signalbox.db").is_file()


def test_unusable_database_url_exits_1_with_a_json_reason(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    process = spawn(tmp_path, free_port(), SIGNALBOX_DATABASE_URL="mysql://db/keys")
    assert process.wait(timeout=30) == 1
    failures = [r for r in json_log(tmp_path / "keys.stderr") if r["level"] == "ERROR"]
    assert [r["message"] for r in failures] == ["keys service failed to start"]
    assert "SIGNALBOX_DATABASE_URL must be" in str(failures[0]["exc_info"])
