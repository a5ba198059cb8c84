"""Schema 1.1 response headers (router-schema §1); gRPC sends the same as initial metadata."""

from __future__ import annotations

import time
from collections.abc import Sequence

from services.router.errors import SCHEMA_VERSION
from services.router.planner import PlanResult


def common_headers(policy_rev: str, started: float) -> dict[str, str]:
    """On every response: schema, latency since `started` (perf_counter), config revision."""
    return {
        "router-schema": SCHEMA_VERSION,
        "router-latency": str(round((time.perf_counter() - started) * 1000)),
        "config-revision": policy_rev,
    }


def invalidate_headers(invalidations: Sequence[str]) -> dict[str, str]:
    return {"x-route-invalidate": ", ".join(invalidations)} if invalidations else {}


def plan_headers(result: PlanResult, invalidations: Sequence[str]) -> dict[str, str]:
    plan = result.plan
    headers = {
        "x-route-cache": result.cache_status,
        "x-route-id": plan.route_id,
        "x-resolved-model": plan.upstream.model_id,
        "x-policy-rev": plan.policy_rev,
        "x-content-used": plan.content_used,
    }
    if plan.hints.HasField("tier"):
        headers["x-route-tier"] = plan.hints.tier
    headers.update(invalidate_headers(invalidations))
    return headers
