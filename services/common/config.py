"""Settings shared by every service: `SIGNALBOX_*` env vars over an optional TOML file.

Each service subclasses `CommonSettings`; values are validated once at start so a bad
knob fails the process immediately instead of at the first request.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "SIGNALBOX_"
OFF = "off"


def _config_file() -> Path | None:
    path = os.environ.get(f"{ENV_PREFIX}CONFIG_FILE")
    return Path(path) if path else None


class CommonSettings(BaseSettings):
    """Knobs every service understands (documented in the README's configuration table)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    log_level: str = "INFO"
    internal_token: str | None = None
    database_url: str | None = None
    redis_url: str | None = None
    redis_key_prefix: str = "signalbox:"
    data_dir: Path = Path("./data")
    shutdown_grace_seconds: float = 30.0

    @field_validator("internal_token", "database_url", "redis_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment wins over `SIGNALBOX_CONFIG_FILE` (TOML, flat keys without the prefix)."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file()
        if path is not None:
            if not path.is_file():
                raise FileNotFoundError(f"{ENV_PREFIX}CONFIG_FILE={path} does not exist")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "signalbox.db"


def split_bind(bind: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) into its parts, for servers that want them apart."""
    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bind address must be host:port, got {bind!r}")
    return host.strip("[]"), int(port)


def is_off(addr: str | None) -> bool:
    """`*_ADDR=off` (or empty) disables that dependency."""
    return addr is None or addr.strip().lower() in ("", OFF)


Model = TypeVar("Model", bound=BaseModel)


def load_json_file(
    path: Path, model: type[Model], error: type[ValueError] = ValueError, *, expected: str = ""
) -> Model:
    """A JSON config file validated by `model`. Every failure is `error` with a message naming
    the file and each bad field, so a reload can refuse it in one readable line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise error(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object{expected}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
            for err in exc.errors()
        )
        raise error(f"{path}: {problems}") from None
