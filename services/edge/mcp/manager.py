"""All configured MCP servers: connected at start, reloaded on `POST /reload/mcp`.

The manager owns one `McpConnection` per server and publishes an immutable `ToolCatalog` of
the healthy ones; requests read the current catalog, so a reload or a tools/list_changed
notification swaps it without locking. Failing servers are skipped with a warning and
reported by `/status` and `/_health/ready`; they never fail a request.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from pathlib import Path
from typing import Any, Literal

from services.edge.errors import ApiError
from services.edge.mcp.config import McpConfig, McpConfigError, load_config
from services.edge.mcp.connection import McpConnection, error_output
from services.edge.mcp.execution import Opener, RequestTools, current_request, run_rounds
from services.edge.mcp.tools import ToolCatalog, build_tools

log = logging.getLogger(__name__)

Api = Literal["chat", "responses"]
DEFAULT_MAX_ROUNDS = 5


class McpManager:
    """`merge` and `rounds` are the proxy's hooks; `reload`, `status`, `check` serve admins."""

    def __init__(
        self,
        config_path: Path | None = None,
        *,
        connect_timeout_s: float = 10.0,
        default_max_rounds: int = DEFAULT_MAX_ROUNDS,
    ) -> None:
        self.config_path = config_path
        self.config = McpConfig()
        self.connections: dict[str, McpConnection] = {}
        self.catalog = ToolCatalog()
        self._connect_timeout_s = connect_timeout_s
        self._default_max_rounds = default_max_rounds
        self._reload_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, config_path: Path | None, *, connect_timeout_s: float, default_max_rounds: int
    ) -> McpManager:
        """Load the file (a broken file aborts the start) and connect every server."""
        manager = cls(
            config_path, connect_timeout_s=connect_timeout_s, default_max_rounds=default_max_rounds
        )
        if config_path is not None:
            manager.config = load_config(config_path)
            await manager._connect(manager.config.servers)
        return manager

    @property
    def enabled(self) -> bool:
        return self.config_path is not None

    @property
    def max_rounds(self) -> int:
        return self.config.execution.max_rounds or self._default_max_rounds

    # --- the request path -------------------------------------------------------------

    def merge(self, api: Api, body: dict[str, Any], *, internal: bool = False) -> dict[str, Any]:
        """Step 5: the body with every healthy server's tools (client tools win on a clash).

        `internal=True` is the `/convert` form (flat, with `source`/`groups`).
        """
        catalog = self.catalog
        merged, added = catalog.merge(api, body, internal=internal)
        executable = frozenset(n for n in added if catalog.by_name[n].execute)
        current_request.set(RequestTools(catalog, executable) if executable else None)
        return merged

    def rounds(self, api: Api, body: dict[str, Any], opener: Opener) -> Opener:
        """`opener` itself, or a wrapper running executable MCP calls between rounds."""
        tools = current_request.get()
        if tools is None:
            return opener

        async def open_with_tools(*args: Any, **kwargs: Any) -> Any:
            return await run_rounds(
                opener, args, kwargs, api=api, body=body, tools=tools,
                max_rounds=self.max_rounds, run=functools.partial(self.call, tools.catalog),
            )  # fmt: skip

        return open_with_tools

    async def call(self, catalog: ToolCatalog, name: str, arguments: dict[str, Any]) -> str:
        tool = catalog.by_name.get(name)
        connection = self.connections.get(tool.server) if tool is not None else None
        if tool is None or connection is None:
            return error_output(f"unknown MCP tool {name!r}")
        return await connection.call_tool(tool.tool, arguments)

    # --- lifecycle ----------------------------------------------------------------------

    def _rebuild(self) -> None:
        tools = []
        for name, connection in self.connections.items():
            if connection.healthy:
                tools += build_tools(name, connection.tools, execute=connection.config.execute)
        self.catalog = ToolCatalog.of(tools)

    async def _connect(self, servers: dict[str, Any]) -> dict[str, McpConnection]:
        """Start the given servers concurrently; each gets the connect timeout."""
        started = {
            name: McpConnection(name, server, self._rebuild) for name, server in servers.items()
        }
        self.connections.update(started)
        await asyncio.gather(*(c.start(self._connect_timeout_s) for c in started.values()))
        self._rebuild()
        return started

    async def reload(self) -> dict[str, Any]:
        """`POST /reload/mcp`: re-read the file, restart changed servers, re-list the rest."""
        if self.config_path is None:
            raise ApiError(400, "config_not_set", "No MCP config: set SIGNALBOX_MCP_CONFIG")
        async with self._reload_lock:
            try:
                config = load_config(self.config_path)
            except McpConfigError as exc:
                raise ApiError(500, "config_invalid", f"MCP config not reloaded: {exc}") from None
            old = self.connections
            removed = [n for n in old if n not in config.servers]
            changed = [n for n, s in config.servers.items() if n in old and old[n].config != s]
            added = [n for n in config.servers if n not in old]
            kept = [n for n in config.servers if n in old and n not in changed]
            retry = [n for n in kept if not old[n].healthy]
            refresh = [n for n in kept if old[n].healthy]
            stale = [old[n] for n in (*removed, *changed, *retry)]
            for name in removed:
                del self.connections[name]
            self.config = config
            restart = {n: config.servers[n] for n in (*changed, *retry, *added)}
            await asyncio.gather(self._connect(restart), *(old[n].refresh() for n in refresh))
            await asyncio.gather(*(c.close() for c in stale))
            self._rebuild()
        servers = self.servers()
        healthy = sum(1 for s in servers if s["status"] == "ok")
        return {
            "success": True,
            "message": f"MCP config reloaded: {healthy}/{len(servers)} servers connected, "
            f"{len(self.catalog.tools)} tools",
            "servers": servers,
            "count": len(self.catalog.tools),
            "changes": {"added": added, "removed": removed, "restarted": [*changed, *retry],
                        "refreshed": refresh},
        }  # fmt: skip

    async def close(self) -> None:
        connections = list(self.connections.values())
        self.connections = {}
        self.catalog = ToolCatalog()
        await asyncio.gather(*(c.close() for c in connections))

    # --- reporting ----------------------------------------------------------------------

    def servers(self) -> list[dict[str, Any]]:
        """Per server: transport, health and tool count; never its command, env, URL or headers."""
        return [
            {
                "name": name,
                "transport": c.config.kind,
                "status": c.state,
                "healthy": c.healthy,
                "tools": len(c.tools) if c.healthy else 0,
                "tool_names": [t.name for t in self.catalog.tools if t.server == name],
                "execute": c.config.execute,
                "error": c.error,
            }
            for name, c in self.connections.items()
        ]

    def status(self) -> dict[str, Any]:
        """The `features.mcp` object of `GET /status` (http-api §6)."""
        return {
            "enabled": self.enabled,
            "config_path": str(self.config_path) if self.config_path else None,
            "reloadable": self.enabled,
            "servers": self.servers(),
            "tools_count": len(self.catalog.tools),
            "execution": {
                "enabled": any(c.config.execute for c in self.connections.values()),
                "max_rounds": self.max_rounds,
                "servers": [n for n, c in self.connections.items() if c.config.execute],
            },
        }

    async def check(self, timeout_s: float) -> None:
        """Readiness: every configured server answers a ping; raises naming those that do not."""
        names = list(self.connections)
        results = await asyncio.gather(
            *(self.connections[n].ping(timeout_s) for n in names), return_exceptions=True
        )
        failed = [
            f"{name}: {self.connections[name].error or type(r).__name__}"
            for name, r in zip(names, results, strict=True)
            if isinstance(r, BaseException)
        ]
        if failed:
            raise ConnectionError("MCP servers unavailable: " + "; ".join(failed))
