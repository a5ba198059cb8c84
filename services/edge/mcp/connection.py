"""One live MCP server session, held open by its own task for the edge's lifetime.

The SDK's `Client` is an anyio context manager, so it must be entered and exited by the same
task: `McpConnection` runs it in a dedicated task and other tasks only send requests through
it. The tool list is fetched at connect, on `refresh()` (reload) and on the server's
`notifications/tools/list_changed`; never per inference request.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx2
import orjson
from mcp import Client, MCPDeprecationWarning, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, Implementation, TextContent, Tool, ToolListChangedNotification
from mcp_types import CONNECTION_CLOSED

from services.edge.mcp.config import ServerConfig

log = logging.getLogger(__name__)

State = Literal["connecting", "ok", "error", "closed"]
MAX_TOOL_PAGES = 20
CLOSE_TIMEOUT_S = 5.0
HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)
CLIENT_INFO = Implementation(name="signalbox-edge", version="1")


def describe(exc: BaseException) -> str:
    """The innermost cause of a (possibly grouped) failure, as `Type: message`."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        return exc.message
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def redact_url(url: str) -> str:
    """Scheme, host and path only: no userinfo, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def error_output(message: str) -> str:
    """config-files §6: a tool error reaches the model as `{"error": message}`."""
    return orjson.dumps({"error": message}).decode()


def render_result(result: CallToolResult) -> str:
    """Text blocks joined; other blocks (images, resources) as their JSON; errors wrapped."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        else:
            parts.append(orjson.dumps(block.model_dump(mode="json", exclude_none=True)).decode())
    text = "\n".join(parts)
    if not parts and result.structured_content is not None:
        text = orjson.dumps(result.structured_content).decode()
    return error_output(text or "tool failed") if result.is_error else text


@asynccontextmanager
async def _streamable_http(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
    async with (
        httpx2.AsyncClient(headers=headers, timeout=HTTP_TIMEOUT) as http,
        streamable_http_client(url, http_client=http) as streams,
    ):
        yield streams


def open_transport(config: ServerConfig) -> AbstractAsyncContextManager[Any]:
    """The SDK transport for a server: a spawned process (stdio) or an HTTP endpoint."""
    if config.command is not None:
        params = StdioServerParameters(
            command=config.command, args=list(config.args), env=config.env or None, cwd=config.cwd
        )
        return stdio_client(params)
    assert config.url is not None
    if config.kind == "sse":
        return sse_client(config.url, headers=config.headers or None)
    return _streamable_http(config.url, config.headers)


class McpConnection:
    """A server's session, its current tools and its health; `on_change` fires on any change."""

    def __init__(self, name: str, config: ServerConfig, on_change: Callable[[], None]) -> None:
        self.name = name
        self.config = config
        self.state: State = "connecting"
        self.error: str | None = None
        self.tools: tuple[Tool, ...] = ()
        self._on_change = on_change
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def healthy(self) -> bool:
        return self.state == "ok"

    async def start(self, timeout_s: float) -> None:
        """Connect and list tools; a failure or timeout leaves the connection in `error`."""
        self._task = asyncio.create_task(self._run(), name=f"mcp:{self.name}")
        try:
            async with asyncio.timeout(timeout_s):
                await self._ready.wait()
        except TimeoutError:
            self._fail(f"no answer within {timeout_s:g}s")
            await self._shutdown()

    async def _run(self) -> None:
        try:
            async with Client(
                open_transport(self.config),
                mode="legacy",
                cache=None,
                client_info=CLIENT_INFO,
                message_handler=self._on_message,
            ) as client:
                self.tools = await self._list_tools(client)
                self._client = client
                self.state, self.error = "ok", None
                self._ready.set()
                log.info(
                    "mcp server connected",
                    extra={"mcp_server": self.name, "tools": len(self.tools)},
                )
                self._on_change()
                await self._stop.wait()
        except Exception as exc:
            self._fail(describe(exc))
        finally:
            self._client = None
            self._ready.set()

    @staticmethod
    async def _list_tools(client: Client) -> tuple[Tool, ...]:
        tools: list[Tool] = []
        cursor: str | None = None
        for _ in range(MAX_TOOL_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        return tuple(tools)

    def _fail(self, message: str) -> None:
        if self.state == "closed" or (self._stop.is_set() and self.state == "ok"):
            return  # an orderly close, not a failure
        if self.config.url:  # errors may quote the URL; its query or userinfo may hold a token
            message = message.replace(self.config.url, redact_url(self.config.url))
        if self.state != "error" or self.error != message:
            log.warning(
                "mcp server unavailable; its tools are skipped",
                extra={"mcp_server": self.name, "error": message},
            )
        self.state, self.error = "error", message
        self._on_change()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, ToolListChangedNotification):
            self._spawn(self.refresh())
        elif isinstance(message, Exception):
            log.warning(
                "mcp transport error", extra={"mcp_server": self.name, "error": describe(message)}
            )

    async def refresh(self) -> bool:
        """Re-list the tools; False (and `error`) when the server no longer answers."""
        client = self._client
        if client is None or self.state != "ok":
            return False
        try:
            async with asyncio.timeout(self.config.timeout_ms / 1000):
                self.tools = await self._list_tools(client)
        except Exception as exc:
            self._fail(describe(exc))
            return False
        self._on_change()
        return True

    async def ping(self, timeout_s: float) -> None:
        """Readiness probe: raises (and marks the server failed) when it does not answer."""
        client = self._client
        if client is None or self.state != "ok":
            raise ConnectionError(self.error or "not connected")
        try:
            with warnings.catch_warnings():  # ping is legacy-only; we connect in legacy mode
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                pinging = client.send_ping()
            async with asyncio.timeout(timeout_s):
                await pinging
        except Exception as exc:
            if isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
                self._fail(describe(exc))
            raise

    async def call_tool(self, tool: str, arguments: dict[str, Any]) -> str:
        """The tool's output as text for the model; every failure is an `{"error"}` output."""
        client = self._client
        if client is None or self.state != "ok":
            return error_output(f"MCP server {self.name!r} is unavailable")
        timeout_s = self.config.timeout_ms / 1000
        try:
            async with asyncio.timeout(timeout_s):
                result = await client.call_tool(tool, arguments, read_timeout_seconds=timeout_s)
        except TimeoutError:
            return error_output(f"tool {tool!r} timed out after {timeout_s:g}s")
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                self._fail(describe(exc))
            return error_output(describe(exc))
        except Exception as exc:
            log.warning(
                "mcp tool call failed",
                extra={"mcp_server": self.name, "tool": tool, "error": describe(exc)},
            )
            return error_output(describe(exc))
        return render_result(result)

    async def _shutdown(self) -> None:
        self._stop.set()
        task = self._task
        if task is None or task.done():
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        await self._shutdown()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self.state = "closed"
