"""``fiovpn mcp``: the MCP server on stdio, for AI assistants."""

from __future__ import annotations

import click

from fiovpn.cli.output import json_option


def register(cli: click.Group) -> None:
    """Add this module's commands to the root group."""
    cli.add_command(mcp)


@click.command("mcp")
@json_option  # accepted like everywhere; stdio already speaks JSON-RPC
@click.option("--read-only", "read_only", is_flag=True,
              help="Serve only the read-only tools (status, verify, lists, config, guide).")
@click.option("--allow-devices", "allow_devices", default=None, metavar="GLOB",
              help="Device-touching tools refuse devices whose name does not match GLOB "
                   "(e.g. 'lab-*').")
def mcp(read_only: bool, allow_devices: str | None) -> None:
    """Serve fiovpn's tools over MCP on stdio (for AI assistants).

    \b
    Add to an MCP client configuration, e.g.:
      {"mcpServers": {"fiovpn": {"command": "fiovpn", "args": ["mcp"]}}}

    Tools: setup_foundries_vpn (start here), connect/disconnect/status/verify,
    registration, devices, ssh_to_device, server config. Help pages are served
    as resources fiovpn://docs/setup and fiovpn://docs/troubleshooting.
    No tool takes a password or token: set FIOVPN_API_TOKEN (or api-token-file
    in ~/.config/fiovpn/config.toml) in the server's environment.

    Every device-touching call is a line in ~/.local/state/fiovpn/journal.jsonl.
    \b
      fiovpn mcp --read-only                 (look, never change)
      fiovpn mcp --allow-devices 'lab-*'     (touch only the lab devices)
    """
    # Imported here: the SDK is only loaded for this command.
    from fiovpn.mcpserver import build_server, real_services
    from fiovpn.mcpserver.guard import Guard

    build_server(real_services(), Guard(read_only=read_only, allow_devices=allow_devices)
                 ).run("stdio")
