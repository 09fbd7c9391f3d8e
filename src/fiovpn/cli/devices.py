"""``fiovpn devices``: the factory's devices and their VPN state (over the factory API).

``cli/client.py`` adds the SSH-based ``enable-d2d``/``disable-d2d`` to this group
(via ``cli.commands["devices"]``); ``api_options`` and ``factory_api`` are
shared with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.table import Table

from fiovpn.adapters.factory import FactoryClient, build_factory_client
from fiovpn.cli.options import api_options
from fiovpn.cli.output import Result, command, progress
from fiovpn.core.names import validate_name
from fiovpn.services import devices as service
from fiovpn.services.journal import record_device_call
from fiovpn.settings import ClientSettings, load_client


def register(cli: click.Group) -> None:
    cli.add_command(devices)


def load_settings(factory: str | None, api_url: str | None,
                  api_token_file: Path | None) -> ClientSettings:
    return load_client({"factory": factory, "api_url": api_url,
                        "api_token_file": api_token_file})


@contextmanager
def factory_api(settings: ClientSettings) -> Iterator[FactoryClient]:
    client = build_factory_client(settings)
    try:
        yield client
    finally:
        client.close()


@click.group()
def devices() -> None:
    """The factory's devices: list them, put them on the VPN or take them off."""


@devices.command("list")
@command
@api_options
def list_cmd(factory: str | None, api_url: str | None, api_token_file: Path | None) -> Result:
    """List the factory's devices with their VPN address and state."""
    settings = load_settings(factory, api_url, api_token_file)
    with factory_api(settings) as api:
        rows = service.list_devices(api)
    table = Table(title=f"devices of factory {api.factory} ({len(rows)})",
                  title_justify="left")
    for col in ("NAME", "STATUS", "VPN IP", "VPN", "LAST SEEN", "TARGET"):
        table.add_column(col, no_wrap=col in ("NAME", "VPN IP"))
    for r in rows:
        table.add_row(r.name, r.status or "-", str(r.vpn_ip) if r.vpn_ip else "-",
                      "on" if r.vpn_enabled else ("off" if r.pubkey else "no key"),
                      r.last_seen or "-", r.target or "-")
    return Result([r.to_json() for r in rows], table)


@devices.command("enable-vpn")
@command
@click.argument("name")
@api_options
def enable_vpn_cmd(name: str, factory: str | None, api_url: str | None,
                   api_token_file: Path | None) -> Result:
    """Put device NAME on the VPN (like `fioctl devices config wireguard NAME enable`).

    The device keeps an address it had; otherwise it gets the first free
    address after the server's, outside the engineers' client pool.
    """
    validate_name(name, what="device name")
    settings = load_settings(factory, api_url, api_token_file)
    record_device_call(settings.journal, action="enable-vpn", device=name, via="cli")
    with factory_api(settings) as api:
        progress(f"enabling VPN on {name} in factory {api.factory}")
        change = service.enable_vpn(api, name, subnet=settings.subnet,
                                    client_pool=settings.client_pool)
    data = {"name": change.name, "vpn_ip": str(change.vpn_ip), "changed": change.changed}
    if change.changed:
        human = (f"VPN enabled on {name}: address {change.vpn_ip}. The device picks the "
                 "change up at its next config check-in, the server at its next sync.")
    else:
        human = f"VPN already enabled on {name} (address {change.vpn_ip}); nothing changed."
    return Result(data, human)


@devices.command("disable-vpn")
@command
@click.argument("name")
@api_options
def disable_vpn_cmd(name: str, factory: str | None, api_url: str | None,
                    api_token_file: Path | None) -> Result:
    """Take device NAME off the VPN (it keeps its address for a later enable)."""
    validate_name(name, what="device name")
    settings = load_settings(factory, api_url, api_token_file)
    record_device_call(settings.journal, action="disable-vpn", device=name, via="cli")
    with factory_api(settings) as api:
        change = service.disable_vpn(api, name)
    data = change.to_json()
    if change.changed:
        human = f"VPN disabled on {name} (address {change.vpn_ip} kept for a later enable)."
    else:
        human = f"VPN is not enabled on {name}; nothing changed."
    return Result(data, human)
