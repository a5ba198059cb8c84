"""The edge's plan cache (router-schema-1.1 §7): skip the router for decisions it let us reuse.

A router plan may be reused for `min(received + ttl_ms, valid_until)`; never past `valid_until`,
never across a policy revision, and never after the router named its `freeze_key` in
`X-Route-Invalidate`. Expired entries linger for `SIGNALBOX_CACHE_STALE_MS` so a non-strict edge
can serve them while the router is down. The key never contains prompt content.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from services.common.backends import new_route_id
from services.common.pb import router_pb2

log = logging.getLogger(__name__)

MAX_ENTRIES = 10_000
_KEY_OPTIONALS = ("api", "stream", "privacy_mode", "plan_token")
_KEY_MESSAGES = ("targets", "budget", "overrides")


def plan_cache_key(request: router_pb2.RouteRequest) -> bytes:
    """SHA-256 over `{alias, api, stream, caps (sorted), privacy_mode, targets, budget,
    overrides, org.tenant, org.project, plan_token}`, serialised deterministically."""
    key = router_pb2.RouteRequest(alias=request.alias, caps=sorted(request.caps))
    for name in _KEY_OPTIONALS:
        if request.HasField(name):
            setattr(key, name, getattr(request, name))
    for name in _KEY_MESSAGES:
        if request.HasField(name):
            getattr(key, name).CopyFrom(getattr(request, name))
    org = request.org
    if org.HasField("tenant"):
        key.org.tenant = org.tenant
    if org.HasField("project"):
        key.org.project = org.project
    return hashlib.sha256(key.SerializeToString(deterministic=True)).digest()


def parse_rfc3339(value: str) -> float | None:
    """Unix seconds of an RFC 3339 time, or None when it cannot be read."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None  # RFC 3339 requires an offset; guessing one could outlive valid_until
    return moment.timestamp()


@dataclass(slots=True)
class _Entry:
    plan: router_pb2.RoutePlan
    policy_rev: str | None
    freeze_key: str | None
    received: float
    ttl_s: float
    expires: float
    valid_until: float | None


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    stale: int = 0
    stored: int = 0
    invalidated: int = 0


def plan_policy_rev(plan: router_pb2.RoutePlan) -> str | None:
    if plan.HasField("policy_rev"):
        return plan.policy_rev
    return plan.policy.revision if plan.policy.HasField("revision") else None


class PlanCache:
    """In-process LRU of router plans keyed by `plan_cache_key`; all methods are O(1) except
    the rare revision change and invalidation, which touch only the affected entries."""

    def __init__(
        self,
        *,
        default_ttl_ms: int,
        stale_ms: int,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._default_ttl_s = default_ttl_ms / 1000
        self._stale_s = stale_ms / 1000
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._by_freeze_key: dict[str, set[bytes]] = {}
        self.revision: str | None = None
        self.stats = CacheStats()

    @property
    def enabled(self) -> bool:
        """`SIGNALBOX_CACHE_TTL_MS=0` turns the cache off altogether."""
        return self._default_ttl_s > 0 and self._max > 0

    @property
    def default_ttl_ms(self) -> int:
        return round(self._default_ttl_s * 1000)

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------------ reads

    def fresh(self, key: bytes) -> router_pb2.RoutePlan | None:
        """A copy of a live plan (with a new `route_id`), or None; counts the hit or miss."""
        entry = self._entries.get(key)
        if entry is not None and self._clock() < entry.expires:
            self._entries.move_to_end(key)
            self.stats.hits += 1
            return _reissued(entry.plan)
        self.stats.misses += 1
        return None

    def stale(self, key: bytes) -> router_pb2.RoutePlan | None:
        """After an untyped router failure: an expired plan still inside the stale grace."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self._clock()
        if now - entry.received > entry.ttl_s + self._stale_s:
            return None
        if entry.valid_until is not None and now >= entry.valid_until:
            return None
        self.stats.stale += 1
        return _reissued(entry.plan)

    # ------------------------------------------------------------------ writes

    def store(self, key: bytes, plan: router_pb2.RoutePlan) -> bool:
        """Keep `plan` if its directive allows it (`ttl_ms > 0`, a readable `valid_until`)."""
        if not self.enabled:
            return False
        ttl_s = plan.cache.ttl_ms / 1000 if plan.HasField("cache") else self._default_ttl_s
        if ttl_s <= 0:
            return False
        now = self._clock()
        expires = now + ttl_s
        valid_until = None
        if plan.cache.HasField("valid_until"):
            valid_until = parse_rfc3339(plan.cache.valid_until)
            if valid_until is None:
                log.warning(
                    "plan not cached: unreadable valid_until",
                    extra={"value": plan.cache.valid_until},
                )
                return False
            expires = min(expires, valid_until)
            if expires <= now:
                return False
        freeze = plan.cache.freeze_key if plan.cache.HasField("freeze_key") else None
        kept = router_pb2.RoutePlan()
        kept.CopyFrom(plan)
        self._drop(key)
        self._entries[key] = _Entry(
            kept, plan_policy_rev(plan), freeze, now, ttl_s, expires, valid_until
        )
        if freeze is not None:
            self._by_freeze_key.setdefault(freeze, set()).add(key)
        while len(self._entries) > self._max:
            self._drop(next(iter(self._entries)))
        self.stats.stored += 1
        return True

    def observe_revision(self, revision: str | None) -> None:
        """A `Config-Revision` from the router: entries planned under another one are gone."""
        if not revision or revision == self.revision:
            return
        self.revision = revision
        outdated = [k for k, e in self._entries.items() if e.policy_rev not in (None, revision)]
        for key in outdated:
            self._drop(key)
        self.stats.invalidated += len(outdated)

    def invalidate(self, freeze_keys: Iterable[str]) -> int:
        """Drop every plan whose upstream carries one of these `freeze_key`s."""
        dropped = 0
        for freeze in freeze_keys:
            for key in list(self._by_freeze_key.get(freeze, ())):
                self._drop(key)
                dropped += 1
        self.stats.invalidated += dropped
        return dropped

    def clear(self) -> int:
        count = len(self._entries)
        self._entries.clear()
        self._by_freeze_key.clear()
        self.stats.invalidated += count
        return count

    def _drop(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is None or entry.freeze_key is None:
            return
        keys = self._by_freeze_key.get(entry.freeze_key)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_freeze_key[entry.freeze_key]


def parse_invalidate_header(value: str | None) -> list[str]:
    """`X-Route-Invalidate: frz_a, frz_b` → `["frz_a", "frz_b"]`."""
    if not value:
        return []
    return [part.strip() for part in value.split(",") if part.strip()]


def _reissued(plan: router_pb2.RoutePlan) -> router_pb2.RoutePlan:
    """Each request served from the cache is its own route: same decision, new `route_id`."""
    copy = router_pb2.RoutePlan()
    copy.CopyFrom(plan)
    copy.route_id = new_route_id()
    return copy
