"""Knobs of the analytics service (`SIGNALBOX_ANALYTICS_*`, spec README environment table)."""

from __future__ import annotations

from typing import Any

from pydantic import PositiveFloat, PositiveInt, field_validator

from services.common.config import CommonSettings


class AnalyticsSettings(CommonSettings):
    """Bind address, retention, pricing sources and the background task periods."""

    analytics_bind: str = "0.0.0.0:50053"
    analytics_metrics_bind: str = "0.0.0.0:9183"  # Prometheus `GET /metrics`; `off` disables
    # Unset keeps events forever.
    analytics_retention_seconds: PositiveInt | None = None
    # How often the retention sweep runs (extension, not in the spec table).
    analytics_retention_interval_seconds: PositiveFloat = 60.0
    # How often the database is probed to flip gRPC health (extension, not in the spec table).
    analytics_health_probe_seconds: PositiveFloat = 2.0
    pricing_config: str | None = None
    catalog_path: str | None = None

    @field_validator("analytics_retention_seconds", "pricing_config", "catalog_path", mode="before")
    @classmethod
    def _blank_is_unset_analytics(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value
