"""``fiovpn devices``: the factory's devices and their VPN state (over the factory API).

``cli/client.py`` adds the SSH-based ``enable-d2d``/``disable-d2d`` to this group
(via ``cli.commands["devices"]``); ``api_options`` and ``factory_api`` are
shared with it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fiovpn.adapters.factory import FactoryClient, build_factory_client
from fiovpn.cli.options import api_options
from fiovpn.cli.output import Result, command, json_mode, progress
from fiovpn.cli.output import stderr as err_console
from fiovpn.core.names import validate_name
from fiovpn.core.timespec import check_timeout
from fiovpn.errors import BadInput, NotFound
from fiovpn.services import devices as service
from fiovpn.services import reachability
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
@click.option("--group", default=None, help="Only devices of this factory device group.")
@click.option("--tag", default=None, help="Only devices with this tag.")
@click.option("--online", is_flag=True,
              help=f"Only devices the factory heard from in the last "
                   f"{service.ONLINE_WINDOW_S // 60} minutes.")
@api_options
def list_cmd(group: str | None, tag: str | None, online: bool, factory: str | None,
             api_url: str | None, api_token_file: Path | None) -> Result:
    """List the factory's devices with their VPN address and state.

    --group and --tag are the factory API's own filters (as fioctl's); --online
    keeps devices seen in the last 15 minutes (they check in every 5).
    """
    settings = load_settings(factory, api_url, api_token_file)
    with factory_api(settings) as api:
        rows = service.list_devices(api, group=group, tag=tag, online=online)
    which = "".join([f" in group {group}" if group else "", f" tagged {tag}" if tag else "",
                     " online" if online else ""])
    table = Table(title=f"devices of factory {api.factory}{which} ({len(rows)})",
                  title_justify="left")
    for col in ("NAME", "STATUS", "VPN IP", "VPN", "GROUP", "TAG", "LAST SEEN", "TARGET"):
        table.add_column(col, no_wrap=col in ("NAME", "VPN IP"))
    for r in rows:
        table.add_row(r.name, ("online" if r.online else "offline") + (
                          f" ({r.status})" if r.status else ""),
                      str(r.vpn_ip) if r.vpn_ip else "-",
                      "on" if r.vpn_enabled else ("off" if r.pubkey else "no key"),
                      r.device_group or "-", r.tag or "-", r.last_seen or "-",
                      r.target or "-")
    return Result([r.to_json() for r in rows], table)


@devices.command("enable-vpn")
@command
@click.option("--group", default=None, help="Every device of this factory device group.")
@click.option("--tag", default=None, help="Every device with this tag.")
@click.option("--wait", is_flag=True,
              help="Wait until each device answers through the tunnel (its sshd greets "
                   "over its VPN address); adds reachable_after_s.")
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="With --wait: seconds to wait for each device.")
@api_options
@click.argument("names", nargs=-1)
def enable_vpn_cmd(group: str | None, tag: str | None, wait: bool, timeout: float,
                   factory: str | None, api_url: str | None, api_token_file: Path | None,
                   names: tuple[str, ...]) -> Result:
    """Put devices on the VPN (like `fioctl devices config wireguard NAME enable`):
    NAME..., every device of a --group, or with a --tag.

    A device keeps an address it had; otherwise it gets the first free address
    after the server's, outside the engineers' client pool. The device applies it
    at its next config check-in, the server at its next sync: --wait waits for
    that (a progress bar on a terminal) and says how long each took. One NAME
    prints one object, several a list.

    \b
    Examples:
      fiovpn devices enable-vpn gateway-7
      fiovpn devices enable-vpn --group prod-eu --wait --timeout 600
    """
    if sum([bool(names), group is not None, tag is not None]) != 1:
        raise BadInput("choose the devices one way: NAME..., --group G or --tag T",
                       code="bad_usage")
    check_timeout(timeout)
    for n in names:
        validate_name(n, what="device name")
    settings = load_settings(factory, api_url, api_token_file)
    with factory_api(settings) as api:
        if names:
            chosen = list(dict.fromkeys(names))
        else:
            chosen = service.device_names(api, group=group, tag=tag)
            if not chosen:
                how = f"group {group}" if group is not None else f"tag {tag}"
                if group is not None:
                    raise NotFound(f"no device in {how} of factory {api.factory}",
                                   code="unknown_group", hint="see `fiovpn devices list`")
                raise NotFound(f"no device in {how} of factory {api.factory}",
                               code="unknown_tag", hint="see `fiovpn devices list`")
        changes: list[tuple[service.VpnChange, float]] = []
        for name in chosen:
            record_device_call(settings.journal, action="enable-vpn", device=name, via="cli")
            progress(f"enabling VPN on {name} in factory {api.factory}")
            changes.append((service.enable_vpn(api, name, subnet=settings.subnet,
                                               client_pool=settings.client_pool),
                            time.monotonic()))
    data: list[dict[str, Any]] = [{"name": c.name, "vpn_ip": str(c.vpn_ip),
                                   "changed": c.changed} for c, _t in changes]
    lines = [(f"VPN enabled on {c.name}: address {c.vpn_ip}." if c.changed else
              f"VPN already enabled on {c.name} (address {c.vpn_ip}); nothing changed.")
             for c, _t in changes]
    code = 0
    if wait:
        reached = _wait(changes, timeout)
        for row, r in zip(data, reached, strict=True):
            row["reachable_after_s"] = r.after_s
        lines = [f"{ln} " + (f"Answered through the tunnel after {r.after_s:.1f} s."
                             if r.after_s is not None else
                             f"Did NOT answer within {timeout:g} s.")
                 for ln, r in zip(lines, reached, strict=True)]
        code = 0 if all(r.after_s is not None for r in reached) else 1
    else:
        lines.append("Devices pick the change up at their next config check-in, the server "
                     "at its next sync (--wait waits for both).")
    out: Any = data[0] if len(names) == 1 else data
    return Result(out, "\n".join(lines), code)


def _wait(changes: list[tuple[service.VpnChange, float]], timeout: float
          ) -> list[reachability.Reached]:
    items = [(c.name, c.vpn_ip, t) for c, t in changes if c.vpn_ip is not None]
    show = not json_mode() and sys.stderr.isatty()
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=err_console, transient=True, disable=not show)
    with bar:
        task = bar.add_task("waiting for devices to answer through the tunnel",
                            total=len(items))
        return reachability.wait_reachable(
            items, timeout=timeout, on_done=lambda _r: bar.update(task, advance=1))


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
