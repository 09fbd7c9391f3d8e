"""``fiovpn keys``: WireGuard key pairs."""

from __future__ import annotations

from pathlib import Path

import click

from fiovpn.cli.output import Result, command
from fiovpn.services.keys import default_key_path, generate_key_file


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
    human = (f"Private key written to {path} (mode 0600).\n"
             f"Public key: [bold]{pub}[/]\n"
             "Next: `fiovpn client init` writes your VPN config with this key.\n"
             "Then hand the public key to an admin (who runs `fiovpn register "
             f"--public-key {pub} --name NAME`),\n"
             "or, as the first admin on the server itself, run\n"
             f"  fiovpn server clients add --public-key {pub} --name NAME")
    return Result(data, human)
