"""`GET /status` (http-api §6): what this edge is configured to do, with no secrets.

Only fields backed by a running feature are reported; a field appears once the code behind
it exists, so the document never claims more than the process does.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

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


def status_document(runtime: EdgeRuntime) -> dict[str, Any]:
    settings = runtime.settings
    router_addr = settings.dependency_addr("router")
    sink = runtime.sink
    return {
        "name": "signalbox",
        "version": package_version(),
        "proxy_enabled": True,
        "routes": ROUTES,
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
            "system_prompt": runtime.system_prompts.status(),
            "limits": runtime.limiter.describe(),
        },
    }
