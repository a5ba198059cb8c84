"""The compose topology as real processes (deploy/local/topology.py), one per test module.

Two edges, router, keys, analytics, the real Postgres (a database of its own) and Redis (a key
prefix of its own), and nginx with deploy/nginx/nginx.conf, in front of the suite's mock upstream.
Starting it costs seconds, so modules share one; tests that break an edge restart it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis as syncredis

from deploy.local.nginx import NginxError
from deploy.local.postgres import ThrowawayDatabase
from deploy.local.stack import free_port
from deploy.local.topology import Topology
from tests.conftest import PG_ADMIN_URL, REDIS_URL
from tests.mock_upstream.fixture import (  # noqa: F401 (pytest fixtures)
    MockUpstream,
    mock_upstream,
    mock_upstream_server,
)

INTERNAL_TOKEN = "internal-" + "deploy" * 6
ADMIN_TOKEN = "admin-" + "deploy" * 6
PROVIDER_KEY = "sk-upstream-deploy"
T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on its own loop in a worker thread (module fixtures are synchronous)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


@dataclass
class RunningTopology:
    topology: Topology
    api_key: str


def _delete_prefix(prefix: str) -> None:
    client = syncredis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="module")
def topology(
    mock_upstream_server: MockUpstream,  # noqa: F811 (the imported fixture)
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningTopology]:
    from deploy.local.stack import issue_first_key

    work = tmp_path_factory.mktemp("topology")
    database = ThrowawayDatabase(PG_ADMIN_URL, "sbtest_deploy")
    prefix = f"sbtest:{uuid.uuid4().hex[:12]}:"
    url = run_async(database.__aenter__())
    env = {
        "SIGNALBOX_DATABASE_URL": url,
        "SIGNALBOX_REDIS_URL": REDIS_URL,
        "SIGNALBOX_REDIS_KEY_PREFIX": prefix,
        "SIGNALBOX_INTERNAL_TOKEN": INTERNAL_TOKEN,
        "SIGNALBOX_ADMIN_TOKEN": ADMIN_TOKEN,
        "SIGNALBOX_DATA_DIR": str(work / "data"),
        "SIGNALBOX_KNN_INDEX_DIR": str(work / "knn"),
        "SIGNALBOX_AUTH_MODE": "managed",
        "SIGNALBOX_SHUTDOWN_GRACE_SECONDS": "5",
        "SIGNALBOX_LOG_LEVEL": "WARNING",
        "OPENAI_API_KEY": PROVIDER_KEY,
        "OPENAI_BASE_URL": mock_upstream_server.base_url,
    }
    running = Topology(
        env=env, nginx_port=free_port(), log_dir=work / "logs", data_dir=work / "data"
    )
    try:
        try:
            run_async(running.start())
        except NginxError as exc:
            pytest.fail(f"nginx: {exc} (.ci/run installs Debian's nginx)")
        try:
            key = run_async(issue_first_key(running.stack, label="deploy-tests"))
            yield RunningTopology(running, key)
        finally:
            run_async(running.stop())
    finally:
        run_async(database.__aexit__())
        _delete_prefix(prefix)


def log_tail(path: Path, size: int = 3000) -> str:
    return path.read_text(errors="replace")[-size:] if path.exists() else ""
