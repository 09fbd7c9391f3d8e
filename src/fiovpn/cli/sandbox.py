"""``fiovpn sandbox``: a local stand-in for the FoundriesFactory API."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fiovpn.cli.output import Result, command
from fiovpn.sandbox.server import serve as serve_sandbox


def register(cli: click.Group) -> None:
    cli.add_command(sandbox)


@click.group()
def sandbox() -> None:
    """A local FoundriesFactory API for trying fiovpn out and for tests."""


@sandbox.command("serve")
@command
@click.option("--bind", default="127.0.0.1", show_default=True,
              help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="TCP port; 0 picks a free one (printed in the ready line).")
@click.option("--factory", default=None,
              help="Factory name (default: from --state, else 'sandbox').")
@click.option("--token", default=None,
              help="The OSF-TOKEN every request must carry (default: from --state, "
                   "else 'sandbox').")
@click.option("--devices", type=click.IntRange(0, 100_000), default=5, show_default=True,
              help="Devices to create (random keys, two already on VPN) when there is no "
                   "state yet.")
@click.option("--state", "state", type=click.Path(dir_okay=False, path_type=Path),
              default=None,
              help="JSON file holding the factory: loaded at start, saved after each change.")
@click.option("--token-ttl", "token_ttl", type=click.FloatRange(min=0.1), default=3600.0,
              show_default=True,
              help="Seconds an OAuth access token from POST /oauth/token/ stays valid "
                   "(short: exercise the refresh of a fioctl login).")
def serve(bind: str, port: int, factory: str | None, token: str | None, devices: int,
          state: Path | None, token_ttl: float) -> Result:
    """Serve the sandbox factory API until SIGTERM or Ctrl-C.

    Prints one line when ready:
    "sandbox factory F listening on http://HOST:PORT (token ...)". Point fiovpn
    at it with FIOVPN_API_URL=http://HOST:PORT, FIOVPN_FACTORY=F and
    FIOVPN_API_TOKEN=TOKEN, or write a fioctl config with server.url. Control
    endpoints under /_sandbox/ (fail, slow, clear, devices, oauth/login, requests,
    state) set it up and make it misbehave for reliability tests; POST
    /oauth/token/ is the OAuth token endpoint of a fioctl login.
    """
    code = serve_sandbox(bind=bind, port=port, factory=factory, token=token,
                         devices=devices, state_path=state, token_ttl=token_ttl)
    sys.stdout.flush()
    return Result({"stopped": True}, None, code)
