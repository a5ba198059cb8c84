"""Edge configuration: the `SIGNALBOX_*` knobs of the spec README that the edge reads.

Validated once at start so a bad value stops the process with a clear message instead of
surfacing as a 500 on the first request.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.config import CommonSettings, is_off

MIN_ADMIN_TOKEN_CHARS = 32
PRIVACY_MODES = ("features_only", "summary", "full")

UpstreamMode = Literal["responses", "chat", "bedrock"]
AuthMode = Literal["managed", "passthrough"]
PrivacyMode = Literal["features_only", "summary", "full"]
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class EdgeSettings(CommonSettings):
    """Everything the edge process needs; env wins over `SIGNALBOX_CONFIG_FILE`."""

    model_config = SettingsConfigDict(populate_by_name=True)

    edge_bind: str = "0.0.0.0:8088"
    router_addr: str = "127.0.0.1:50051"
    keys_addr: str = "127.0.0.1:50052"
    analytics_addr: str = "127.0.0.1:50053"
    admin_token: str | None = None
    auth_mode: AuthMode | None = None
    openai_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "openai_api_key")
    )
    openai_base_url: str = Field(
        default="https://api.openai.com/v1",
        validation_alias=AliasChoices("OPENAI_BASE_URL", "openai_base_url"),
    )
    upstream_mode: UpstreamMode = "responses"
    backends: str | None = None
    router_strict: bool = False
    router_timeout_ms: int = Field(default=250, gt=0)
    router_privacy_mode: PrivacyMode = "features_only"
    # Plan cache (router-schema §7): TTL of plans without `cache` (0 = off); stale grace.
    cache_ttl_ms: int = Field(default=15_000, ge=0)
    cache_stale_ms: int = Field(default=60_000, ge=0)
    max_body_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    # Extension: a body must arrive within this (slowloris guard; 408 `request_timeout`).
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    upstream_connect_timeout_ms: int = Field(default=5000, gt=0)
    upstream_timeout_ms: int = Field(default=600_000, gt=0)
    keys_cache_ms: int = Field(default=5000, ge=0)
    # Extension: what a key's limits do while Redis fails (keys.md §4 says 503 for both).
    rate_limit_fail_open: bool = True
    budget_fail_open: bool = False
    analytics_spool_dir: Path = Path("./data/spool")
    pricing_config: Path | None = None
    catalog_path: Path | None = None
    trusted_proxies: str = "127.0.0.1/32,::1/128"
    system_prompt_config: Path | None = None
    # MCP (config-files §6): the servers file, the start/reload connect timeout per server,
    # and the execution round bound used when the file sets no `execution.max_rounds`.
    mcp_config: Path | None = None
    mcp_connect_timeout_ms: int = Field(default=10_000, gt=0)
    mcp_max_rounds: int = Field(default=5, ge=1, le=50)
    response_store_ttl_seconds: int = Field(default=2_592_000, gt=0)
    public_convert_internal_config: bool = False
    # Extension: CIDRs / hosts / `*.suffix` that router plans may point at besides public
    # addresses and the hosts of OPENAI_BASE_URL and SIGNALBOX_BACKENDS (SSRF guard).
    upstream_allowlist: str | None = None
    # Extension: browser origins allowed by CORS (comma list, `*` for any); unset = closed.
    cors_origins: str | None = None
    # Extension (not in the spec table): the SSE keep-alive interval, 15 s per http-api §3.
    sse_keepalive_seconds: float = Field(default=15.0, gt=0)
    # Observability: `GET /metrics` and the one JSON line per request (services/edge/telemetry).
    metrics_enabled: bool = True
    request_log: bool = True

    @field_validator(
        "admin_token",
        "openai_api_key",
        "backends",
        "pricing_config",
        "catalog_path",
        "system_prompt_config",
        "mcp_config",
        mode="before",
    )
    @classmethod
    def _blank_is_unset_edge(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("openai_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("router_privacy_mode", mode="before")
    @classmethod
    def _privacy_alias(cls, value: object) -> object:
        return "features_only" if value == "features" else value

    @field_validator("admin_token")
    @classmethod
    def _admin_token_long_enough(cls, value: str | None) -> str | None:
        if value is not None and len(value) < MIN_ADMIN_TOKEN_CHARS:
            raise ValueError(
                f"SIGNALBOX_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_CHARS} characters "
                f"(got {len(value)}); unset it to disable the admin routes"
            )
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_cidrs(cls, value: str) -> str:
        _parse_networks(value)
        return value

    @model_validator(mode="after")
    def _default_auth_mode(self) -> EdgeSettings:
        if self.auth_mode is None:
            mode = "managed" if self.openai_api_key else "passthrough"
            object.__setattr__(self, "auth_mode", mode)
        return self

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in (self.cors_origins or "").split(",") if o.strip()]

    @property
    def trusted_networks(self) -> tuple[IpNetwork, ...]:
        return _parse_networks(self.trusted_proxies)

    def dependency_addr(self, name: str) -> str | None:
        """The gRPC target of `router`/`keys`/`analytics`, or None when it is `off`."""
        addr = getattr(self, f"{name}_addr")
        return None if is_off(addr) else addr.strip()


def _parse_networks(value: str) -> tuple[IpNetwork, ...]:
    try:
        return tuple(
            ipaddress.ip_network(part.strip(), strict=False)
            for part in value.split(",")
            if part.strip()
        )
    except ValueError as exc:
        raise ValueError(f"SIGNALBOX_TRUSTED_PROXIES: {exc}") from exc
