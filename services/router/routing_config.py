"""Everything a plan depends on, loaded and validated as one immutable snapshot.

Reload builds a new snapshot and swaps it in whole, so a plan never sees half of a reload.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson
from pydantic import TypeAdapter, ValidationError

from services.common.backends import BackendRule, parse_backends
from services.common.pb import router_pb2
from services.router.catalog import (
    Catalog,
    ConfigError,
    derived_catalog,
    first_error,
    parse_catalog,
)
from services.router.config_models import AliasEntry, KnnAlias, StaticAlias
from services.router.pbjson import to_json
from services.router.settings import RouterSettings

log = logging.getLogger(__name__)

_STATIC = TypeAdapter(StaticAlias)
_KNN = TypeAdapter(KnnAlias)


@dataclass(frozen=True)
class RoutingConfig:
    aliases: Mapping[str, AliasEntry]
    catalog: Catalog
    rules: tuple[BackendRule, ...]
    openai_base_url: str
    upstream_mode: str
    default_upstream: bool
    policy_rev: str

    def stats(self, knn_examples: int = 0) -> router_pb2.RoutingStats:
        knn = sum(isinstance(entry, KnnAlias) for entry in self.aliases.values())
        return router_pb2.RoutingStats(
            policy_rev=self.policy_rev,
            aliases=len(self.aliases),
            knn_aliases=knn,
            prefix_rules=len(self.rules),
            catalog_models=len(self.catalog.entries),
            knn_examples=knn_examples,
        )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from exc


def parse_aliases(data: bytes) -> dict[str, AliasEntry]:
    """router_aliases.json: a flat map of alias → static or KNN entry."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"aliases: invalid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise ConfigError("aliases: expected a JSON object mapping alias to entry")
    aliases: dict[str, AliasEntry] = {}
    for alias, raw in doc.items():
        if not alias.strip():
            raise ConfigError("aliases: an alias name is empty")
        if not isinstance(raw, dict):
            raise ConfigError(f"aliases[{alias!r}]: must be an object")
        policy = raw.get("policy")
        if policy is not None and policy != "knn":
            raise ConfigError(f"aliases[{alias!r}]: unknown policy {policy!r} (only 'knn')")
        adapter = _KNN if policy == "knn" else _STATIC
        try:
            aliases[alias] = adapter.validate_python(raw)
        except ValidationError as exc:
            raise ConfigError(f"aliases[{alias!r}]: {first_error(exc)}") from exc
    return aliases


def _check_knn_models(aliases: Mapping[str, AliasEntry], catalog: Catalog) -> None:
    for alias, entry in aliases.items():
        if not isinstance(entry, KnnAlias):
            continue
        for model in [*entry.candidates, entry.default_model]:
            if catalog.get(model) is None:
                raise ConfigError(
                    f"aliases[{alias!r}]: model {model!r} is not in the catalog "
                    f"({catalog.source}; ids: {', '.join(sorted(catalog.entries)) or 'none'})"
                )


def _policy_rev(
    aliases: Mapping[str, AliasEntry],
    catalog: Catalog,
    rules: tuple[BackendRule, ...],
    settings: RouterSettings,
) -> str:
    canonical = orjson.dumps(
        {
            "aliases": {k: v.model_dump(mode="json") for k, v in aliases.items()},
            "catalog": catalog.revision,
            "rules": [dataclasses.asdict(rule) for rule in rules],
            "default": [
                settings.openai_base_url,
                settings.upstream_mode,
                settings.router_default_upstream,
            ],
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return "pol_" + hashlib.sha256(canonical).hexdigest()[:12]


def load_routing_config(settings: RouterSettings) -> RoutingConfig:
    """Read and cross-check the alias file, catalog and prefix rules; raise `ConfigError`."""
    aliases: dict[str, AliasEntry] = {}
    if settings.router_aliases is not None:
        aliases = parse_aliases(_read(settings.router_aliases, "aliases file"))
    rules = tuple(parse_backends(settings.backends, settings.upstream_mode))
    if settings.catalog_path is not None:
        catalog = parse_catalog(_read(settings.catalog_path, "catalog file"))
    else:
        catalog = derived_catalog(aliases, rules)
    _check_knn_models(aliases, catalog)
    config = RoutingConfig(
        aliases=aliases,
        catalog=catalog,
        rules=rules,
        openai_base_url=settings.openai_base_url,
        upstream_mode=settings.upstream_mode,
        default_upstream=settings.router_default_upstream,
        policy_rev=_policy_rev(aliases, catalog, rules, settings),
    )
    log.info("routing config loaded", extra={"stats": to_json(config.stats())})
    return config
