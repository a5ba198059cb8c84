"""RouteRequest decoding, legacy fields (router-schema §1) and validation → INVALID_REQUEST."""

from __future__ import annotations

from typing import Any

import orjson

from services.common.pb import router_pb2
from services.router.errors import SUPPORTED_SCHEMAS, ErrorCode, RouteFailure, invalid
from services.router.pbjson import JsonShapeError, from_json

APIS = ("chat", "responses")
PRIVACY_MODES = ("features_only", "summary", "full")
_PRIVACY_ALIASES = {"features": "features_only"}
_LATENCY_ALIASES = ("latency_p95_ms", "latency_target_ms")
MAX_ALIAS_LENGTH = 256
DEFAULT_OUTPUT_TOKENS = 256


def request_from_json(data: Any) -> router_pb2.RouteRequest:
    """Decode one JSON RouteRequest, mapping the JSON-only legacy latency names first.

    The schema version is judged before any field: a client speaking another schema gets
    UNSUPPORTED_SCHEMA, not an error about a field shape that schema may define differently.
    """
    if not isinstance(data, dict):
        raise invalid("a RouteRequest must be a JSON object")
    version = data.get("schema_version")
    if version is not None:
        version = version if isinstance(version, str) else orjson.dumps(version).decode()
        check_schema_version(router_pb2.RouteRequest(schema_version=version))
        data = {**data, "schema_version": version}
    targets = data.get("targets")
    if isinstance(targets, dict) and "p95_latency_ms" not in targets:
        legacy = next((targets[k] for k in _LATENCY_ALIASES if k in targets), None)
        if legacy is not None:
            data = {**data, "targets": {**targets, "p95_latency_ms": legacy}}
    try:
        return from_json(data, router_pb2.RouteRequest)
    except JsonShapeError as exc:
        raise invalid(str(exc)) from exc


def check_schema_version(request: router_pb2.RouteRequest) -> None:
    if request.HasField("schema_version") and request.schema_version not in SUPPORTED_SCHEMAS:
        raise RouteFailure(
            ErrorCode.UNSUPPORTED_SCHEMA,
            f"schema_version {request.schema_version!r} is not supported",
            supported=SUPPORTED_SCHEMAS,
        )


def _non_negative(message: Any, names: tuple[str, ...], where: str) -> None:
    for name in names:
        if message.HasField(name) and getattr(message, name) < 0:
            raise invalid(f"{where}.{name} must be >= 0")


def _privacy_mode(request: router_pb2.RouteRequest) -> str:
    raw = request.privacy_mode if request.HasField("privacy_mode") else request.privacy
    mode = _PRIVACY_ALIASES.get(raw.strip().lower(), raw.strip().lower()) or "features_only"
    if mode not in PRIVACY_MODES:
        raise invalid(f"privacy_mode must be one of {', '.join(PRIVACY_MODES)}")
    return mode


def _tradeoff_is_number(request: router_pb2.RouteRequest) -> None:
    value = request.overrides.fields.get("quality_cost_tradeoff")
    if value is not None and value.WhichOneof("kind") not in ("number_value", "null_value"):
        raise invalid("overrides.quality_cost_tradeoff must be a number in [0,1]")


def normalize_request(request: router_pb2.RouteRequest) -> router_pb2.RouteRequest:
    """A validated copy with legacy fields folded into their Schema 1.1 places."""
    check_schema_version(request)
    req = router_pb2.RouteRequest()
    req.CopyFrom(request)
    req.alias = req.alias.strip()
    if not req.alias:
        raise invalid("alias is required")
    if len(req.alias) > MAX_ALIAS_LENGTH:
        raise invalid(f"alias is longer than {MAX_ALIAS_LENGTH} characters")
    if req.HasField("api") and req.api not in APIS:
        raise invalid(f"api must be one of {', '.join(APIS)}")
    req.privacy_mode = _privacy_mode(req)
    caps = [cap.strip().lower() for cap in req.caps]
    if any(not cap for cap in caps):
        raise invalid("caps must be non-empty strings")
    del req.caps[:]
    req.caps.extend(dict.fromkeys(caps))
    _non_negative(req.estimates, ("prompt_tokens", "max_output_tokens"), "estimates")
    _non_negative(req.targets, ("p95_latency_ms", "min_tokens_per_sec"), "targets")
    _non_negative(req.budget, ("amount_micro",), "budget")
    if req.HasField("budget") and req.budget.currency.upper() not in ("", "USD"):
        raise invalid("budget.currency must be USD")
    if not req.HasField("budget") and req.targets.HasField("max_cost_usd"):
        if req.targets.max_cost_usd < 0:
            raise invalid("targets.max_cost_usd must be >= 0")
        req.budget.amount_micro = round(req.targets.max_cost_usd * 1_000_000)
        req.budget.currency = "USD"
    if req.HasField("role") and not req.org.HasField("role"):
        req.org.role = req.role
    _tradeoff_is_number(req)
    return req


def prompt_tokens(request: router_pb2.RouteRequest) -> int:
    return request.estimates.prompt_tokens


def output_tokens(request: router_pb2.RouteRequest, default: int = DEFAULT_OUTPUT_TOKENS) -> int:
    estimates = request.estimates
    return estimates.max_output_tokens if estimates.HasField("max_output_tokens") else default


def budget_micro(request: router_pb2.RouteRequest) -> int | None:
    return request.budget.amount_micro if request.budget.HasField("amount_micro") else None


def latency_target_ms(request: router_pb2.RouteRequest) -> int | None:
    targets = request.targets
    return targets.p95_latency_ms if targets.HasField("p95_latency_ms") else None


def tradeoff_override(request: router_pb2.RouteRequest) -> float | None:
    value = request.overrides.fields.get("quality_cost_tradeoff")
    if value is None or value.WhichOneof("kind") != "number_value":
        return None
    return min(1.0, max(0.0, value.number_value))
