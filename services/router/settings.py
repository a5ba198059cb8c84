"""Router knobs (spec README environment table); validated once at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from services.common.backends import UPSTREAM_MODES
from services.common.config import CommonSettings

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"


class RouterSettings(CommonSettings):
    """`SIGNALBOX_*` router settings plus the provider-wide `OPENAI_BASE_URL`."""

    router_bind: str = "0.0.0.0:50051"
    router_http_bind: str = "0.0.0.0:8090"
    router_metrics_bind: str = "0.0.0.0:9181"  # Prometheus `GET /metrics`; `off` disables
    router_aliases: Path | None = None
    catalog_path: Path | None = None
    backends: str | None = None
    upstream_mode: str = "responses"
    openai_base_url: str = Field(
        default=DEFAULT_OPENAI_BASE_URL,
        validation_alias="OPENAI_BASE_URL",
    )
    router_default_upstream: bool = True
    knn_train_path: Path | None = None
    knn_index_dir: Path = Path("./data/knn")
    # an exported model dir, ONNX or static; unset → `knn-model` beside the index
    knn_model_dir: Path | None = None
    embedding_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    admin_token: str | None = Field(default=None, repr=False)

    @field_validator(
        "router_aliases",
        "catalog_path",
        "backends",
        "knn_train_path",
        "knn_model_dir",
        "admin_token",
        mode="before",
    )
    @classmethod
    def _blank_is_unset_router(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("upstream_mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        mode = value.strip().lower()
        if mode not in UPSTREAM_MODES:
            raise ValueError(f"must be one of {', '.join(UPSTREAM_MODES)}")
        return mode

    @field_validator("openai_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")
