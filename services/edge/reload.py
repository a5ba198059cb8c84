"""`POST /reload/<name>` and `/reload/all` (http-api §9): one registry, one reloader per feature.

A feature (MCP, system prompts, routing) registers an async callable that re-reads its config
and returns the §9 body. It raises `ApiError` (400 `config_not_set`, 500 `config_invalid`,
503 when a dependency is down) and must keep its previous config when it fails.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from starlette.responses import Response

from services.edge.admin import admin_router
from services.edge.errors import ApiError, json_response

Reloader = Callable[[], Awaitable[dict[str, Any]]]


class ReloadRegistry:
    """Name → reloader, in registration order (the order `/reload/all` runs them)."""

    def __init__(self) -> None:
        self._reloaders: dict[str, Reloader] = {}

    def register(self, name: str, reloader: Reloader) -> None:
        if name in self._reloaders or name == "all":
            raise ValueError(f"reloader {name!r} registered twice or reserved")
        self._reloaders[name] = reloader

    @property
    def names(self) -> list[str]:
        return list(self._reloaders)

    async def run(self, name: str) -> dict[str, Any]:
        reloader = self._reloaders.get(name)
        if reloader is None:
            raise ApiError(404, "not_found", f"Nothing to reload under {name!r}")
        return await reloader()

    async def run_all(self) -> dict[str, dict[str, Any]]:
        """Every reloader, each failure reported in place: `/reload/all` is always 200."""
        results: dict[str, dict[str, Any]] = {}
        for name, reloader in self._reloaders.items():
            try:
                results[name] = await reloader()
            except ApiError as error:
                results[name] = {"success": False, "message": error.message, "code": error.code}
        return results


router = admin_router("/reload")


@router.post("/all")
async def reload_all(request: Request) -> Response:
    return json_response(await request.app.state.runtime.reloads.run_all())


@router.post("/{name}")
async def reload_one(name: str, request: Request) -> Response:
    return json_response(await request.app.state.runtime.reloads.run(name))
