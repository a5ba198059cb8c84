"""System-prompt injection (config-files §5): one operator prompt added to every request.

The file is read at start (a bad file aborts the edge) and on `POST /reload/system_prompt`
(a bad file keeps the previous config). Injection is a pure function of (config, api, body),
applied before routing so the router's fingerprint already includes the prompt.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.common.config import load_json_file
from services.edge.errors import ApiError

log = logging.getLogger(__name__)

Api = Literal["chat", "responses"]
MODES = ("prepend", "append", "replace")
_SYSTEM_ROLES = ("system", "developer")


class SystemPromptConfig(BaseModel):
    """The file's schema; `injection_mode` keeps any string (unknown values act as prepend)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    global_prompt: str | None = Field(default=None, alias="global")
    per_model: dict[str, str] = Field(default_factory=dict)
    per_api: dict[str, str] = Field(default_factory=dict)
    injection_mode: str = "prepend"
    enabled: bool = True

    @property
    def mode(self) -> str:
        return self.injection_mode if self.injection_mode in MODES else "prepend"

    def select(self, api: Api, model: str | None) -> str | None:
        """`per_model[model]`, else `per_api[api]`, else `global`; None when nothing applies."""
        if not self.enabled:
            return None
        if model is not None and model in self.per_model:
            return self.per_model[model] or None
        if api in self.per_api:
            return self.per_api[api] or None
        return self.global_prompt or None


def load_config(path: Path) -> SystemPromptConfig:
    """Parse the file; raises ValueError with a readable reason."""
    return load_json_file(path, SystemPromptConfig)


def _is_system(entry: Any) -> bool:
    return isinstance(entry, dict) and entry.get("role") in _SYSTEM_ROLES


def _insert_at(entries: list[Any], mode: str) -> tuple[list[Any], int]:
    """The list to insert into (system entries removed for `replace`) and the index."""
    if mode == "replace":
        return [e for e in entries if not _is_system(e)], 0
    if mode == "append":
        leading = 0
        while leading < len(entries) and _is_system(entries[leading]):
            leading += 1
        return list(entries), leading
    return list(entries), 0


def inject_chat(body: dict[str, Any], prompt: str, mode: str) -> dict[str, Any]:
    """A `system` message in `messages`."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return body
    out, at = _insert_at(messages, mode)
    out.insert(at, {"role": "system", "content": prompt})
    return {**body, "messages": out}


def inject_responses(body: dict[str, Any], prompt: str, mode: str) -> dict[str, Any]:
    """A system input item; a string `input` becomes `[system item, user item]`."""
    item = {"type": "message", "role": "system", "content": prompt}
    raw = body.get("input")
    if isinstance(raw, str):
        items: list[Any] = [{"type": "message", "role": "user", "content": raw}]
    elif isinstance(raw, list):
        items = raw
    elif raw is None:
        items = []
    else:
        return body  # malformed input: the translation layer names the field
    out, at = _insert_at(items, mode)
    out.insert(at, item)
    result = {**body, "input": out}
    if mode == "replace":
        result.pop("instructions", None)
    return result


def inject(
    config: SystemPromptConfig | None, api: Api, body: dict[str, Any], *, model: str | None = None
) -> dict[str, Any]:
    """The body with the selected prompt injected; unchanged when nothing is selected."""
    if config is None:
        return body
    prompt = config.select(api, model if model is not None else body.get("model"))
    if prompt is None:
        return body
    if api == "chat":
        return inject_chat(body, prompt, config.mode)
    return inject_responses(body, prompt, config.mode)


class SystemPrompts:
    """The live config behind the edge; swapped atomically by `reload()`."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.config = load_config(path) if path is not None else None

    def apply(self, api: Api, body: dict[str, Any], *, model: str | None = None) -> dict[str, Any]:
        return inject(self.config, api, body, model=model)

    async def reload(self) -> dict[str, Any]:
        """`POST /reload/system_prompt` (http-api §9); a failure keeps the old config."""
        if self.path is None:
            raise ApiError(
                400, "config_not_set", "SIGNALBOX_SYSTEM_PROMPT_CONFIG is not set", param=None
            )
        try:
            config = load_config(self.path)
        except ValueError as exc:
            log.warning("system prompt reload failed", extra={"error": str(exc)})
            raise ApiError(500, "config_invalid", str(exc)) from None
        self.config = config
        log.info("system prompt reloaded", extra={"path": str(self.path)})
        return {"success": True, "message": "System prompt config reloaded", **self.summary()}

    def summary(self) -> dict[str, Any]:
        config = self.config
        if config is None:
            return {
                "enabled": False,
                "has_global": False,
                "per_model_count": 0,
                "per_api_count": 0,
                "injection_mode": "prepend",
            }
        return {
            "enabled": config.enabled,
            "has_global": bool(config.global_prompt),
            "per_model_count": len(config.per_model),
            "per_api_count": len(config.per_api),
            "injection_mode": config.mode,
        }

    def status(self) -> dict[str, Any]:
        """The `/status` `features.system_prompt` block."""
        summary = self.summary()
        return {
            "enabled": summary["enabled"],
            "config_path": str(self.path) if self.path is not None else None,
            "injection_mode": summary["injection_mode"],
        }
