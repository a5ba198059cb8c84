"""Run the four services as local processes: what `make run` starts and what end-to-end tests drive.

Each service is its own `python -m services.<name>` process (real gRPC over loopback). Children
run in their own session so a terminal Ctrl-C reaches only this supervisor, which then stops them
in order: the edge first (it drains streams and flushes analytics), then the services behind it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
import httpx

from services.common.grpc_client import check_health, open_channel

BACKENDS = ("router", "keys", "analytics")


@dataclass(frozen=True)
class Ports:
    edge: int = 8088
    router: int = 50051
    router_http: int = 8090
    keys: int = 50052
    analytics: int = 50053


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_ports() -> Ports:
    """Free loopback ports for every service, for stacks that run beside others."""
    return Ports(
        edge=free_port(),
        router=free_port(),
        router_http=free_port(),
        keys=free_port(),
        analytics=free_port(),
    )


@dataclass
class _Child:
    name: str
    module: str
    env: Mapping[str, str]
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    log_path: Path
    url: str | None = None


@dataclass
class LocalStack:
    """Start, health-check and stop the services; `env` is layered over os.environ."""

    env: Mapping[str, str] = field(default_factory=dict)
    ports: Ports = field(default_factory=Ports)
    log_dir: Path = Path("./data/logs")
    services: Sequence[str] = (*BACKENDS, "edge")
    host: str = "127.0.0.1"
    _children: dict[str, _Child] = field(default_factory=dict, init=False)

    @property
    def edge_url(self) -> str:
        return f"http://{self.host}:{self.ports.edge}"

    @property
    def router_http_url(self) -> str:
        return f"http://{self.host}:{self.ports.router_http}"

    def addr(self, service: str) -> str:
        return f"{self.host}:{getattr(self.ports, service)}"

    def service_env(self) -> dict[str, str]:
        """Binds and addresses for every service; a service not started is `off` for the edge."""
        p, h = self.ports, self.host
        env = {
            **os.environ,
            "SIGNALBOX_EDGE_BIND": f"{h}:{p.edge}",
            "SIGNALBOX_ROUTER_BIND": f"{h}:{p.router}",
            "SIGNALBOX_ROUTER_HTTP_BIND": f"{h}:{p.router_http}",
            "SIGNALBOX_KEYS_BIND": f"{h}:{p.keys}",
            "SIGNALBOX_ANALYTICS_BIND": f"{h}:{p.analytics}",
            "PYTHONUNBUFFERED": "1",
        }
        for name in BACKENDS:
            env[f"SIGNALBOX_{name.upper()}_ADDR"] = (
                self.addr(name) if name in self.services else "off"
            )
        env.update(self.env)
        return env

    def log_path(self, service: str) -> Path:
        return self.log_dir / f"{service}.log"

    async def start(self, timeout: float = 60.0) -> None:
        """Backends first (concurrently), then the edge once they are SERVING."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = self.service_env()
        backends = [s for s in self.services if s != "edge"]
        try:
            for name in backends:
                self._spawn(name, env)
            await asyncio.gather(*(self._wait_grpc(name, timeout) for name in backends))
            if "edge" in self.services:
                self._spawn("edge", env)
                await self._wait_edge(timeout)
        except BaseException:
            await self.stop()
            raise

    async def start_edge(
        self, name: str, port: int, env: Mapping[str, str] | None = None, timeout: float = 60.0
    ) -> str:
        """One more edge replica (`name`, e.g. `edge-2`) on `port`; returns its URL when ready.

        `env` is layered over the stack's environment (a replica's own spool dir, say).
        """
        if name in self._children:
            raise ValueError(f"{name} is already running")
        bind = f"{self.host}:{port}"
        url = f"http://{bind}"
        replica_env = {**self.service_env(), **(env or {}), "SIGNALBOX_EDGE_BIND": bind}
        self._spawn(name, replica_env, module="edge", url=url)
        try:
            await self._wait_edge(timeout, name)
        except BaseException:
            await self._stop_one(name, timeout=10.0)
            raise
        return url

    def _spawn(
        self, name: str, env: Mapping[str, str], module: str | None = None, url: str | None = None
    ) -> None:
        module = module or name
        path = self.log_path(name)
        log = path.open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{module}"],
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if module == "edge" and url is None:
            url = self.edge_url
        self._children[name] = _Child(name, module, env, process, log, path, url)

    def _check_alive(self, name: str) -> None:
        child = self._children[name]
        if child.process.poll() is not None:
            tail = child.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited with {child.process.returncode}; log tail:\n{tail}")

    async def _wait_grpc(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with open_channel(self.addr(name), self.env.get("SIGNALBOX_INTERNAL_TOKEN")) as ch:
            while True:
                self._check_alive(name)
                serving, _, error = await check_health(ch, timeout=1.0)
                if serving:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not SERVING after {timeout}s ({error})")
                await asyncio.sleep(0.1)

    async def _wait_edge(self, timeout: float, name: str = "edge") -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self._children[name].url, timeout=2.0) as client:
            while True:
                self._check_alive(name)
                try:
                    if (await client.get("/_health/ready")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not ready after {timeout}s")
                await asyncio.sleep(0.1)

    def signal(self, name: str, sig: signal.Signals = signal.SIGTERM) -> None:
        """Send a signal to one service (fault-injection tests kill and restart services)."""
        self._children[name].process.send_signal(sig)

    def pid(self, name: str) -> int:
        return self._children[name].process.pid

    async def wait_exit(self, name: str, timeout: float = 35.0) -> int:
        """Wait for a signalled service to exit (it stays registered until stopped/restarted)."""
        process = self._children[name].process
        return await asyncio.to_thread(process.wait, timeout)

    async def restart(self, name: str, timeout: float = 60.0) -> None:
        """Respawn a service that was stopped or killed, and wait until it is healthy again."""
        child = self._children[name]
        await self._stop_one(name, timeout=10.0)
        self._spawn(name, child.env, module=child.module, url=child.url)
        if child.module == "edge":
            await self._wait_edge(timeout, name)
        else:
            await self._wait_grpc(name, timeout)

    async def stop(self, timeout: float = 35.0) -> dict[str, int | None]:
        """SIGTERM the edges, then the rest; SIGKILL what outlives `timeout`. Returns exit codes."""
        codes: dict[str, int | None] = {}
        for tier in (True, False):  # edges drain and flush before the services behind them stop
            names = [n for n, c in list(self._children.items()) if (c.module == "edge") is tier]
            results = await asyncio.gather(*(self._stop_one(n, timeout) for n in names))
            codes.update(zip(names, results, strict=True))
        return codes

    async def _stop_one(self, name: str, timeout: float) -> int | None:
        child = self._children.pop(name, None)
        if child is None:
            return None
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(child.process.wait, timeout)
            except subprocess.TimeoutExpired:
                child.process.kill()
                await asyncio.to_thread(child.process.wait)
        child.log.close()
        return child.process.returncode

    async def __aenter__(self) -> LocalStack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def issue_first_key(stack: LocalStack, label: str = "make-run") -> str:
    """Generate an API key over the keys gRPC service; the token is shown once, here."""
    from services.common.pb import keys_pb2, keys_pb2_grpc

    async with open_channel(stack.addr("keys"), stack.env.get("SIGNALBOX_INTERNAL_TOKEN")) as ch:
        key = await keys_pb2_grpc.KeysStub(ch).Generate(
            keys_pb2.GenerateRequest(label=label), timeout=5.0
        )
    return key.token


def _demo_upstream_env(port: int) -> dict[str, str]:
    """With no provider configured, `make run` serves from the test suite's mock upstream."""
    return {
        "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
        "OPENAI_API_KEY": "demo-upstream-key",
        "SIGNALBOX_AUTH_MODE": "managed",
    }


def wants_demo_upstream() -> bool:
    """No provider configured in the environment: serve from the demo mock."""
    return not (os.environ.get("OPENAI_API_KEY") or os.environ.get("SIGNALBOX_BACKENDS"))


def start_demo_upstream(port: int, log_dir: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """Spawn the test suite's mock upstream; returns it and the env that points services at it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.mock_upstream", "--port", str(port)],
        stdout=(log_dir / "mock_upstream.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return process, _demo_upstream_env(port)


def stop_demo_upstream(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None:
        process.terminate()
        process.wait(10)


def _banner(stack: LocalStack, admin_token: str, api_key: str, demo: bool) -> str:
    base = f"{stack.edge_url}/v1"
    lines = [
        "",
        "Signalbox is running",
        f"  edge (OpenAI API)  {base}",
        f"  status             {stack.edge_url}/status",
        f"  router HTTP        {stack.router_http_url}",
        f"  gRPC               router {stack.addr('router')}  keys {stack.addr('keys')}  "
        f"analytics {stack.addr('analytics')}",
        f"  logs               {stack.log_dir}/",
        f"  admin token        {admin_token}",
        f"  API key            {api_key}",
    ]
    if demo:
        lines.append("  upstream           demo mock (set OPENAI_API_KEY for a real provider)")
    lines += [
        "",
        "Try it:",
        f"  curl -N {base}/chat/completions -H 'Authorization: Bearer {api_key}' \\",
        "    -H 'Content-Type: application/json' \\",
        '    -d \'{"model":"gpt-4o-mini","stream":true,'
        '"messages":[{"role":"user","content":"Hello"}]}\'',
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


async def _serve(env: dict[str, str], log_dir: Path, admin_token: str, demo: bool) -> int:
    stack = LocalStack(env=env, log_dir=log_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stack.start()
        api_key = await issue_first_key(stack)
        print(_banner(stack, admin_token, api_key, demo), flush=True)
        await stop.wait()
        print("\nstopping…", flush=True)
    except (RuntimeError, TimeoutError, grpc.aio.AioRpcError) as exc:
        print(f"make run failed: {exc}", file=sys.stderr)
        return 1
    finally:
        codes = await stack.stop()
        print("stopped: " + ", ".join(f"{n}={c}" for n, c in codes.items()), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the Signalbox services locally.")
    parser.add_argument("--log-dir", default="./data/logs")
    parser.add_argument("--demo-port", type=int, default=8099, help="mock upstream port (demo)")
    args = parser.parse_args(argv)
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    admin_token = os.environ.get("SIGNALBOX_ADMIN_TOKEN") or secrets.token_urlsafe(36)
    env = {
        "SIGNALBOX_ADMIN_TOKEN": admin_token,
        "SIGNALBOX_AUTH_MODE": os.environ.get("SIGNALBOX_AUTH_MODE", "managed"),
    }
    demo = wants_demo_upstream()
    mock: subprocess.Popen[bytes] | None = None
    if demo:
        mock, demo_env = start_demo_upstream(args.demo_port, log_dir)
        env.update(demo_env)
    try:
        return asyncio.run(_serve(env, log_dir, admin_token, demo))
    finally:
        stop_demo_upstream(mock)


if __name__ == "__main__":
    raise SystemExit(main())
