"""How the mock answers one request: a scripted step, `X-Mock-*` headers, or the model id.

Precedence: the first queued script step that matches the model, then headers, then the
model-id patterns (`mock-fail-500`, `mock-slow-200`, `mock-stall-300`, `mock-cut-2`).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

DEFAULT_TEXT = "Hello from the mock upstream."

_MODEL_PATTERNS = {
    "fail": "status",
    "slow": "latency_ms",
    "stall": "first_byte_ms",
    "cut": "cut_after",
}
_MODEL_RE = re.compile(r"^mock-(fail|slow|stall|cut)-(\d+)$")
_HEADERS = {
    "x-mock-status": "status",
    "x-mock-latency-ms": "latency_ms",
    "x-mock-first-byte-ms": "first_byte_ms",
    "x-mock-cut-after": "cut_after",
    "x-mock-chunk-delay-ms": "chunk_delay_ms",
    "x-mock-retry-after": "retry_after",
    "x-mock-text": "text",
    "x-mock-non-json": "non_json",
}


@dataclass(frozen=True)
class Behaviour:
    """`status` ≥ 400 answers an error; `cut_after` drops the connection after N events."""

    status: int = 200
    latency_ms: int = 0
    first_byte_ms: int = 0
    chunk_delay_ms: int = 0
    cut_after: int | None = None
    retry_after: int | None = None
    text: str = DEFAULT_TEXT
    non_json: bool = False
    # Function calls to answer with instead of text: `[{"name", "arguments"(JSON string)}]`.
    tool_calls: tuple[dict[str, str], ...] | None = None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Behaviour:
        known = {f.name: f.type for f in fields(cls)}
        unknown = set(raw) - set(known) - {"model"}
        if unknown:
            raise ValueError(f"unknown behaviour fields: {sorted(unknown)}")
        values = {k: v for k, v in raw.items() if k in known}
        if values.get("tool_calls") is not None:
            values["tool_calls"] = tuple(_tool_call(c) for c in values["tool_calls"])
        return cls(**values)


def _tool_call(raw: Any) -> dict[str, str]:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
        raise ValueError("each tool call needs a 'name'")
    arguments = raw.get("arguments", "{}")
    if not isinstance(arguments, str):
        raise ValueError("tool call 'arguments' must be a JSON string")
    return {"name": raw["name"], "arguments": arguments}


def _coerce(name: str, value: str) -> Any:
    if name == "text":
        return value
    if name == "non_json":
        return value.lower() in ("1", "true", "yes", "on")
    return int(value)


def from_request(model: str, headers: Mapping[str, str]) -> Behaviour:
    changes: dict[str, Any] = {}
    if match := _MODEL_RE.match(model):
        changes[_MODEL_PATTERNS[match.group(1)]] = int(match.group(2))
    for header, name in _HEADERS.items():
        if header in headers:
            changes[name] = _coerce(name, headers[header])
    return replace(Behaviour(), **changes)


class Script:
    """A FIFO of behaviours set through `POST /_mock/script`; each step is used once."""

    def __init__(self) -> None:
        self._steps: deque[tuple[str | None, Behaviour]] = deque()

    def extend(self, steps: list[Mapping[str, Any]]) -> int:
        parsed = [(s.get("model"), Behaviour.from_mapping(s)) for s in steps]
        self._steps.extend(parsed)
        return len(parsed)

    def clear(self) -> None:
        self._steps.clear()

    def take(self, model: str) -> Behaviour | None:
        for index, (wanted, behaviour) in enumerate(self._steps):
            if wanted is None or wanted == model:
                del self._steps[index]
                return behaviour
        return None

    def __len__(self) -> int:
        return len(self._steps)
