"""The model catalog (config-files §4, router-schema §11): loading, revision, cost and caps."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

from services.common.backends import BackendRule
from services.common.pb import router_pb2
from services.router.config_models import CatalogFileModel, StaticAlias
from services.router.pbjson import JsonShapeError, from_json

_PRICE_KINDS = ("input", "output", "cached", "reasoning")
MICRO = 1_000_000


class ConfigError(ValueError):
    """A routing config file is unusable; start aborts, reload keeps the old config."""


@dataclass(frozen=True)
class CatalogEntry:
    """A catalog model as served (no `upstream`) and the upstream plans use."""

    model: router_pb2.CatalogModel
    upstream: router_pb2.Upstream
    deprecates_at: datetime | None = None  # parsed `model.deprecates_at`, always with an offset

    @property
    def id(self) -> str:
        return self.model.id

    @property
    def in_micro(self) -> int | None:
        cost = self.model.cost
        return cost.input_per_million_micro if cost.HasField("input_per_million_micro") else None

    @property
    def out_micro(self) -> int | None:
        cost = self.model.cost
        return cost.output_per_million_micro if cost.HasField("output_per_million_micro") else None

    @property
    def context_tokens(self) -> int | None:
        caps = self.model.capabilities
        return caps.context_tokens if caps.HasField("context_tokens") else None

    @property
    def tier(self) -> str | None:
        tiers = (a.removeprefix("tier:") for a in self.model.aliases if a.startswith("tier:"))
        return next(tiers, None)

    def cost_units(self, prompt_tokens: int, output_tokens: int) -> int:
        """`prompt·in_micro + out·out_micro` (micro-USD per 1M tokens, times tokens)."""
        return prompt_tokens * (self.in_micro or 0) + output_tokens * (self.out_micro or 0)

    def est_cost_micro(self, prompt_tokens: int, output_tokens: int) -> int | None:
        if self.in_micro is None and self.out_micro is None:
            return None
        return math.ceil(self.cost_units(prompt_tokens, output_tokens) / MICRO)

    def missing_caps(self, caps: Iterable[str]) -> list[str]:
        """Request caps this model is known to lack; what the catalog does not say is allowed."""
        capabilities = self.model.capabilities
        checks: dict[str, bool] = {}
        if capabilities.modalities:
            modalities = set(capabilities.modalities)
            checks["text"] = "text" in modalities
            checks["vision"] = bool({"image", "vision"} & modalities)
            checks["file"] = "file" in modalities
        for flag in ("tools", "json_mode", "structured_output", "logprobs"):
            if capabilities.HasField(flag):
                checks[flag] = getattr(capabilities, flag)
        return [cap for cap in caps if not checks.get(cap, True)]


@dataclass(frozen=True)
class Catalog:
    revision: str
    entries: Mapping[str, CatalogEntry]
    source: str  # "file" or "derived"
    by_upstream_model: Mapping[str, str] = field(default_factory=dict)

    def get(self, model_id: str) -> CatalogEntry | None:
        return self.entries.get(model_id)

    def resolve_model(self, model_id: str) -> str | None:
        """A catalog id for a catalog id or a catalog model's upstream `model_id`."""
        if model_id in self.entries:
            return model_id
        return self.by_upstream_model.get(model_id)

    def for_upstream(
        self, upstream: router_pb2.Upstream | router_pb2.Fallback
    ) -> CatalogEntry | None:
        """The catalog model a non-catalog plan (or a fallback) lands on, for hints and limits."""
        entry = self.entries.get(upstream.model_id)
        if entry is not None:
            return entry
        found = self.by_upstream_model.get(upstream.model_id)
        entry = self.entries.get(found) if found else None
        if entry is not None and entry.upstream.base_url == upstream.base_url:
            return entry
        return None


def _fill_prices(cost: dict[str, Any], where: str) -> None:
    """Derive each missing `*_per_million` / `*_per_million_micro` from the other form."""
    for kind in _PRICE_KINDS:
        usd_key, micro_key = f"{kind}_per_million", f"{kind}_per_million_micro"
        usd, micro = cost.get(usd_key), cost.get(micro_key)
        for key, value in ((usd_key, usd), (micro_key, micro)):
            if value is not None and (not isinstance(value, int | float) or value < 0):
                raise ConfigError(f"{where}: cost.{key} must be a non-negative number")
        if micro is None and usd is not None:
            cost[micro_key] = round(usd * MICRO)
        elif usd is None and micro is not None:
            cost[usd_key] = micro / MICRO
    cost.setdefault("currency", "USD")


def _catalog_entry(raw: Any, index: int) -> CatalogEntry:
    where = f"catalog models[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be an object")
    if isinstance(raw.get("id"), str) and raw["id"]:
        where += f" ({raw['id']})"
    try:
        checked = CatalogFileModel.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {first_error(exc)}") from exc
    served = {k: v for k, v in raw.items() if k != "upstream"}
    served["status"] = checked.status
    if isinstance(served.get("cost"), dict):
        served["cost"] = dict(served["cost"])
        _fill_prices(served["cost"], where)
    try:
        model = from_json(served, router_pb2.CatalogModel)
    except JsonShapeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return CatalogEntry(
        model=model, upstream=checked.upstream.to_proto(), deprecates_at=checked.deprecates_at
    )


def first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(part) for part in err["loc"])
    return f"{loc}: {err['msg']}" if loc else err["msg"]


def _revision(data: bytes) -> str:
    return "cat_" + hashlib.sha256(data).hexdigest()[:12]


def _index(entries: Sequence[CatalogEntry], revision: str, source: str) -> Catalog:
    by_id: dict[str, CatalogEntry] = {}
    for entry in entries:
        if entry.id in by_id:
            raise ConfigError(f"catalog: duplicate model id {entry.id!r}")
        by_id[entry.id] = entry
    by_upstream = {}
    for entry in entries:
        by_upstream.setdefault(entry.upstream.model_id, entry.id)
    return Catalog(revision=revision, entries=by_id, source=source, by_upstream_model=by_upstream)


def parse_catalog(data: bytes) -> Catalog:
    """A catalog file's bytes; its revision is the file's SHA-256."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"catalog: invalid JSON ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
        raise ConfigError('catalog: expected {"models": [...]}')
    entries = [_catalog_entry(raw, i) for i, raw in enumerate(doc["models"])]
    return _index(entries, _revision(data), "file")


def derived_catalog(aliases: Mapping[str, Any], rules: Sequence[BackendRule]) -> Catalog:
    """Without a catalog file: one model per static alias and per prefix rule (spec README)."""
    entries = []
    for alias, entry in aliases.items():
        if isinstance(entry, StaticAlias):
            model = router_pb2.CatalogModel(id=alias, status="healthy")
            model.usage_notes = f"alias of {entry.model_id}"
            entries.append(CatalogEntry(model=model, upstream=entry.to_proto()))
    for rule in rules:
        if rule.prefix in aliases:
            continue
        model = router_pb2.CatalogModel(
            id=rule.prefix, status="healthy", aliases=[f"{rule.prefix}*"]
        )
        model.usage_notes = "SIGNALBOX_BACKENDS prefix rule"
        upstream = router_pb2.Upstream(base_url=rule.base_url, mode=rule.mode, model_id=rule.prefix)
        if rule.key_env:
            upstream.auth_env = rule.key_env
        entries.append(CatalogEntry(model=model, upstream=upstream))
    canonical = orjson.dumps(
        [[e.id, e.upstream.SerializeToString().hex()] for e in entries], option=orjson.OPT_SORT_KEYS
    )
    return _index(entries, _revision(canonical), "derived")
