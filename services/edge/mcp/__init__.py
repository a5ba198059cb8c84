"""MCP tools for the edge (config-files §6): servers, tool merge, server-side execution."""

from services.edge.mcp.config import McpConfig, McpConfigError, ServerConfig, load_config
from services.edge.mcp.manager import McpManager
from services.edge.mcp.tools import McpTool, ToolCatalog

__all__ = [
    "McpConfig",
    "McpConfigError",
    "McpManager",
    "McpTool",
    "ServerConfig",
    "ToolCatalog",
    "load_config",
]
