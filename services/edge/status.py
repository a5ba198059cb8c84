"""`GET /status` (http-api §6): what this edge is configured to do, with no secrets.

Only fields backed by a running feature are reported; a field appears once the code behind
it exists, so the document never claims more than the process does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from services.common.backends import parse_backends
from services.edge.runtime import EdgeRuntime

ROUTES = [
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/models",
    "/models",
    "/convert",
    "/status",
    "/health",
    "/_health/live",
    "/_health/ready",
]


def package_version() -> str:
    try:
        return version("signalbox")
    except PackageNotFoundError:
        return "unknown"


def _route_paths(routes: Iterable[Any]) -> Iterator[str]:
    """Paths of app routes, descending into included routers (kept lazily by FastAPI)."""
    for route in routes:
        path = getattr(route, "path", None)
        if isinstance(path, str) and path:
            yield path
        included = getattr(route, "original_router", None)
        if included is not None:
            prefix = getattr(getattr(route, "include_context", None), "prefix", "") or ""
            yield from (prefix + sub for sub in _route_paths(included.routes))


def served_routes(routes: Iterable[Any], reloads: Iterable[str]) -> list[str]:
    """The app's real paths, `/reload/{name}` expanded to the registered reloaders."""
    served: set[str] = set()
    for path in _route_paths(routes):
        if path == "/reload/{name}":
            served.update(f"/reload/{name}" for name in reloads)
        else:
            served.add(path)
    return sorted(served)


def _routing_stats(runtime: EdgeRuntime) -> dict[str, Any]:
    """What the edge itself knows. Alias and catalog counts live in the router (its
    `RouterAdmin.Reload` reports them); the edge has no RPC to read them, so they are null."""
    settings = runtime.settings
    stats: dict[str, Any] = {
        "aliases": None,
        "knn_aliases": None,
        "prefix_rules": len(parse_backends(settings.backends, settings.upstream_mode)),
        "catalog_models": None,
    }
    return {"stats": stats}


def _config_paths(runtime: EdgeRuntime) -> dict[str, str | None]:
    """Files this edge reads; paths only, never their contents."""
    settings = runtime.settings

    def text(value: object) -> str | None:
        return None if value is None else str(value)

    return {
        "mcp": text(settings.mcp_config),
        "system_prompt": text(settings.system_prompt_config),
        "pricing": text(settings.pricing_config),
        "catalog": text(settings.catalog_path),
    }


def status_document(runtime: EdgeRuntime, routes: list[str] | None = None) -> dict[str, Any]:
    settings = runtime.settings
    router_addr = settings.dependency_addr("router")
    sink = runtime.sink
    return {
        "name": "signalbox",
        "version": package_version(),
        "proxy_enabled": True,
        "routes": routes if routes is not None else ROUTES,
        "router": {
            "enabled": router_addr is not None,
            "mode": "grpc" if router_addr else "off",
            "addr": router_addr,
            "strict": settings.router_strict,
            "timeout_ms": settings.router_timeout_ms,
            "cache_ttl_ms": settings.cache_ttl_ms,
            "privacy_mode": settings.router_privacy_mode,
            "policy_rev": runtime.planner.last_policy_rev,
            "catalog_revision": runtime.catalog.revision,
        },
        "features": {
            "auth": {
                "mode": settings.auth_mode,
                "managed": settings.auth_mode == "managed",
                "openai_key_present": settings.openai_api_key is not None,
                "key_store_available": runtime.authenticator.key_store_available,
            },
            "analytics": {
                "enabled": sink is not None,
                "stats": sink.stats() if sink is not None else None,
            },
            "pricing": {"models_count": len(runtime.prices), "source": runtime.prices.source},
            "mcp": runtime.mcp.status(),
            "routing": _routing_stats(runtime),
            "system_prompt": runtime.system_prompts.status(),
            "limits": runtime.limiter.describe(),
        },
        "config_paths": _config_paths(runtime),
    }
