"""``fiovpn mcp``: the MCP server on stdio, for AI assistants."""

from __future__ import annotations

import click

from fiovpn.cli.output import json_option


def register(cli: click.Group) -> None:
    """Add this module's commands to the root group."""
    cli.add_command(mcp)


@click.command("mcp")
@json_option  # accepted like everywhere; stdio already speaks JSON-RPC
def mcp() -> None:
    """Serve fiovpn's tools over MCP on stdio (for AI assistants).

    \b
    Add to an MCP client configuration, e.g.:
      {"mcpServers": {"fiovpn": {"command": "fiovpn", "args": ["mcp"]}}}

    Tools: setup_foundries_vpn (start here), connect/disconnect/status/verify,
    registration, devices, ssh_to_device, server config. Help pages are served
    as resources fiovpn://docs/setup and fiovpn://docs/troubleshooting.
    No tool takes a password or token: set FIOVPN_API_TOKEN (or api-token-file
    in ~/.config/fiovpn/config.toml) in the server's environment.
    """
    # Imported here: the SDK is only loaded for this command.
    from fiovpn.mcpserver import build_server, real_services

    build_server(real_services()).run("stdio")
