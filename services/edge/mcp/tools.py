"""The MCP tool catalog as the model sees it, and its merge into client requests.

A `ToolCatalog` is an immutable snapshot rebuilt whenever a server's tools or health change,
so a request only pays for a list concatenation. Tools are exposed as `<server>_<tool>` in
the chat form (`{"type":"function","function":{…}}`) or the flat Responses form; a client
tool with the same name wins (config-files §6).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger(__name__)

Api = Literal["chat", "responses"]
FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_DESCRIPTION = "MCP tool"
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class McpTool:
    """One exposed tool: its public name and where calls to it go."""

    name: str
    server: str
    tool: str
    description: str
    parameters: dict[str, Any]
    execute: bool

    def chat_form(self) -> dict[str, Any]:
        function = {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
        }
        return {"type": "function", "function": function}

    def responses_form(self, *, internal: bool = False) -> dict[str, Any]:
        flat = {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
        }
        if internal:  # `/convert?include_internal_config=true` only; never sent upstream
            flat["source"] = "mcp"
            flat["groups"] = [self.server]
        return flat


def _parameters(schema: Any) -> dict[str, Any]:
    if not isinstance(schema, Mapping) or schema.get("type") != "object":
        return dict(EMPTY_PARAMETERS)
    return dict(schema)


def build_tools(server: str, tools: Iterable[Any], *, execute: bool) -> list[McpTool]:
    """`McpTool`s of one server, skipping names a provider would reject (warned)."""
    built = []
    for tool in tools:
        name = f"{server}_{tool.name}"
        if not FUNCTION_NAME.match(name):
            log.warning(
                "mcp tool skipped: invalid function name",
                extra={"mcp_server": server, "tool": tool.name},
            )
            continue
        built.append(
            McpTool(
                name=name,
                server=server,
                tool=tool.name,
                description=tool.description or DEFAULT_DESCRIPTION,
                parameters=_parameters(tool.input_schema),
                execute=execute,
            )
        )
    return built


def client_tool_names(api: Api, tools: Any) -> set[str]:
    """Names the client declared, in either tool shape (chat nested or flat)."""
    names: set[str] = set()
    if not isinstance(tools, list):
        return names
    for tool in tools:
        if not isinstance(tool, Mapping):
            continue
        nested = tool.get("function") if api == "chat" else None
        nested = nested if isinstance(nested, Mapping) else tool.get("custom")
        name = nested.get("name") if isinstance(nested, Mapping) else tool.get("name")
        if isinstance(name, str):
            names.add(name)
    return names


@dataclass(frozen=True)
class ToolCatalog:
    """Every healthy server's tools, precomputed in both wire shapes."""

    tools: tuple[McpTool, ...] = ()
    by_name: Mapping[str, McpTool] = field(default_factory=dict)
    chat: tuple[dict[str, Any], ...] = ()
    responses: tuple[dict[str, Any], ...] = ()

    @classmethod
    def of(cls, tools: Iterable[McpTool]) -> ToolCatalog:
        unique: dict[str, McpTool] = {}
        for tool in tools:
            if tool.name in unique:
                log.warning("mcp tool name collision; first kept", extra={"tool": tool.name})
                continue
            unique[tool.name] = tool
        listed = tuple(unique.values())
        return cls(
            tools=listed,
            by_name=unique,
            chat=tuple(t.chat_form() for t in listed),
            responses=tuple(t.responses_form() for t in listed),
        )

    def merge(
        self, api: Api, body: dict[str, Any], *, internal: bool = False
    ) -> tuple[dict[str, Any], frozenset[str]]:
        """The body with our tools appended, and the names actually added.

        A `tools` value that is not a list is left for the upstream to reject.
        """
        if not self.tools:
            return body, frozenset()
        current = body.get("tools")
        if current is not None and not isinstance(current, list):
            return body, frozenset()
        taken = client_tool_names(api, current)
        if internal:
            forms = tuple(t.responses_form(internal=True) for t in self.tools)
        else:
            forms = self.chat if api == "chat" else self.responses
        added = [(t.name, form) for t, form in zip(self.tools, forms, strict=True)]
        added = [(name, form) for name, form in added if name not in taken]
        if not added:
            return body, frozenset()
        merged = [*(current or []), *(form for _, form in added)]
        return {**body, "tools": merged}, frozenset(name for name, _ in added)
