"""The MCP config file (config-files §6): `{"mcpServers": {...}, "execution": {...}}`.

Besides the spec's stdio servers (`command`, `args`, `env`), a server may be reached over
HTTP by `url` (Streamable HTTP, or the older SSE transport). Loading is strict so a typo is
reported by `/reload/mcp` (500 `config_invalid`) instead of silently dropping a server.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.common.config import load_json_file

Transport = Literal["stdio", "streamable-http", "sse"]
SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,48}$")
_TRANSPORT_ALIASES = {"http": "streamable-http", "streamable_http": "streamable-http"}


class McpConfigError(ValueError):
    """The file is missing, not JSON, or does not match the schema; the message says where."""


class ServerConfig(BaseModel):
    """One MCP server: a command to spawn (stdio) or a URL (HTTP)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    transport: Transport | None = Field(default=None, validation_alias="type")
    headers: dict[str, str] = Field(default_factory=dict)
    execute: bool = False
    timeout_ms: int = Field(default=30_000, gt=0)

    @field_validator("transport", mode="before")
    @classmethod
    def _alias(cls, value: object) -> object:
        return _TRANSPORT_ALIASES.get(value, value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_endpoint(self) -> ServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("set exactly one of 'command' (stdio) or 'url' (HTTP)")
        if self.command is not None and self.transport not in (None, "stdio"):
            raise ValueError(f"'command' servers use stdio, not {self.transport!r}")
        if self.url is not None and self.transport == "stdio":
            raise ValueError("'url' servers use 'streamable-http' or 'sse', not 'stdio'")
        return self

    @property
    def kind(self) -> Transport:
        if self.command is not None:
            return "stdio"
        if self.transport is not None:
            return self.transport
        assert self.url is not None
        return "sse" if self.url.rstrip("/").endswith("/sse") else "streamable-http"


class ExecutionConfig(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    max_rounds: int | None = Field(default=None, ge=1, le=50)


class McpConfig(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    servers: dict[str, ServerConfig] = Field(default_factory=dict, validation_alias="mcpServers")
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)

    @field_validator("servers")
    @classmethod
    def _names(cls, servers: dict[str, ServerConfig]) -> dict[str, ServerConfig]:
        for name in servers:
            if not SERVER_NAME.match(name):
                raise ValueError(
                    f"server name {name!r} must match {SERVER_NAME.pattern} "
                    "(it prefixes tool names sent to the model)"
                )
        return servers


def load_config(path: Path) -> McpConfig:
    """Parse and validate the file; every failure is an `McpConfigError`."""
    return load_json_file(path, McpConfig, McpConfigError, expected=" with 'mcpServers'")
