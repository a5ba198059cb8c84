"""deploy/local/nginx.py for tests: a missing nginx or a bad config fails the test (never skips)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

import pytest

from deploy.local.nginx import LocalNginx, NginxError, render_nginx_conf

__all__ = ["LocalNginx", "render_nginx_conf", "run_nginx"]


@asynccontextmanager
async def run_nginx(
    upstreams: Sequence[str],
    port: int,
    *,
    edit: Mapping[str, str] | None = None,
    server_params: str = "",
) -> AsyncIterator[LocalNginx]:
    """The repo's nginx.conf on 127.0.0.1:`port`, proxying to `upstreams` (host:port)."""
    nginx = LocalNginx(upstreams, f"127.0.0.1:{port}", edit or {}, server_params)
    try:
        await nginx.start()
    except NginxError as exc:
        where = "this CI machine (.ci/run must apt-get install nginx)" if _ci() else "this host"
        pytest.fail(f"nginx on {where}: {exc}")
    try:
        yield nginx
    finally:
        await nginx.stop()


def _ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"
