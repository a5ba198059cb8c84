"""Run the real deploy/nginx/nginx.conf with the host's nginx in front of local edge processes.

The config is a template (`${SIGNALBOX_NGINX_*}`); `render_nginx_conf` fills it the way the nginx
image's envsubst step does in compose, with a loopback port and a private run directory, so
`make stack` and the deploy tests exercise the very file the containers use.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
NGINX_TEMPLATE = REPO / "deploy" / "nginx" / "nginx.conf"
# The compose file's per-server parameters, minus `resolve` (loopback addresses never move).
SERVER_PARAMS = "max_fails=3 fail_timeout=10s"
_PLACEHOLDER = re.compile(r"\$\{(SIGNALBOX_NGINX_[A-Z_]+)\}")
_SEARCH_PATH = ("/usr/sbin/nginx", "/usr/local/sbin/nginx")


class NginxError(RuntimeError):
    """nginx is missing, rejected the rendered config, or did not come up."""


def render_nginx_conf(template: str, values: Mapping[str, str]) -> str:
    """Substitute exactly the template's placeholders; a missing or unused value is an error."""
    wanted = set(_PLACEHOLDER.findall(template))
    if wanted != set(values):
        raise ValueError(f"template needs {sorted(wanted)}, got {sorted(values)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def upstream_servers(addrs: Sequence[str], params: str = SERVER_PARAMS) -> str:
    """The `SIGNALBOX_NGINX_UPSTREAMS` value for local `host:port` edges."""
    suffix = f" {params}" if params else ""
    return " ".join(f"server {addr}{suffix};" for addr in addrs)


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in _SEARCH_PATH if os.access(p, os.X_OK)), None)
    if found is None:
        raise NginxError("nginx is not installed: `sudo apt-get install -y nginx` (Debian)")
    return found


@dataclass
class LocalNginx:
    """`nginx -g 'daemon off;'` on `listen` (host:port) proxying to `upstreams` (host:port).

    `edit` replaces exact snippets of the rendered config, for control experiments; each snippet
    must occur exactly once so an edit can never silently miss.
    """

    upstreams: Sequence[str]
    listen: str
    edit: Mapping[str, str] = field(default_factory=dict)
    server_params: str = SERVER_PARAMS
    run_dir: Path = field(init=False)
    config_path: Path = field(init=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "nginx.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def prepare(self) -> None:
        """Render the config into a fresh run directory and have `nginx -t` accept it."""
        binary = nginx_binary()
        # Workers drop privileges when nginx runs as root, so the run dir must be traversable.
        self.run_dir = Path(tempfile.mkdtemp(prefix="signalbox-nginx-"))
        self.run_dir.chmod(0o755)
        config = render_nginx_conf(
            NGINX_TEMPLATE.read_text(),
            {
                "SIGNALBOX_NGINX_LISTEN": self.listen,
                "SIGNALBOX_NGINX_UPSTREAMS": upstream_servers(self.upstreams, self.server_params),
                "SIGNALBOX_NGINX_RUN_DIR": str(self.run_dir),
            },
        )
        for old, new in self.edit.items():
            if config.count(old) != 1:
                raise ValueError(f"edit target {old!r} occurs {config.count(old)} times")
            config = config.replace(old, new)
        self.config_path = self.run_dir / "nginx.conf"
        self.config_path.write_text(config)
        check = subprocess.run(
            [binary, "-t", "-p", str(self.run_dir), "-c", str(self.config_path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise NginxError(f"nginx rejected the rendered config:\n{check.stderr}")

    async def start(self, timeout: float = 15.0) -> None:
        await asyncio.to_thread(self.prepare)
        self._process = await asyncio.to_thread(self._spawn)
        try:
            await self._wait_ready(timeout)
        except BaseException:
            await self.stop()
            raise

    def _spawn(self) -> subprocess.Popen[bytes]:
        argv = [nginx_binary(), "-p", str(self.run_dir), "-c", str(self.config_path)]
        with self.log_path.open("wb") as log:
            return subprocess.Popen(
                [*argv, "-g", "daemon off;"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def _wait_ready(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0) as client:
            while True:
                if self._process.poll() is not None:
                    raise NginxError(f"nginx exited with {self._process.returncode}:\n{self.log()}")
                try:
                    if (await client.get(f"{self.url}/_nginx/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise NginxError(f"nginx did not answer within {timeout} s:\n{self.log()}")
                await asyncio.sleep(0.05)

    async def stop(self, remove: bool = True) -> None:
        """SIGQUIT (graceful: open requests finish), SIGKILL after 10 s; drop the run dir."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGQUIT)
            try:
                await asyncio.to_thread(process.wait, 10)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
        if remove and hasattr(self, "run_dir"):
            await asyncio.to_thread(shutil.rmtree, self.run_dir, True)

    async def __aenter__(self) -> LocalNginx:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
