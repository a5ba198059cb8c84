"""The things the overhead bench sends load to: the mock itself, Signalbox, LiteLLM.

Each gateway starts as real processes on free loopback ports in front of the same mock
upstream, hands back a `Target` (URL + auth header) and names its process groups so the
bench can charge CPU and RSS to the right place.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol

import httpx
import orjson
import psutil

from bench import litellm_env
from bench.load import Target
from bench.process_tree import tree
from deploy.local.postgres import ThrowawayDatabase
from deploy.local.stack import LocalStack, free_port, free_ports, issue_first_key

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
CHAT_PATH = "/v1/chat/completions"
MODELS = ("bench-lat0", "bench-lat50")


class Gateway(Protocol):
    """Started with `async with`; `processes()` is re-read at each snapshot."""

    name: str

    async def __aenter__(self) -> Target: ...

    async def __aexit__(self, *exc: object) -> None: ...

    def processes(self) -> dict[str, list[psutil.Process]]: ...


class Server:
    """One HTTP server process: spawned, waited on until `ready_path` answers 200, stopped."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        ready_path: str,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name, self.argv, self.port, self.ready_path = name, list(argv), port, ready_path
        self.env = dict(env) if env is not None else dict(os.environ)
        self.cwd = cwd  # where `-m <module>` is imported from (another checkout, say)
        self.log_path = log_dir / f"{name}.log"
        self.process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ps(self) -> psutil.Process:
        assert self.process is not None, f"{self.name} is not running"
        return psutil.Process(self.process.pid)

    async def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as client:
            while True:
                if self.process.returncode is not None:
                    tail = self.log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{self.name} exited {self.process.returncode}:\n{tail}")
                try:
                    if (await client.get(self.ready_path)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not ready after {READY_TIMEOUT_S}s")
                await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def fast_mock(log_dir: Path, chunks: int, chunk_gap_ms: float) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "bench.mock_upstream_fast", "--port", str(port)]
    argv += ["--chunks", str(chunks), "--chunk-gap-ms", str(chunk_gap_ms)]
    return Server("mock_upstream_fast", argv, port, "/health", log_dir)


def suite_mock(log_dir: Path) -> Server:
    """The test suite's mock (`tests/mock_upstream`), measured only to compare its own cost."""
    port = free_port()
    argv = [sys.executable, "-m", "tests.mock_upstream", "--port", str(port)]
    return Server("mock_upstream_tests", argv, port, "/_mock/health", log_dir)


class Direct:
    """No gateway: the load generator talks to the mock, the baseline for every overhead."""

    name = "direct"

    def __init__(self, upstream: Server) -> None:
        self.upstream = upstream

    async def __aenter__(self) -> Target:
        return Target(self.name, self.upstream.url + CHAT_PATH, {"authorization": "Bearer x"})

    async def __aexit__(self, *exc: object) -> None:
        return None

    def processes(self) -> dict[str, list[psutil.Process]]:
        return {}


class Signalbox:
    """The full stack as real processes: managed key, router plan, analytics on.

    Storage is the embedded SQLite unless `postgres_admin_url` is given, then a throwaway
    Postgres database. The upstream is the router's default upstream in chat mode.
    """

    name = "signalbox"
    SERVICES = ("edge", "router", "keys", "analytics")

    def __init__(self, upstream: Server, work_dir: Path, postgres_admin_url: str | None) -> None:
        self.upstream, self.work_dir = upstream, work_dir
        self.postgres = (
            ThrowawayDatabase(postgres_admin_url, "signalbox_bench") if postgres_admin_url else None
        )
        self.stack: LocalStack | None = None

    def _env(self, database_url: str) -> dict[str, str]:
        data_dir = self.work_dir / "signalbox-data"
        return {
            "SIGNALBOX_AUTH_MODE": "managed",
            "SIGNALBOX_UPSTREAM_MODE": "chat",
            "OPENAI_BASE_URL": self.upstream.url + "/v1",
            "OPENAI_API_KEY": "sk-bench-" + secrets.token_hex(16),
            "SIGNALBOX_INTERNAL_TOKEN": secrets.token_urlsafe(32),
            "SIGNALBOX_DATABASE_URL": database_url,
            "SIGNALBOX_REDIS_URL": "",
            "SIGNALBOX_DATA_DIR": str(data_dir),
            "SIGNALBOX_ANALYTICS_SPOOL_DIR": str(data_dir / "spool"),
            "SIGNALBOX_LOG_LEVEL": "WARNING",
        }

    async def __aenter__(self) -> Target:
        database_url = await self.postgres.__aenter__() if self.postgres else ""
        log_dir = self.work_dir / "signalbox-logs"
        self.stack = LocalStack(env=self._env(database_url), ports=free_ports(), log_dir=log_dir)
        try:
            await self.stack.start(timeout=READY_TIMEOUT_S)
            token = await issue_first_key(self.stack, label="bench")
        except BaseException:
            await self.__aexit__()
            raise
        auth = {"authorization": f"Bearer {token}"}
        return Target(self.name, self.stack.edge_url + CHAT_PATH, auth)

    async def __aexit__(self, *exc: object) -> None:
        if self.stack is not None:
            await self.stack.stop()
            self.stack = None
        if self.postgres is not None:
            await self.postgres.__aexit__()

    def processes(self) -> dict[str, list[psutil.Process]]:
        """The stack's children of this process, found by their `-m services.<name>` argv."""
        groups: dict[str, list[psutil.Process]] = {}
        for child in psutil.Process().children():
            try:
                argv = child.cmdline()
            except psutil.NoSuchProcess:
                continue
            for service in self.SERVICES:
                if f"services.{service}" in argv:
                    groups[service] = tree(child)
        return groups


class LiteLLM:
    """LiteLLM proxy, one worker, from its own venv: same mock, random master key, no DB."""

    name = "litellm"

    def __init__(self, upstream: Server, work_dir: Path) -> None:
        self.upstream, self.work_dir = upstream, work_dir
        self.master_key = "sk-" + secrets.token_hex(24)
        self.server: Server | None = None

    def _config(self) -> Path:
        """LiteLLM reads YAML; JSON is YAML, so orjson writes it."""
        upstream_key = "sk-bench-" + secrets.token_hex(16)
        models = [
            {
                "model_name": model,
                "litellm_params": {
                    "model": f"openai/{model}",
                    "api_base": self.upstream.url + "/v1",
                    "api_key": upstream_key,
                },
            }
            for model in MODELS
        ]
        config = {"model_list": models, "general_settings": {"master_key": self.master_key}}
        path = self.work_dir / "litellm-config.yaml"
        path.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))
        return path

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"})
        return env

    async def __aenter__(self) -> Target:
        cli = await asyncio.to_thread(litellm_env.ensure)
        port = free_port()
        argv = [str(cli), "--config", str(self._config()), "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--num_workers", "1"]
        self.server = Server(
            "litellm", argv, port, "/health/liveliness", self.work_dir, env=self._env()
        )
        await self.server.start()
        auth = {"authorization": f"Bearer {self.master_key}"}
        return Target(self.name, self.server.url + CHAT_PATH, auth)

    async def __aexit__(self, *exc: object) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    def processes(self) -> dict[str, list[psutil.Process]]:
        return {"litellm": tree(self.server.ps())} if self.server else {}
