"""Run the real deploy/nginx/nginx.conf with Debian's nginx in front of local processes.

The config is a template (`${SIGNALBOX_NGINX_*}`); `render_nginx_conf` fills it the way the nginx
image's envsubst step does in compose, with an unprivileged port and a private run directory.
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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
NGINX_TEMPLATE = REPO / "deploy" / "nginx" / "nginx.conf"
_PLACEHOLDER = re.compile(r"\$\{(SIGNALBOX_NGINX_[A-Z_]+)\}")


def render_nginx_conf(template: str, values: dict[str, str]) -> str:
    """Substitute exactly the template's placeholders; a missing or unused value is an error."""
    wanted = set(_PLACEHOLDER.findall(template))
    if wanted != set(values):
        raise ValueError(f"template needs {sorted(wanted)}, got {sorted(values)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def nginx_binary() -> str:
    """The nginx executable, or a test failure that says how to get one (never a skip)."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found:
        return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("nginx is not installed on this CI machine; .ci/run must apt-get install nginx")
    pytest.fail(
        "the nginx proxy tests need Debian's nginx: run `sudo apt-get install -y nginx` "
        "(nothing is skipped without it)"
    )


@dataclass
class RunningNginx:
    url: str
    run_dir: Path
    config_path: Path

    def log(self) -> str:
        return (self.run_dir / "nginx.log").read_text(errors="replace")


def prepare_nginx(
    upstreams: list[str], port: int, edit: dict[str, str] | None = None
) -> RunningNginx:
    """Render the config into a fresh run directory and have `nginx -t` accept it.

    `edit` replaces exact snippets of the rendered config, for control experiments; each snippet
    must occur exactly once so an edit can never silently miss.
    """
    binary = nginx_binary()
    # Workers drop privileges when nginx runs as root, so the run dir must be world-traversable.
    run_dir = Path(tempfile.mkdtemp(prefix="signalbox-nginx-"))
    run_dir.chmod(0o755)
    config = render_nginx_conf(
        NGINX_TEMPLATE.read_text(),
        {
            "SIGNALBOX_NGINX_LISTEN": f"127.0.0.1:{port}",
            "SIGNALBOX_NGINX_UPSTREAMS": " ".join(f"server {u};" for u in upstreams),
            "SIGNALBOX_NGINX_RUN_DIR": str(run_dir),
        },
    )
    for old, new in (edit or {}).items():
        if config.count(old) != 1:
            raise ValueError(f"edit target {old!r} occurs {config.count(old)} times")
        config = config.replace(old, new)
    config_path = run_dir / "nginx.conf"
    config_path.write_text(config)
    check = subprocess.run(
        [binary, "-t", "-p", str(run_dir), "-c", str(config_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if check.returncode != 0:
        pytest.fail(f"nginx rejected the rendered config:\n{check.stderr}")
    return RunningNginx(f"http://127.0.0.1:{port}", run_dir, config_path)


def _spawn(running: RunningNginx) -> subprocess.Popen[bytes]:
    prefix, config = str(running.run_dir), str(running.config_path)
    with (running.run_dir / "nginx.log").open("wb") as log:
        return subprocess.Popen(
            [nginx_binary(), "-p", prefix, "-c", config, "-g", "daemon off;"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGQUIT)  # graceful: finish open requests, then exit
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@asynccontextmanager
async def run_nginx(
    upstreams: list[str], port: int, *, edit: dict[str, str] | None = None
) -> AsyncIterator[RunningNginx]:
    """`nginx -g 'daemon off;'` on 127.0.0.1:`port`, proxying to `upstreams` (host:port)."""
    running = await asyncio.to_thread(prepare_nginx, upstreams, port, edit)
    process = await asyncio.to_thread(_spawn, running)
    try:
        await _wait_ready(running, process)
        yield running
    finally:
        await asyncio.to_thread(_stop, process)
        await asyncio.to_thread(shutil.rmtree, running.run_dir, True)


async def _wait_ready(running: RunningNginx, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    async with httpx.AsyncClient(timeout=1.0) as client:
        while True:
            if process.poll() is not None:
                pytest.fail(f"nginx exited with {process.returncode}:\n{running.log()}")
            try:
                if (await client.get(f"{running.url}/_nginx/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"nginx did not answer within 15 s:\n{running.log()}")
            await asyncio.sleep(0.05)
