"""Knobs of the keys service (`SIGNALBOX_KEYS_*`, spec keys §5 and README environment table)."""

from __future__ import annotations

from typing import Any

from pydantic import PositiveFloat, PositiveInt, field_validator

from services.common.config import CommonSettings


class KeysSettings(CommonSettings):
    """Bind address, expiry policy and the database health probe period."""

    keys_bind: str = "0.0.0.0:50052"
    keys_metrics_bind: str = "0.0.0.0:9182"  # Prometheus `GET /metrics`; `off` disables
    keys_require_expiration: bool = False
    keys_allow_no_expiration: bool = False
    keys_default_ttl_seconds: PositiveInt | None = None
    # How often the database is probed to flip gRPC health between SERVING and NOT_SERVING.
    keys_health_probe_seconds: PositiveFloat = 2.0

    @field_validator("keys_default_ttl_seconds", mode="before")
    @classmethod
    def _blank_ttl_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def expiration_required(self) -> bool:
        """The policy demands an expiry on every key (keys §5.4, §6 set_expiration)."""
        return self.keys_require_expiration and not self.keys_allow_no_expiration
