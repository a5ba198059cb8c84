"""The compose topology as local processes: `make stack` and the deploy tests' fixture.

deploy/compose/docker-compose.yml without Docker: router, keys and analytics, two edge replicas
(each with its own analytics spool, like the compose volumes), real Postgres and Redis, and the
host's nginx running the very same deploy/nginx/nginx.conf in front of the edges.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local.nginx import LocalNginx, NginxError
from deploy.local.postgres import DEFAULT_ADMIN_URL, ensure_database
from deploy.local.stack import (
    BACKENDS,
    LocalStack,
    Ports,
    free_port,
    free_ports,
    issue_first_key,
    start_demo_upstream,
    stop_demo_upstream,
    wants_demo_upstream,
)

EDGE_REPLICAS = 2


@dataclass
class Topology:
    """Backends, `edges` edge replicas and nginx; `env` must name the database and Redis.

    nginx listens on `nginx_port`; edge `edge-<i>` on `edge_ports[i-1]` (free ports if empty).
    """

    env: Mapping[str, str]
    nginx_port: int
    log_dir: Path
    data_dir: Path
    ports: Ports = field(default_factory=free_ports)
    edge_ports: Sequence[int] = ()
    edges: int = EDGE_REPLICAS
    host: str = "127.0.0.1"
    stack: LocalStack = field(init=False)
    nginx: LocalNginx | None = field(default=None, init=False)
    edge_urls: dict[str, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.edge_ports = list(self.edge_ports) or [free_port() for _ in range(self.edges)]
        if len(self.edge_ports) != self.edges:
            raise ValueError(f"{self.edges} edges need {self.edges} ports")
        self.stack = LocalStack(
            env=self.env, ports=self.ports, log_dir=self.log_dir, services=BACKENDS, host=self.host
        )

    @property
    def url(self) -> str:
        """The one public entry point, like compose's only published port."""
        return f"http://{self.host}:{self.nginx_port}"

    @property
    def edge_names(self) -> list[str]:
        return [f"edge-{i}" for i in range(1, self.edges + 1)]

    def edge_addr(self, name: str) -> str:
        return self.edge_urls[name].removeprefix("http://")

    async def start(self, timeout: float = 90.0) -> None:
        await self.stack.start(timeout)
        try:
            urls = await asyncio.gather(
                *(
                    self.stack.start_edge(name, port, self._replica_env(name), timeout)
                    for name, port in zip(self.edge_names, self.edge_ports, strict=True)
                )
            )
            self.edge_urls = dict(zip(self.edge_names, urls, strict=True))
            addrs = [self.edge_addr(name) for name in self.edge_names]
            self.nginx = LocalNginx(addrs, f"{self.host}:{self.nginx_port}")
            await self.nginx.start()
        except BaseException:
            await self.stop()
            raise

    def _replica_env(self, name: str) -> dict[str, str]:
        """Each replica spools undelivered analytics into its own directory."""
        return {"SIGNALBOX_ANALYTICS_SPOOL_DIR": str(self.data_dir / name / "spool")}

    async def stop(self) -> dict[str, int | None]:
        """nginx first (no new requests), then the edges drain, then the services behind them."""
        if self.nginx is not None:
            await self.nginx.stop()
        return await self.stack.stop()

    async def __aenter__(self) -> Topology:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _banner(topology: Topology, admin_token: str, api_key: str, demo: bool) -> str:
    lines = [
        "",
        "Signalbox compose topology is running (local processes)",
        f"  nginx (OpenAI API)  {topology.url}/v1",
        *(f"  {name:<19} {url}" for name, url in topology.edge_urls.items()),
        f"  gRPC                router {topology.stack.addr('router')}  keys "
        f"{topology.stack.addr('keys')}  analytics {topology.stack.addr('analytics')}",
        f"  logs                {topology.log_dir}/",
        f"  admin token         {admin_token}",
        f"  API key             {api_key}",
    ]
    if demo:
        lines.append("  upstream            demo mock (set OPENAI_API_KEY for a real provider)")
    lines += ["", "Ctrl-C stops everything."]
    return "\n".join(lines)


async def _serve(args: argparse.Namespace, env: dict[str, str], demo: bool) -> int:
    env["SIGNALBOX_DATABASE_URL"] = await ensure_database(args.pg_admin_url, args.database)
    topology = Topology(
        env=env,
        nginx_port=args.port,
        log_dir=Path(args.log_dir),
        data_dir=Path(args.data_dir),
        edges=args.edges,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await topology.start()
        api_key = await issue_first_key(topology.stack, label="make-stack")
        print(_banner(topology, env["SIGNALBOX_ADMIN_TOKEN"], api_key, demo), flush=True)
        await stop.wait()
        print("\nstopping…", flush=True)
    except (RuntimeError, TimeoutError, NginxError) as exc:
        print(f"make stack failed: {exc}", file=sys.stderr)
        return 1
    finally:
        codes = await topology.stop()
        print("stopped: " + ", ".join(f"{n}={c}" for n, c in codes.items()), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the compose topology as local processes.")
    parser.add_argument("--port", type=int, default=8080, help="nginx listen port")
    parser.add_argument("--edges", type=int, default=EDGE_REPLICAS)
    parser.add_argument("--pg-admin-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--database", default="signalbox_stack", help="created if missing")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--log-dir", default="./data/stack/logs")
    parser.add_argument("--data-dir", default="./data/stack")
    parser.add_argument("--demo-port", type=int, default=8099, help="mock upstream port (demo)")
    args = parser.parse_args(argv)
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    env = {
        "SIGNALBOX_ADMIN_TOKEN": os.environ.get("SIGNALBOX_ADMIN_TOKEN")
        or secrets.token_urlsafe(36),
        "SIGNALBOX_INTERNAL_TOKEN": os.environ.get("SIGNALBOX_INTERNAL_TOKEN")
        or secrets.token_urlsafe(32),
        "SIGNALBOX_AUTH_MODE": os.environ.get("SIGNALBOX_AUTH_MODE", "managed"),
        "SIGNALBOX_REDIS_URL": args.redis_url,
        "SIGNALBOX_REDIS_KEY_PREFIX": "signalbox-stack:",
        "SIGNALBOX_DATA_DIR": args.data_dir,
    }
    demo = wants_demo_upstream()
    mock: subprocess.Popen[bytes] | None = None
    if demo:
        mock, demo_env = start_demo_upstream(args.demo_port, Path(args.log_dir))
        env.update(demo_env)
    try:
        return asyncio.run(_serve(args, env, demo))
    finally:
        stop_demo_upstream(mock)


if __name__ == "__main__":
    raise SystemExit(main())
