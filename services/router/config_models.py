"""Pydantic shapes of the router's config files (config-files §2, §4).

Unknown keys are tolerated (Routiium alias files carry extras) but logged, so a typo such as
`fallback` for `fallbacks` is visible at start rather than silently ignored.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from services.common.pb import router_pb2

log = logging.getLogger(__name__)

Mode = Literal["responses", "chat", "bedrock"]


class _ConfigModel(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="after")
    def _warn_unknown_keys(self) -> _ConfigModel:
        if self.model_extra:
            log.warning(
                "unknown config keys ignored",
                extra={"section": type(self).__name__, "keys": sorted(self.model_extra)},
            )
        return self


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("base_url must be an http(s) URL")
    return value.rstrip("/")


class UpstreamSpec(_ConfigModel):
    base_url: str
    mode: Mode
    model_id: str = Field(min_length=1)
    auth_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)

    _check_url = field_validator("base_url")(_http_url)

    def to_proto(self) -> router_pb2.Upstream:
        upstream = router_pb2.Upstream(
            base_url=self.base_url, mode=self.mode, model_id=self.model_id, headers=self.headers
        )
        if self.auth_env:
            upstream.auth_env = self.auth_env
        return upstream


class FallbackSpec(_ConfigModel):
    base_url: str
    mode: Mode
    model_id: str = Field(min_length=1)
    auth_env: str | None = None
    reason: str | None = None

    _check_url = field_validator("base_url")(_http_url)

    def to_proto(self) -> router_pb2.Fallback:
        fallback = router_pb2.Fallback(
            base_url=self.base_url, mode=self.mode, model_id=self.model_id
        )
        if self.auth_env:
            fallback.auth_env = self.auth_env
        if self.reason:
            fallback.reason = self.reason
        return fallback


# Strict: "100", 1.5 or true are typos in a limit, not values to coerce; int64 as in the proto.
PositiveInt64 = Annotated[int, Field(gt=0, le=2**63 - 1, strict=True)]


class AliasLimits(_ConfigModel):
    """Signalbox extension: caps an alias puts on its plans' `limits` (router-schema §3)."""

    max_input_tokens: PositiveInt64 | None = None
    max_output_tokens: PositiveInt64 | None = None
    timeout_ms: PositiveInt64 | None = None


class StaticAlias(UpstreamSpec):
    """Routiium's alias entry plus Signalbox's fallbacks, cache TTL, system overlay and limits."""

    fallbacks: list[FallbackSpec] = Field(default_factory=list)
    cache_ttl_ms: int | None = Field(default=None, ge=0)
    system_overlay: str | None = None
    limits: AliasLimits | None = None


class KnnAlias(_ConfigModel):
    """`{"policy":"knn"}`: choose among catalog candidates (router-schema §6)."""

    policy: Literal["knn"]
    candidates: list[str] = Field(min_length=1)
    default_model: str = Field(min_length=1)
    k: int = Field(default=10, ge=1, le=1000)
    min_neighbors: int = Field(default=3, ge=0)
    min_similarity: float = Field(default=0.2, ge=-1.0, le=1.0)
    confidence_floor: float = Field(default=0.6, ge=0.0, le=1.0)
    lambda_max: float = Field(default=1.0, ge=0.0)
    default_tradeoff: float = Field(default=0.5, ge=0.0, le=1.0)
    default_output_tokens: int = Field(default=256, ge=0)
    sticky_turns: int = Field(default=20, ge=0)
    limits: AliasLimits | None = None

    @field_validator("candidates")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("candidates must be unique")
        return value


AliasEntry = StaticAlias | KnnAlias

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339_text(value: object) -> object:
    """AwareDatetime alone also takes Unix seconds; the catalog serves this text as given."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 timestamp with an offset, e.g. 2030-01-31T00:00:00Z")
    return value


Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]


class CatalogFileModel(BaseModel):
    """The parts of a catalog model the router relies on; the rest is CatalogModel (proto)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str = Field(min_length=1)
    upstream: UpstreamSpec
    status: Literal["healthy", "degraded"] = "healthy"
    deprecates_at: Rfc3339 | None = None
