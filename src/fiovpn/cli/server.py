"""``fiovpn server``: the WireGuard server (run as root on the server).

Every command reads ``/etc/fiovpn/server.toml`` (``--config PATH`` or env
``FIOVPN_SERVER_CONFIG`` points elsewhere); flags override it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.table import Table
from rich.text import Text

from fiovpn.cli.options import api_options
from fiovpn.cli.output import Result, command
from fiovpn.core.peers import DISABLED
from fiovpn.services import server as service
from fiovpn.services.admins import AdminKeys
from fiovpn.services.journal import server_actor
from fiovpn.services.registry import ClientRegistry
from fiovpn.settings import (
    ServerSettings,
    load,
    load_server,
    server_config_file,
    server_overrides,
    server_settings_file,
)

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("fiovpn.server")


def register(cli: click.Group) -> None:
    from fiovpn.cli import access

    access.register(server)
    from fiovpn.cli import ha

    ha.register(server)
    cli.add_command(server)


def _setup_logging() -> None:
    root = logging.getLogger("fiovpn")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                               "%Y-%m-%dT%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)


def config_option(fn: F) -> F:
    return click.option(
        "--config", "config", type=click.Path(path_type=Path), default=None,
        help="Settings file (TOML; default /etc/fiovpn/server.toml, env FIOVPN_SERVER_CONFIG).",
    )(fn)


def _config(config: Path | None) -> Path | None:
    if config is not None:
        return config
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        found = ctx.meta.get("fiovpn.server_config")
        if found is not None:
            return Path(found)
        ctx = ctx.parent
    return None


def _config_file(config: Path | None) -> Path | None:
    """The settings file this command reads (flag, group flag, else env); None: the
    default."""
    return server_config_file(_config(config))


def _settings(config: Path | None, **flags: Any) -> ServerSettings:
    return load_server(flags, _config(config))


def _actor(settings: ServerSettings) -> str:
    """Who asks for a change (journal ``actor``): the admin of the forced command, else
    the name of the SSH session's VPN address in the registry of the daemon that owns
    this live state (its --clients-file may be on its command line only)."""
    import os

    from fiovpn.services.journal import ADMIN_ENV

    clients = settings.clients_file
    if os.environ.get("SSH_CONNECTION") and not os.environ.get(ADMIN_ENV):
        from fiovpn.services.run_dir import find_daemon

        found, last = find_daemon(settings)
        entry = found or last
        clients = clients if entry is None else entry.settings.clients_file
    return server_actor(clients)


@click.group()
@click.option("--config", "config", type=click.Path(path_type=Path), default=None,
              help="Settings file (TOML; default /etc/fiovpn/server.toml, "
                   "env FIOVPN_SERVER_CONFIG).")
@click.pass_context
def server(ctx: click.Context, config: Path | None) -> None:
    """The WireGuard server: publish it in the factory, run the daemon, manage clients."""
    if config is not None:
        ctx.meta["fiovpn.server_config"] = str(config)
    _setup_logging()


# --------------------------------------------------------------------------- enable


@server.command("enable")
@command
@config_option
@api_options
@click.option("--endpoint", required=True,
              help="HOST[:PORT] devices and engineers reach this server at (public address).")
@click.option("--address", default=None, help="Server VPN address (default 10.42.42.1).")
@click.option("--port", type=int, default=None, help="WireGuard UDP port (default 5555).")
@click.option("--private-key", "private_key", type=click.Path(path_type=Path), default=None,
              help="Server private key (generated, 0600, if missing; "
                   "default /etc/fiovpn/server.key).")
@click.option("--http", "http", default=None, metavar="ADDR:PORT",
              help="Have the daemon serve /metrics and the dashboard on ADDR:PORT "
                   "(written into the settings file).")
@click.option("--unit-dir", "unit_dir", type=click.Path(path_type=Path), default=None,
              help="Where to write fiovpn-<factory>.service (default /etc/systemd/system; "
                   "setting unit-dir, written into the settings file).")
@click.option("--force", is_flag=True,
              help="Enable even though --api-token-file is readable by group or others.")
def enable_cmd(config: Path | None, factory: str | None, endpoint: str, address: str | None,
               port: int | None, private_key: Path | None, api_url: str | None,
               api_token_file: Path | None, http: str | None, unit_dir: Path | None,
               force: bool) -> Result:
    """Publish this server in the factory and install its daemon's systemd unit.

    Writes the factory's `wireguard-server` file (endpoint, server address,
    public key), the settings file when it does not exist yet, and the unit
    fiovpn-<factory>.service (no secret in it) into --unit-dir (default
    /etc/systemd/system). Then start it with
    `systemctl daemon-reload && systemctl enable --now fiovpn-<factory>`.
    An --api-token-file that group or others can read is refused (chmod 600
    it) unless --force.
    """
    path = service.config_path_for(_config(config))
    # enable writes the settings file when it does not exist yet, so a --config
    # (or FIOVPN_SERVER_CONFIG) naming a new file is fine here.
    settings = load(ServerSettings, toml_path=path, toml_required=False,
                    flags={"factory": factory, "address": address, "port": port,
                           "private_key": private_key, "api_url": api_url,
                           "api_token_file": api_token_file, "endpoint": endpoint,
                           "http": http, "unit_dir": unit_dir})
    api = service.build_api(settings)
    data = service.enable(settings, api, endpoint=endpoint, config_path=path, force=force)
    human = (f"Factory {data['factory']}: wireguard-server published "
             f"(endpoint {data['endpoint']}, server {data['server_address']}).\n"
             f"Server public key: [bold]{data['public_key']}[/]"
             + (" (new key)" if data["key_created"] else "") + "\n"
             + (f"Settings written to {data['config']}.\n" if data["config_written"] else "")
             + f"Unit written to {data['unit']}.\n"
             + "".join(f"[yellow]warning:[/] {w}\n" for w in data["warnings"])
             + f"Next: systemctl daemon-reload && systemctl enable --now "
             f"fiovpn-{data['factory']}")
    return Result(data, human)


@server.command("disable")
@command
@config_option
@api_options
def disable_cmd(config: Path | None, factory: str | None, api_url: str | None,
                api_token_file: Path | None) -> Result:
    """Mark the factory's wireguard-server file enabled=0 (devices turn VPN off)."""
    settings = _settings(config, factory=factory, api_url=api_url,
                         api_token_file=api_token_file)
    data = service.disable(settings, service.build_api(settings))
    return Result(data, f"Factory {data['factory']}: WireGuard server disabled (enabled=0).")


# --------------------------------------------------------------------------- daemon


@server.command("daemon")
@command
@config_option
@api_options
@click.option("--interface", default=None, help="WireGuard interface (default factory).")
@click.option("--private-key", "private_key", type=click.Path(path_type=Path), default=None,
              help="Server private key (default /etc/fiovpn/server.key).")
@click.option("--subnet", default=None, help="VPN subnet (default 10.42.42.0/24).")
@click.option("--client-pool", default=None,
              help="Client addresses FIRST-LAST (default .200-.254 of a /24).")
@click.option("--interval", type=float, default=None,
              help="Seconds between factory polls (default 60).")
@click.option("--clients-file", type=click.Path(path_type=Path), default=None,
              help="Client registry (default /etc/wireguard/factory-clients.conf).")
@click.option("--hosts-file", type=click.Path(path_type=Path), default=None,
              help="Hosts file for device names (default /etc/hosts).")
@click.option("--state-dir", type=click.Path(path_type=Path), default=None,
              help="State directory (default /var/lib/fiovpn).")
@click.option("--allow-device-to-device", "allow_device_to_device", is_flag=True,
              default=None, help="Forward device<->device traffic.")
@click.option("--http", "http", default=None, metavar="ADDR:PORT",
              help="Serve /metrics, the dashboard (/) and /api/status on ADDR:PORT, e.g. "
                   "10.42.42.1:9100 (the firewall lets only clients through the tunnel in; "
                   "default off).")
@click.option("--ha-vip", "ha_vip", default=None,
              help="HA mode: the floating address keepalived moves between two servers "
                   "sharing this key; this one is active while it holds it.")
@click.option("--ha-peer", "ha_peer", default=None,
              help="HA mode: the other server, USER@HOST[:PORT] over SSH (keys, host key "
                   "checked); the active copies endpoints and the registry to it.")
@click.option("--once", is_flag=True, help="One reconcile, then exit 0 (ok) or 1 (failed).")
def daemon_cmd(config: Path | None, once: bool, **flags: Any) -> Result:
    """Keep WireGuard in sync with the factory and the client registry.

    Creates the interface if missing (kernel WireGuard, else wireguard-go),
    then reconciles every interval and within a second of a clients-file edit.
    SIGTERM/SIGINT stop it cleanly; the interface and its tunnels stay up.

    It says that it runs in the run directory (setting run-dir, default
    /run/fiovpn, in the settings file or $FIOVPN_RUN_DIR; no flag), so every
    `fiovpn server` command finds it and asks it, even one without this
    command line's --state-dir, --interface or --clients-file. A second daemon
    with the same state directory, clients file, interface or nft table is
    refused.
    """
    settings = _settings(config, **flags)
    api = service.build_api(settings)
    ctx = service.ServerContext.from_settings(settings, api=api)
    # HA: admins caught up from the active, each with this server's forced command
    ctx.admin_keys = AdminKeys.of_server(settings, _config_file(config))
    # recorded with the effective settings: a CLI reading another file is told apart
    ctx.state.settings_file = str(server_settings_file(_config(config)))
    code = service.Daemon(ctx, overrides=server_overrides(flags)).run(once=once)
    doc = ctx.state.load_status() or {}
    human = None
    if once:
        human = (f"reconciled: {len(doc.get('peers', []))} peers, "
                 f"{len(doc.get('last_changes', []))} change(s)"
                 + (f"; error: {doc['last_error']}" if doc.get("last_error") else ""))
    return Result(doc, human, exit_code=code)


# --------------------------------------------------------------------------- status


def _age(ts: Any) -> str:
    import time

    if not isinstance(ts, int) or ts <= 0:
        return "never"
    secs = max(0, int(time.time()) - ts)
    return f"{secs}s ago" if secs < 120 else f"{secs // 60}m ago"


def _list_age(age: Any) -> str:
    """How old the daemon's device list is (its last good factory answer)."""
    if not isinstance(age, int):
        return "never read from the factory"
    return f"{age}s old" if age < 120 else f"{age // 60}m old"


def _bytes(n: Any) -> str:
    value = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


_PEER_COLUMNS = ("kind", "name", "ip", "public key", "handshake", "rx", "tx")
_KEY_MIN = 8


class _PeerTable:
    """The peers table, laid out for the width it gets: kind, name, IP and
    handshake are never cut; the key column shrinks and folds (keys are copied
    from here: folded, never cut); rx/tx give way last."""

    def __init__(self, peers: list[dict[str, Any]]) -> None:
        self.rows = [(p["kind"], p.get("name") or "-", p.get("ip") or "-", p["public_key"],
                      _age(p.get("latest_handshake")), _bytes(p.get("rx")),
                      _bytes(p.get("tx"))) for p in peers]

    def table(self, max_width: int) -> Table:
        widths = [max([len(col), *(len(r[i]) for r in self.rows)])
                  for i, col in enumerate(_PEER_COLUMNS)]
        overhead = 3 * len(widths) + 1  # one space either side of a cell, one rule between
        key = 3
        others = sum(widths) - widths[key]
        widths[key] = max(_KEY_MIN, min(widths[key], max_width - overhead - others))
        excess = sum(widths) + overhead - max_width
        for i in (6, 5):  # tx, then rx
            if excess > 0:
                cut = min(excess, widths[i] - 3)
                widths[i] -= cut
                excess -= cut
        table = Table(title=f"{len(self.rows)} peers", title_justify="left")
        for i, col in enumerate(_PEER_COLUMNS):
            table.add_column(col, width=widths[i], no_wrap=i != key,
                             overflow="fold" if i == key else "ellipsis")
        for r in self.rows:
            table.add_row(*r)
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(options.max_width)


def status_view(data: dict[str, Any]) -> Group:
    head = Text.assemble(
        ("Interface ", "bold"), f"{data['interface']} ",
        ("up" if data["interface_up"] else "DOWN", "green" if data["interface_up"] else "red"),
        f"  server {data['server_address']}  port {data['port']}  factory {data['factory']}\n",
        ("Daemon ", "bold"), "running" if data["daemon_running"] else "not running",
        f"  last sync {data['last_sync'] or 'never'}",
        (f"  device list {_list_age(data.get('device_list_age_s'))}"),
        (f"  last error [{data.get('last_error_code') or 'error'}]: {data['last_error']}",
         "red") if data["last_error"] else "",
    )
    table = _PeerTable(data["peers"])
    parts: list[Any] = [head]
    if data.get("vip"):
        age = data.get("peer_sync_age_s")
        caught = data.get("ha_caught_up")
        parts.append(Text.assemble(
            ("HA ", "bold"), (str(data.get("role")), "green" if data.get("role") == "active"
                              else "cyan"),
            f"  VIP {data['vip']}  peer {data.get('ha_peer') or '-'}  last copy "
            + (f"{age:.0f}s ago" if isinstance(age, int | float) else "never"),
            (f"  degraded: peer unreachable at start ({data.get('ha_sync_error') or ''})"
             if caught == "peer_unreachable" else ""),
            ("  (a standby has no sessions: no handshakes expected)"
             if data.get("role") == "standby" else "")))
    parts.append(table)
    if not data["daemon_running"]:
        unit = f"fiovpn-{data['factory']}" if data.get("factory") else "fiovpn-<factory>"
        parts.append(Text(f"Next: start the daemon with `systemctl enable --now {unit}` "
                          "(or `fiovpn server daemon`)", style="yellow"))
    for c in data["conflicts"]:
        parts.append(Text(f"conflict: {c['message']}", style="yellow"))
    disabled = [s for s in data["skipped"] if s["reason"] == DISABLED]
    for s in data["skipped"]:
        if s["reason"] != DISABLED:
            parts.append(Text(f"skipped {s['kind']} {s.get('name') or ''}: {s['reason']}",
                              style="yellow"))
    if disabled:
        parts.append(Text(f"{len(disabled)} device(s) with VPN disabled"))
    for p in data["registry_problems"]:
        parts.append(Text(f"clients file line {p['line']}: {p['message']}", style="red"))
    return Group(*parts)


@server.command("status")
@command
@config_option
@click.option("--watch", is_flag=True,
              help="Redraw the table live until Ctrl-C (with --json: one document a line).")
@click.option("--every", "every", type=click.FloatRange(min=0.2), default=2.0,
              show_default=True, help="Seconds between redraws with --watch.")
def status_cmd(config: Path | None, watch: bool, every: float) -> Result:
    """Peers (kind, name, IP, key, handshake, traffic), conflicts, last sync and error."""
    settings = service.live_settings(_settings(config))
    if watch:
        from fiovpn.cli.output import json_mode, stdout
        from fiovpn.cli.watch import watch as live

        raise SystemExit(live(lambda: service.status(settings), status_view, interval=every,
                              console=stdout, as_json=json_mode()))
    data = service.status(settings)
    return Result(data, status_view(data))


# --------------------------------------------------------------------------- clients


@server.group("clients")
def clients() -> None:
    """The client registry (engineers' machines): add, remove, list, check."""


def _registry(config: Path | None) -> ClientRegistry:
    """The registry to read (``list``, ``check``); changes go through ``_ask``."""
    from fiovpn.services.access import DeviceGroups

    settings = service.live_settings(_settings(config))
    registry = service.registry(service.ServerContext.from_settings(settings))
    registry.device_groups = DeviceGroups.in_state_dir(settings.state_dir)
    return registry


def _ask(settings: ServerSettings, config: Path | None, op: str, params: dict[str, Any],
         command: str) -> dict[str, Any]:
    """Run a registry op where live state is owned: by the running daemon (over
    its control socket), else here with the settings the daemon recorded. In HA
    mode the op itself refuses on the standby and copies to the peer before it
    answers (``ops.dispatch``); ``answer["ha"]`` says what it copied."""
    # the op journals the change, as this admin (the forced command's name, or the
    # registry name of the VPN address the SSH session came from)
    answer = service.ask(settings, op, {**params, "actor": _actor(settings)},
                         requester=service.Requester.of_this_process(command),
                         settings_file=server_settings_file(_config(config)))
    done = answer.get("ha")
    if isinstance(done, dict) and done.get("replicated"):
        log.info("copied to the standby %s", done.get("peer"))
    applied = answer.get("applied") or {}
    if applied.get("by") == "daemon":
        # The daemon logged these in its own log; say them here too (stderr, so
        # `--json` output stays the documented shape).
        for change in applied.get("changes") or ():
            log.info("applied by the daemon (pid %s): %s", applied.get("pid"), change)
    return answer


def _applied_text(applied: dict[str, Any]) -> str:
    who = (f"the daemon (pid {applied['pid']})" if applied.get("by") == "daemon"
           else "this command (no daemon running; with the daemon's recorded settings)")
    if not applied.get("interface"):
        text = ("The interface does not exist yet: the daemon applies this when it "
                "starts.")
    elif applied.get("changes"):
        text = f"Applied by {who}:\n" + "\n".join(f"  {c}" for c in applied["changes"])
    else:
        text = f"Applied by {who}: no peer changed."
    for err in applied.get("errors") or ():
        text += f"\n[yellow]warning:[/] {err}"
    return text


@clients.command("add")
@command
@config_option
@click.option("--public-key", "public_key", required=True, help="The client's public key.")
@click.option("--ip", default="auto", show_default=True,
              help="auto (next free in the client pool) or an address from the pool.")
@click.option("--name", default=None, help="A name for the client (letters, digits, ._-).")
@click.option("--groups", default=None,
              help="G1,G2: reach only devices of these factory device groups "
                   "(default: every device).")
@click.option("--expires", default=None,
              help="DURATION (30d, 8h) or YYYY-MM-DDTHH:MM:SSZ: off the VPN from then on "
                   "(renew with `clients renew`).")
def clients_add(config: Path | None, public_key: str, ip: str, name: str | None,
                groups: str | None, expires: str | None) -> Result:
    """Register a client; applied to the live interface at once.

    While the daemon runs, it applies the change (it is the only writer of the
    interface and the firewall) and this command reports what it applied.

    \b
      fiovpn server clients add --public-key KEY --name alice
      fiovpn server clients add --public-key KEY --name bob --groups lab --expires 30d
    """
    settings = _settings(config)
    answer = _ask(settings, config, "clients.add",
                  {"public_key": public_key, "ip": ip, "name": name, "groups": groups,
                   "expires": expires}, "server clients add")
    data, applied = answer["entry"], answer["applied"]
    human = (f"Registered {data['public_key']} with IP [bold]{data['ip']}[/]"
             + (f" as {data['name']}" if data.get("name") else "")
             + (f", groups {','.join(data['groups'])}" if data.get("groups") else "")
             + (f", until {data.get('expires')}" if data.get("expires") else "") + ".\n"
             + _applied_text(applied) + "\n"
             f"Next (on the client): fiovpn client init --address {data['ip']}")
    return Result(data, human)


@clients.command("remove")
@command
@config_option
@click.option("--public-key", "public_key", default=None, help="The client's public key.")
@click.option("--name", default=None,
              help="The client's name (refused when several clients share it, unless --all).")
@click.option("--all", "all_matching", is_flag=True,
              help="With --name: remove every client of that name.")
def clients_remove(config: Path | None, public_key: str | None, name: str | None,
                   all_matching: bool) -> Result:
    """Remove a client (by key or name); applied to the live interface at once.

    --json prints the list of removed clients (always a list).
    """
    settings = _settings(config)
    answer = _ask(settings, config, "clients.remove",
                  {"public_key": public_key, "name": name, "all": all_matching},
                  "server clients remove")
    removed, applied = answer["removed"], answer["applied"]
    human = "\n".join(f"Removed {e['public_key']} ({e['ip']}"
                      f"{', ' + e['name'] if e.get('name') else ''})." for e in removed)
    return Result(removed, human + "\n" + _applied_text(applied))


@clients.command("renew")
@command
@config_option
@click.option("--public-key", "public_key", default=None, help="The client's public key.")
@click.option("--name", default=None, help="The client's name.")
@click.option("--expires", required=True,
              help="DURATION (30d, 8h) from now or YYYY-MM-DDTHH:MM:SSZ.")
def clients_renew(config: Path | None, public_key: str | None, name: str | None,
                  expires: str) -> Result:
    """Give a client a new expiry; an expired client is back on the VPN at once.

    \b
      fiovpn server clients renew --name bob --expires 30d
    """
    settings = _settings(config)
    answer = _ask(settings, config, "clients.renew",
                  {"public_key": public_key, "name": name, "expires": expires},
                  "server clients renew")
    data = answer["renewed"]
    human = "\n".join(f"Renewed {d.get('name') or d['public_key']} ({d['ip']}) until "
                      f"{d['expires']}." for d in data)
    return Result(data[0] if len(data) == 1 else data,
                  human + "\n" + _applied_text(answer["applied"]))


@clients.command("list")
@command
@config_option
def clients_list(config: Path | None) -> Result:
    """Registered clients: public key, IP, name, groups, expiry."""
    import time

    registry = _registry(config)
    doc = registry.read()
    now = time.time()
    data = [e.to_json(now) for e in doc.entries]
    table = Table(title=f"{len(data)} clients", title_justify="left")
    for col in ("public key", "ip", "name", "groups", "expires"):
        table.add_column(col, overflow="fold" if col == "public key" else "ellipsis")
    for e, d in zip(doc.entries, data, strict=True):
        table.add_row(str(e.public_key), str(e.ip), e.name or "-",
                      ",".join(e.groups) if e.groups else "all",
                      (d["expires"] + (" (expired)" if d["expired"] else ""))
                      if d["expires"] else "never")
    parts: list[Any] = [table]
    for p in doc.problems:
        parts.append(Text(f"{registry.path} line {p.line}: {p.message} (skipped)",
                          style="red"))
    for p in doc.notes:
        parts.append(Text(f"{registry.path} line {p.line}: {p.message}", style="yellow"))
    return Result(data, Group(*parts))


@clients.command("check")
@command
@config_option
@click.option("--public-key", "public_key", required=True, help="The client's public key.")
def clients_check(config: Path | None, public_key: str) -> Result:
    """Is this key registered (in the registry and on the live interface)?"""
    data = _registry(config).check(public_key)
    if data["registered"]:
        human = f"Registered: {public_key} has IP {data['ip']} and is on the interface."
    elif data["in_registry"]:
        human = (f"In the registry with IP {data['ip']} but not on the interface yet: is the "
                 "daemon running? (fiovpn server status)")
    else:
        human = (f"Not registered: {public_key}. Add it with "
                 f"`fiovpn server clients add --public-key {public_key}`.")
    return Result(data, human)
