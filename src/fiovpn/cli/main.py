"""``fiovpn``: the root command."""

from __future__ import annotations

import json
import sys

import click

from fiovpn import __version__
from fiovpn.cli import client, demo, devices, keys, lab, mcp, reach, sandbox, server
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
for module in (keys, server, devices, client, reach, sandbox, lab, mcp, demo):
    module.register(cli)


def _json_on_every_group(group: click.Group) -> None:
    """`fiovpn server --json status` works like `fiovpn server status --json`."""
    for sub in group.commands.values():
        if isinstance(sub, click.Group):
            if not any("--json" in getattr(p, "opts", ()) for p in sub.params):
                json_option(sub)
            _json_on_every_group(sub)


_json_on_every_group(cli)


def _wants_json(args: list[str]) -> bool:
    """``--json`` among fiovpn's own words (not after ``--``: those go to a device)."""
    own = args[: args.index("--")] if "--" in args else args
    return "--json" in own


def one_line_error(exc: click.ClickException) -> str:
    """SPEC section 5: one line naming what was wrong, then where to read more (click
    itself prints the usage, a blank line and the error on three or four lines)."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        return f"error: {message} Try '{ctx.command_path} --help'."
    return f"error: {message}"


def main(argv: list[str] | None = None) -> None:
    """Run the CLI. Usage errors (unknown option, missing argument) are bad input:
    exit 2, one line on stderr and, with ``--json``, the JSON error on stdout."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        rv = cli.main(args=args, prog_name="fiovpn", standalone_mode=False)
    except click.ClickException as exc:
        if _wants_json(args):
            code = "usage" if isinstance(exc, click.UsageError) else "error"
            click.echo(json.dumps({"error": {"code": code, "message": exc.format_message()}}))
        if isinstance(exc, click.exceptions.NoArgsIsHelpError):
            exc.show()  # `fiovpn` or `fiovpn server` alone: the help is the answer
        else:
            click.echo(one_line_error(exc), err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)
