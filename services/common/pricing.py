"""Token prices and the cost rule (analytics.md §5 and §6).

One table, built in layers (built-ins → catalog costs → `SIGNALBOX_PRICING_CONFIG`), shared by
the edge (headers, budgets, feedback) and the analytics service (events that arrive without a
cost), so a request is priced identically wherever it is priced. Arithmetic is `Decimal`:
`total_cost_micro` feeds budgets and must not depend on float rounding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)

CURRENCY = "USD"
DEFAULT_KEY = "default"
_MILLION = Decimal(1_000_000)
_MICRO = Decimal(1)

PriceSource = Literal["file", "built_in"]


class PricingConfigError(ValueError):
    """A pricing or catalog file that cannot be used; raised at load, never at request time."""


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens. `cached` None → cached tokens cost `input`; `reasoning` None → output."""

    input: Decimal
    output: Decimal
    cached: Decimal | None = None
    reasoning: Decimal | None = None


@dataclass(frozen=True)
class PriceMatch:
    """The price that applies to one model id and the key it was found under."""

    pricing_model: str
    price: Price


def _d(value: float | int | str) -> Decimal:
    # str() keeps the shortest decimal form of a float (0.075, not 0.07499999…).
    return Decimal(str(value))


def _price(inp: float, out: float, cached: float | None = None) -> Price:
    return Price(_d(inp), _d(out), None if cached is None else _d(cached))


BUILT_IN_PRICES: dict[str, Price] = {
    "gpt-4o": _price(2.50, 10, 1.25),
    "gpt-4o-mini": _price(0.15, 0.60, 0.075),
    "o1": _price(15, 60, 7.5),
    "o1-preview": _price(15, 60, 7.5),
    "o1-mini": _price(3, 12, 1.5),
    "gpt-4-turbo": _price(10, 30),
    "gpt-3.5-turbo": _price(0.50, 1.50),
}
BUILT_IN_DEFAULT = _price(2.50, 10, 1.25)


class _FilePrice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)
    cached_per_million: float | None = Field(default=None, ge=0)
    reasoning_per_million: float | None = Field(default=None, ge=0)

    def to_price(self) -> Price:
        return Price(
            _d(self.input_per_million),
            _d(self.output_per_million),
            None if self.cached_per_million is None else _d(self.cached_per_million),
            None if self.reasoning_per_million is None else _d(self.reasoning_per_million),
        )


class _PricingFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, _FilePrice] = Field(default_factory=dict)
    default: _FilePrice | None = None


class _CatalogCost(BaseModel):
    """CatalogModel.cost: each price in USD/M or micro-USD/M; a missing form is derived."""

    model_config = ConfigDict(extra="ignore")

    input_per_million: float | None = Field(default=None, ge=0)
    output_per_million: float | None = Field(default=None, ge=0)
    cached_per_million: float | None = Field(default=None, ge=0)
    reasoning_per_million: float | None = Field(default=None, ge=0)
    input_per_million_micro: int | None = Field(default=None, ge=0)
    output_per_million_micro: int | None = Field(default=None, ge=0)
    cached_per_million_micro: int | None = Field(default=None, ge=0)
    reasoning_per_million_micro: int | None = Field(default=None, ge=0)

    def _get(self, name: str) -> Decimal | None:
        usd = getattr(self, f"{name}_per_million")
        if usd is not None:
            return _d(usd)
        micro = getattr(self, f"{name}_per_million_micro")
        return None if micro is None else Decimal(micro) / _MILLION

    def to_price(self) -> Price | None:
        inp, out = self._get("input"), self._get("output")
        if inp is None or out is None:
            return None
        return Price(inp, out, self._get("cached"), self._get("reasoning"))


class _CatalogUpstream(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model_id: str | None = None


class _CatalogModel(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    cost: _CatalogCost | None = None
    upstream: _CatalogUpstream | None = None


class _Catalog(BaseModel):
    model_config = ConfigDict(extra="ignore")

    models: list[_CatalogModel] = Field(default_factory=list)


def _read_json(path: str | Path, what: str) -> Any:
    try:
        return orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise PricingConfigError(f"{what} {path}: cannot read ({exc.strerror})") from exc
    except orjson.JSONDecodeError as exc:
        raise PricingConfigError(f"{what} {path}: invalid JSON ({exc})") from exc


def _validate(model: type[BaseModel], data: Any, what: str, path: str | Path) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise PricingConfigError(f"{what} {path}: {exc}") from exc


def catalog_prices(catalog_path: str | Path) -> dict[str, Price]:
    """Prices keyed by catalog `id` and, where it differs, by `upstream.model_id`.

    The edge prices by the served `model_id`, which for catalog routes is the upstream's model id,
    so both names must find the catalog price. A catalog `id` wins over another entry's upstream id.
    """
    catalog: _Catalog = _validate(
        _Catalog, _read_json(catalog_path, "catalog"), "catalog", catalog_path
    )
    by_id: dict[str, Price] = {}
    by_upstream: dict[str, Price] = {}
    for model in catalog.models:
        price = model.cost.to_price() if model.cost else None
        if price is None:
            continue
        by_id[model.id] = price
        upstream_id = model.upstream.model_id if model.upstream else None
        if upstream_id and upstream_id != model.id:
            by_upstream.setdefault(upstream_id, price)
    return {**by_upstream, **by_id}


def _round_micro(total: Decimal) -> int:
    return int((total * _MILLION).quantize(_MICRO, rounding=ROUND_HALF_UP))


def compute_cost(
    match: PriceMatch,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int,
    reasoning_tokens: int,
) -> dict[str, Any]:
    """The §6 rule. Cached ⊂ prompt and reasoning ⊂ completion, so both are clamped to their
    parent count: a provider reporting more cached than prompt tokens must not yield a negative
    input cost."""
    counts = (prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens)
    if any(n < 0 for n in counts):
        raise ValueError(f"token counts must be non-negative, got {counts}")
    price = match.price
    cached = min(cached_tokens, prompt_tokens)
    input_cost = Decimal(prompt_tokens - cached) * price.input / _MILLION
    cached_cost = Decimal(cached) * (price.cached if price.cached is not None else price.input)
    cached_cost /= _MILLION
    if price.reasoning is not None:
        reasoning = min(reasoning_tokens, completion_tokens)
        reasoning_cost = Decimal(reasoning) * price.reasoning / _MILLION
        output_cost = Decimal(completion_tokens - reasoning) * price.output / _MILLION
    else:
        reasoning_cost = Decimal(0)
        output_cost = Decimal(completion_tokens) * price.output / _MILLION
    total = input_cost + cached_cost + output_cost + reasoning_cost
    return {
        "input_cost": float(input_cost),
        "cached_cost": float(cached_cost),
        "output_cost": float(output_cost),
        "reasoning_cost": float(reasoning_cost),
        "total_cost": float(total),
        "total_cost_micro": _round_micro(total),
        "currency": CURRENCY,
        "pricing_model": match.pricing_model,
    }


class PriceTable:
    """Immutable after load; lookups are deterministic (exact, longest prefix, defaults)."""

    def __init__(
        self,
        prices: dict[str, Price],
        *,
        default: Price = BUILT_IN_DEFAULT,
        source: PriceSource = "built_in",
    ) -> None:
        self._prices = dict(prices)
        # Longest first, then alphabetical, so equal-length prefixes cannot tie.
        self._prefixes = sorted(self._prices, key=lambda key: (-len(key), key))
        self.default = default
        self.source: PriceSource = source

    @classmethod
    def load(cls, pricing_config: str | Path | None, catalog_path: str | Path | None) -> PriceTable:
        """Built-ins, then catalog costs, then the pricing file, each overriding per exact key."""
        prices = dict(BUILT_IN_PRICES)
        default = BUILT_IN_DEFAULT
        source: PriceSource = "built_in"
        if catalog_path:
            prices.update(catalog_prices(catalog_path))
        if pricing_config:
            parsed: _PricingFile = _validate(
                _PricingFile,
                _read_json(pricing_config, "pricing config"),
                "pricing config",
                pricing_config,
            )
            prices.update({key: value.to_price() for key, value in parsed.models.items()})
            if parsed.default is not None:
                default = parsed.default.to_price()
            source = "file"
        table = cls(prices, default=default, source=source)
        log.info(
            "pricing table loaded",
            extra={"entries": len(table), "source": source, "catalog": str(catalog_path or "")},
        )
        return table

    def __len__(self) -> int:
        return len(self._prices)

    def __contains__(self, model_id: object) -> bool:
        """Whether `model_id` has its own entry (metrics label only known models)."""
        return model_id in self._prices

    def lookup(self, model_id: str) -> PriceMatch:
        exact = self._prices.get(model_id)
        if exact is not None:
            return PriceMatch(model_id, exact)
        for key in self._prefixes:
            if model_id.startswith(key):
                return PriceMatch(key, self._prices[key])
        return PriceMatch(DEFAULT_KEY, self.default)

    def cost(
        self,
        model_id: str,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int,
        reasoning_tokens: int,
    ) -> dict[str, Any]:
        """The spec's `cost` object for one request served by `model_id`."""
        return compute_cost(
            self.lookup(model_id), prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens
        )
