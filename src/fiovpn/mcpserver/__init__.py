"""The MCP server: every fiovpn flow as a tool for AI assistants.

Thin adapters over the same services the CLI uses (never over the CLI).
``build_server(services)`` takes the service bundle so tests can pass fakes of
fiovpn's own services; ``fiovpn mcp`` passes the real ones.
"""

from fiovpn.mcpserver.server import TOOL_NAMES, build_server
from fiovpn.mcpserver.services import Services, real_services

__all__ = ["TOOL_NAMES", "Services", "build_server", "real_services"]
