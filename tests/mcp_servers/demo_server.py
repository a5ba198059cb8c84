"""A real MCP server for the tests, written with the official `mcp` SDK.

`python -m tests.mcp_servers.demo_server [--transport stdio|streamable-http|sse] [--port N]`

Tools: `add`, `echo`, `env` (reads an env var, proving the config's `env` reached the
process), `fail` (a tool error), `grow` (registers `extra` and sends
`notifications/tools/list_changed`), `crash` (the process exits mid-call).
`--prefix` renames every tool (`<prefix>add`, …) so a reload can be seen to change the list.
"""

from __future__ import annotations

import argparse
import os

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError


def build(prefix: str = "") -> MCPServer:
    server = MCPServer("signalbox-demo", log_level="WARNING")

    @server.tool(name=f"{prefix}add", description="Add two integers.")
    def add(a: int, b: int) -> str:
        return str(a + b)

    @server.tool(name=f"{prefix}echo")
    def echo(text: str) -> str:
        return text

    @server.tool(name=f"{prefix}env", description="Read an environment variable.")
    def env(name: str) -> str:
        return os.environ.get(name, "")

    @server.tool(name=f"{prefix}fail", description="Always fails.")
    def fail(reason: str) -> str:
        raise ToolError(f"tool failed: {reason}")

    @server.tool(name=f"{prefix}grow", description="Adds the tool 'extra'.")
    async def grow(ctx: Context) -> str:
        def extra() -> str:
            return "extra"

        server.add_tool(extra, name=f"{prefix}extra", description="Added at runtime.")
        await ctx.session.send_tool_list_changed()
        return "grown"

    @server.tool(name=f"{prefix}crash", description="Kills the server process.")
    def crash() -> str:
        os._exit(3)

    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", default="stdio", choices=["stdio", "streamable-http", "sse"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--prefix", default="")
    args = parser.parse_args()
    server = build(args.prefix)
    if args.transport == "stdio":
        server.run("stdio")
    else:
        server.run(args.transport, host="127.0.0.1", port=args.port)  # type: ignore[call-overload]


if __name__ == "__main__":
    main()
