"""``fiovpn server health | ha-template | ha-join | ha-notify | ha-receive | ha-snapshot``:
two servers, one VPN (SPEC section 14)."""

from __future__ import annotations

import json
import logging
import sys
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

import click

from fiovpn.cli.output import Result, command
from fiovpn.core.addresses import parse_ip
from fiovpn.core.ha import SyncMessage
from fiovpn.core.keepalived import KeepalivedTemplate, render_keepalived
from fiovpn.errors import BadInput, PermanentError
from fiovpn.services import ha as ha_service
from fiovpn.services.admins import AdminKeys
from fiovpn.services.health import health

log = logging.getLogger("fiovpn.server")


def register(server: click.Group) -> None:
    for cmd in (health_cmd, ha_template_cmd, ha_join_cmd, ha_notify_cmd, ha_receive_cmd,
                ha_snapshot_cmd, ha_export_cmd):
        server.add_command(cmd)


def _settings(config: Path | None) -> Any:
    from fiovpn.cli.server import _settings as load

    return load(config)


def _live(settings: Any) -> Any:
    """The settings of the daemon that owns ``settings``' live state (found in
    run-dir: its --state-dir may be on its command line only; with it stopped, the
    last one's), else ``settings``: what the active's copy and keepalived's notes
    go into, where that daemon reads them."""
    from fiovpn.services.run_dir import find_daemon

    found, last = find_daemon(settings)
    entry = found or last
    return settings if entry is None else entry.settings


def _config_option(fn: Any) -> Any:
    from fiovpn.cli.server import config_option

    return config_option(fn)


# --------------------------------------------------------------------------- health


@click.command("health")
@command
@_config_option
def health_cmd(config: Path | None) -> Result:
    """Exit 0 when this server can serve: interface, daemon, firewall, recent sync,
    and (HA mode) caught up from its peer. Non-zero with the reason otherwise.

    keepalived runs it as the `track_script` of `fiovpn server ha-template`: a
    failing server gives the VIP to the other one.
    """
    from fiovpn.services.run_dir import running_daemon

    settings = _settings(config)
    # the daemon that owns this live state, whatever was only on its command line
    found = running_daemon(settings)
    data = health(settings if found is None else found.settings)
    if data["healthy"]:
        human = f"healthy ({data['role']})"
    else:
        human = f"[red]not healthy[/] ({data['role']}): {data['reason']}"
        click.echo(f"not healthy: {data['reason']}", err=True)
    return Result(data, human, exit_code=0 if data["healthy"] else 1)


# --------------------------------------------------------------------------- template


def _ip(value: str, what: str) -> IPv4Address:
    return parse_ip(value, what=what)


@click.command("ha-template")
@command
@_config_option
@click.option("--interface", "link", required=True,
              help="The network interface that holds the VIP (e.g. eth0).")
@click.option("--vip", required=True,
              help="The floating address with its prefix, e.g. 203.0.113.10/24 "
                   "(default prefix /32); the ha-vip setting is its address.")
@click.option("--src", "src", required=True, help="This server's own address on that link.")
@click.option("--peer", "peer", required=True, help="The other server's address on it.")
@click.option("--router-id", type=int, default=51, show_default=True,
              help="virtual_router_id: 1-255, unique on the link.")
@click.option("--priority", type=int, default=200, show_default=True,
              help="VRRP priority (with nopreempt it only breaks ties at start; high "
                   "values make the hand-over after a clean stop quicker).")
@click.option("--preempt", is_flag=True,
              help="Let a returning higher-priority server take the VIP back "
                   "(default: nopreempt; each move costs a second or so).")
@click.option("--instance", default="fiovpn", show_default=True,
              help="vrrp_instance name (unique per keepalived).")
@click.option("--fiovpn", "fiovpn_path", default=None,
              help="Absolute path of fiovpn for keepalived's scripts (default: this one).")
def ha_template_cmd(config: Path | None, link: str, vip: str, src: str, peer: str,
                    router_id: int, priority: int, preempt: bool, instance: str,
                    fiovpn_path: str | None) -> Result:
    """Print a keepalived configuration for this server of an HA pair.

    Unicast VRRP between --src and --peer, nopreempt, `fiovpn server health` as
    the track_script (an unhealthy server gives up the VIP) and `fiovpn server
    ha-notify` on every role change. Install it as
    /etc/keepalived/keepalived.conf on both servers (--src and --peer swapped).
    """
    try:
        vip_if = IPv4Interface(vip if "/" in vip else f"{vip}/32")
    except ValueError:
        raise BadInput(f"invalid --vip {vip!r}: expected ADDRESS[/PREFIX], like "
                       "203.0.113.10/24", code="bad_ha_vip") from None
    from fiovpn.cli.server import _config as config_of

    exe = fiovpn_path or _fiovpn_path()
    given = config_of(config)
    extra = ["--config", str(given)] if given is not None else []
    template = KeepalivedTemplate(
        instance=instance, interface=link, vip=vip_if, src_ip=_ip(src, "--src address"),
        peer_ip=_ip(peer, "--peer address"), router_id=router_id, priority=priority,
        preempt=preempt, health_command=(exe, "server", *extra, "health"),
        notify_command=(exe, "server", *extra, "ha-notify"))
    text = render_keepalived(template)
    return Result({"config": text, "instance": instance, "vip": vip_if.with_prefixlen,
                   "preempt": preempt}, text.rstrip("\n"))


def _fiovpn_path() -> str:
    sibling = Path(sys.executable).parent / "fiovpn"
    if sibling.exists():
        return str(sibling)
    import shutil

    return shutil.which("fiovpn") or "/usr/local/bin/fiovpn"


# --------------------------------------------------------------------------- notify


@click.command("ha-notify", hidden=False)
@command
@_config_option
@click.argument("args", nargs=-1)
def ha_notify_cmd(config: Path | None, args: tuple[str, ...]) -> Result:
    """keepalived's notify script: records the VRRP state change (TYPE NAME STATE
    PRIORITY) in the state dir; the daemon acts on the VIP itself."""
    settings = _live(_settings(config))
    state = args[2] if len(args) >= 3 else (args[0] if args else "unknown")
    files = ha_service.HaFiles(settings.state_dir)
    import time

    files.update_state(vrrp_state=state, vrrp_state_at=time.time())
    # The daemon itself watches the VIP several times a second; this is the record.
    log.info("keepalived: VRRP state %s", state)
    return Result({"vrrp_state": state}, f"VRRP state {state}")


# --------------------------------------------------------------------------- replication


@click.command("ha-receive")
@command
@_config_option
def ha_receive_cmd(config: Path | None) -> Result:
    """(Used by the active server over SSH.) Take the peers' endpoints and the
    registry the active sends on stdin (JSON)."""
    settings = _live(_settings(config))
    if settings.vip is None:
        raise PermanentError("this server is not in HA mode (no ha-vip setting)",
                             code="ha_off")
    try:
        message = SyncMessage.from_json(json.loads(sys.stdin.read() or "null"))
    except ValueError:
        raise BadInput("ha-receive reads one JSON sync message on stdin",
                       code="bad_ha_message") from None
    from fiovpn.cli.server import _config_file

    admins = AdminKeys.of_server(settings, _config_file(config))
    data = ha_service.receive(settings, message, admins=admins)
    return Result(data, f"took {data['endpoints']} endpoint(s)"
                  + ("; registry replaced" if data["registry_written"] else ""))


@click.command("ha-snapshot")
@command
@_config_option
def ha_snapshot_cmd(config: Path | None) -> Result:
    """(Used by a returning server over SSH.) This server's role, registry and the
    peers' current endpoints, to catch up from."""
    settings = _live(_settings(config))
    data = ha_service.snapshot(settings)
    return Result(data, f"role {data['role']}, registry {data['registry_sha']}, "
                        f"{len(data['endpoints'])} endpoint(s)")


# --------------------------------------------------------------------------- join


@click.command("ha-join")
@command
@_config_option
@click.option("--from", "source", required=True,
              help="The active server, USER@HOST[:PORT] (SSH with keys, host key checked).")
@click.option("--identity-file", type=click.Path(path_type=Path), default=None,
              help="SSH key for the active server (default: ssh's own).")
@click.option("--known-hosts", type=click.Path(path_type=Path), default=None,
              help="known_hosts file holding the active server's host key.")
@click.option("--server-command", default="fiovpn", show_default=True,
              help="fiovpn on the active server.")
def ha_join_cmd(config: Path | None, source: str, identity_file: Path | None,
                known_hosts: Path | None, server_command: str) -> Result:
    """Make this machine the second server of an HA pair: copy the private key,
    settings, registry, state and SSH host key from the active server.

    The settings file is written with ha-peer pointing back at the active server;
    then start keepalived (see `fiovpn server ha-template`), restart sshd (new host
    key) and start the daemon.
    """
    from fiovpn.cli.server import _config as config_of
    from fiovpn.services.ha_join import join
    from fiovpn.services.server import config_path_for

    path = config_path_for(config_of(config))
    data = join(source, config_path=path, identity_file=identity_file,
                known_hosts=known_hosts, server_command=server_command)
    human = ("Joined: copied " + ", ".join(data["copied"]) + f" from {source}.\n"
             f"Settings: {data['config']} (ha-peer = {source}).\n"
             "Next: restart sshd (same host key as the active now), install the keepalived "
             "config from `fiovpn server ha-template`, start keepalived and the daemon.")
    return Result(data, human)


@click.command("ha-export")
@command
@_config_option
def ha_export_cmd(config: Path | None) -> Result:
    """(Used by `ha-join` over SSH.) The private key, settings, registry, device
    cache and SSH host key, as JSON on stdout. Holds secrets: never redirect it
    to a file."""
    from fiovpn.cli.server import _config as config_of
    from fiovpn.services.ha_join import export
    from fiovpn.services.server import config_path_for

    settings = _settings(config)
    data = export(settings, config_path_for(config_of(config)))
    return Result(data, "ha-export holds secrets: use --json through ha-join only")
