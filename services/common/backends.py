"""`SIGNALBOX_BACKENDS` prefix rules and local resolution (config-files §1, router-schema §9).

Shared by the router (policy step 5, "prefix") and the edge (planning without a router), so
both sides agree on which upstream an alias lands on when no alias file or catalog says so.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf import struct_pb2

from services.common.pb import router_pb2

log = logging.getLogger(__name__)

UPSTREAM_MODES = ("responses", "chat", "bedrock")
DEFAULT_AUTH_ENV = "OPENAI_API_KEY"
LOCAL_REVISION = "local"

_TOKEN_SPLIT = re.compile(r"[,;]")
_KEY_ALIASES = {
    "prefix": "prefix",
    "base": "base_url",
    "base_url": "base_url",
    "key_env": "key_env",
    "api_key_env": "key_env",
    "mode": "mode",
}


@dataclass(frozen=True)
class BackendRule:
    """One prefix rule: aliases starting with `prefix` go to `base_url` with `model_id` = alias."""

    prefix: str
    base_url: str
    key_env: str | None
    mode: str


def new_route_id() -> str:
    return "rte_" + secrets.token_hex(8)


def _finish_rule(fields: dict[str, str], default_mode: str) -> BackendRule | None:
    prefix, base = fields.get("prefix"), fields.get("base_url")
    if not prefix or not base:
        log.warning(
            "SIGNALBOX_BACKENDS rule dropped: it needs both a prefix and a base",
            extra={"rule": dict(fields)},
        )
        return None
    mode = (fields.get("mode") or default_mode).lower()
    if mode not in UPSTREAM_MODES:
        log.warning(
            "SIGNALBOX_BACKENDS rule dropped: unknown mode",
            extra={"rule": dict(fields), "allowed": list(UPSTREAM_MODES)},
        )
        return None
    return BackendRule(
        prefix=prefix,
        base_url=base.rstrip("/"),
        key_env=fields.get("key_env") or None,
        mode=mode,
    )


def parse_backends(spec: str | None, default_mode: str) -> list[BackendRule]:
    """Parse the `key=value` token stream, warning about malformed tokens and dropped rules."""
    if not spec or not spec.strip():
        return []
    groups: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for raw in _TOKEN_SPLIT.split(spec):
        token = raw.strip()
        if not token:
            continue
        key, sep, value = token.partition("=")
        field = _KEY_ALIASES.get(key.strip().lower())
        if not sep or field is None:
            log.warning("SIGNALBOX_BACKENDS token ignored", extra={"token": token})
            continue
        if field == "prefix" and "prefix" in current and "base_url" in current:
            groups.append(current)
            current = {}
        current[field] = value.strip()
    if current:
        groups.append(current)
    rules = [_finish_rule(group, default_mode) for group in groups]
    return [rule for rule in rules if rule is not None]


def match_backend(rules: Sequence[BackendRule], alias: str) -> BackendRule | None:
    """First rule whose prefix the alias starts with."""
    return next((rule for rule in rules if alias.startswith(rule.prefix)), None)


def default_upstream(
    alias: str, api: str, *, openai_base_url: str, upstream_mode: str
) -> router_pb2.Upstream:
    """§5 step 6: the configured OpenAI-compatible upstream, `chat` mode for chat requests."""
    return router_pb2.Upstream(
        base_url=openai_base_url.rstrip("/"),
        mode="chat" if api == "chat" else upstream_mode,
        model_id=alias,
        auth_env=DEFAULT_AUTH_ENV,
    )


def rule_upstream(rule: BackendRule, alias: str) -> router_pb2.Upstream:
    upstream = router_pb2.Upstream(base_url=rule.base_url, mode=rule.mode, model_id=alias)
    if rule.key_env:
        upstream.auth_env = rule.key_env
    return upstream


def local_plan(
    alias: str,
    api: str,
    rules: Sequence[BackendRule],
    *,
    openai_base_url: str,
    upstream_mode: str,
) -> router_pb2.RoutePlan:
    """A synthetic plan for when no router answers: no cache, no fallbacks, revision `local`."""
    rule = match_backend(rules, alias)
    if rule is not None:
        strategy, matched = "backends_env", rule.prefix
        upstream = rule_upstream(rule, alias)
    else:
        strategy, matched = "default", openai_base_url.rstrip("/")
        upstream = default_upstream(
            alias, api, openai_base_url=openai_base_url, upstream_mode=upstream_mode
        )
    detail = struct_pb2.Struct()
    detail.update({"strategy": strategy, "alias": alias, "matched": matched})
    return router_pb2.RoutePlan(
        schema_version="1.1",
        route_id=new_route_id(),
        upstream=upstream,
        policy_rev=LOCAL_REVISION,
        policy=router_pb2.Policy(
            revision=LOCAL_REVISION,
            id=strategy,
            explain=f"{strategy} {matched} -> {upstream.model_id}",
            explain_detail=detail,
        ),
        content_used="none",
    )
