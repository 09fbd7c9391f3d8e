"""``fiovpn keys``: WireGuard key pairs."""

from __future__ import annotations

from pathlib import Path

import click

from fiovpn.cli.output import Result, command
from fiovpn.core import wgquick
from fiovpn.core.keys import Key, public_key
from fiovpn.errors import FiovpnError
from fiovpn.services.keys import default_key_path, generate_key_file
from fiovpn.settings import load_client


def register(cli: click.Group) -> None:
    cli.add_command(keys)


@click.group()
def keys() -> None:
    """WireGuard key pairs."""


@keys.command("generate")
@command
@click.option("--private-key", "private_key", type=click.Path(path_type=Path), default=None,
              help="Where to write the private key (0600). "
                   "Default: ~/.config/wireguard/foundries.key")
@click.option("--force", is_flag=True, help="Replace an existing private key.")
def generate(private_key: Path | None, force: bool) -> Result:
    """Generate a key pair: writes the private key (0600), prints the public key.

    Hand the public key to an admin (or, as the first admin on the server,
    run `fiovpn server clients add --public-key KEY`).
    """
    path = private_key or default_key_path()
    pub = generate_key_file(path, force=force)
    data = {"public_key": str(pub), "private_key_path": str(path)}
    config = _client_config() if private_key is None else None
    if config is not None and config[1] != pub:
        human = (f"Private key written to {path} (mode 0600).\n"
                 f"Public key: [bold]{pub}[/]\n"
                 f"Note: your client config {config[0]} already has its own key (public "
                 f"key {config[1]}); `fiovpn client init` keeps that one and does not use "
                 "this key file. Have that key registered, or remove the config and run "
                 "`fiovpn client init` to use this one.")
        return Result(data, human)
    human = (f"Private key written to {path} (mode 0600).\n"
             f"Public key: [bold]{pub}[/]\n"
             "Next: `fiovpn client init` writes your VPN config with this key.\n"
             "Then hand the public key to an admin (who runs `fiovpn register "
             f"--public-key {pub} --name NAME`),\n"
             "or, as the first admin on the server itself, run\n"
             f"  fiovpn server clients add --public-key {pub} --name NAME")
    return Result(data, human)


def _client_config() -> tuple[Path, Key] | None:
    """The client config (as `client init` would pick it) and its public key, when it
    exists and holds a key."""
    try:
        path = load_client({}).config
        view = wgquick.client_view(wgquick.parse(path.read_text()))
    except (OSError, FiovpnError):
        return None
    if view.private_key is None:
        return None
    return path, public_key(view.private_key)
