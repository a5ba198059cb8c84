"""RouteFeedback (router-schema §10): legacy fields folded in, then fed to the health windows."""

from __future__ import annotations

from services.common.pb import router_pb2
from services.router.catalog import Catalog
from services.router.errors import invalid
from services.router.health import ModelHealth
from services.router.planner import RouteLedger


def normalize_feedback(item: router_pb2.RouteFeedback) -> router_pb2.RouteFeedback:
    """Validate and copy; legacy cost, token, latency and error fields map to 1.1 ones."""
    if not item.route_id.strip():
        raise invalid("feedback.route_id is required")
    fb = router_pb2.RouteFeedback()
    fb.CopyFrom(item)
    for name in ("duration_ms", "latency_ms", "actual_cost_micro", "input_tokens", "output_tokens"):
        if fb.HasField(name) and getattr(fb, name) < 0:
            raise invalid(f"feedback.{name} must be >= 0")
    if not fb.HasField("actual_cost_micro") and fb.HasField("actual_cost_usd"):
        fb.actual_cost_micro = round(fb.actual_cost_usd * 1_000_000)
        fb.currency = fb.currency or "USD"
    if not fb.HasField("duration_ms") and fb.HasField("latency_ms"):
        fb.duration_ms = fb.latency_ms
    if fb.HasField("input_tokens") and not fb.usage.HasField("prompt_tokens"):
        fb.usage.prompt_tokens = fb.input_tokens
    if fb.HasField("output_tokens") and not fb.usage.HasField("completion_tokens"):
        fb.usage.completion_tokens = fb.output_tokens
    if fb.HasField("quality") and not 0.0 <= fb.quality <= 1.0:
        raise invalid("feedback.quality must be in [0,1]")
    if fb.HasField("error") and fb.error and not fb.errors:
        fb.errors.append(fb.error)
    return fb


def apply_feedback(
    fb: router_pb2.RouteFeedback, *, catalog: Catalog, health: ModelHealth, ledger: RouteLedger
) -> bool:
    """Record one normalised item; False when no model can be attributed to it."""
    if fb.HasField("model_id") and fb.model_id:
        model = catalog.resolve_model(fb.model_id) or fb.model_id
    else:
        model = ledger.model_for(fb.route_id)
    if model is None:
        return False
    health.record(
        model,
        success=fb.success,
        duration_ms=fb.duration_ms if fb.HasField("duration_ms") else None,
        completion_tokens=(
            fb.usage.completion_tokens if fb.usage.HasField("completion_tokens") else None
        ),
    )
    return True
