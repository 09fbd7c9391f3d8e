"""``fiovpn``: the root command."""

from __future__ import annotations

import click

from fiovpn import __version__
from fiovpn.cli import client, demo, devices, keys, lab, mcp, sandbox, server
from fiovpn.cli.output import json_option


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="fiovpn")
@json_option
def cli() -> None:
    """fiovpn: the WireGuard VPN joining a FoundriesFactory fleet, its engineers
    and one WireGuard server.

    \b
    First admin (on the server):  fiovpn keys generate; fiovpn server clients add ...
    Engineer:                     fiovpn client init; fiovpn check-registered
    Everyone on the VPN:          fiovpn connect; fiovpn verify; fiovpn devices list
    Server:                       fiovpn server enable; fiovpn server daemon
    Trying it out (as root):      fiovpn demo

    Every command takes --json. Exit codes: 0 ok, 1 failed, 2 bad input.
    """


# devices before client: the client module adds its SSH-based d2d commands to `devices`.
for module in (keys, server, devices, client, sandbox, lab, mcp, demo):
    module.register(cli)


def main() -> None:
    cli(prog_name="fiovpn")
