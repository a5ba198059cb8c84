"""A router for in-process benchmarks: loopback ports, no Redis, no KNN, a temp data dir."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from services.router.app import RouterApp
from services.router.settings import RouterSettings


def local_router(tmp: Path, aliases: Mapping[str, Any]) -> RouterApp:
    """Unstarted; `aliases` is written to `tmp` as the alias file."""
    alias_file = tmp / "router_aliases.json"
    alias_file.write_bytes(orjson.dumps(aliases))
    return RouterApp(
        RouterSettings(
            router_bind="127.0.0.1:0",
            router_http_bind="127.0.0.1:0",
            router_aliases=alias_file,
            data_dir=tmp,
            redis_url=None,
            internal_token=None,
            knn_train_path=None,
            shutdown_grace_seconds=1.0,
        )
    )
