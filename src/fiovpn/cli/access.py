"""``fiovpn server access|admins|journal``: who may reach which device, for how
long, who may administer without a root shell, and the record of it (SPEC
section 11). ``server admin-command`` is the admins' forced command."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from fiovpn.cli.output import Result, command
from fiovpn.core.forced import parse_forced_command
from fiovpn.core.timespec import parse_duration
from fiovpn.errors import BadInput, FiovpnError
from fiovpn.services.access import AccessGrants
from fiovpn.services.admins import AdminKeys
from fiovpn.services.ha_journal import read_server_journal
from fiovpn.services.journal import ADMIN_ENV, server_actor
from fiovpn.settings import ServerSettings


def register(server: click.Group) -> None:
    for cmd in (access, admins, journal_cmd, admin_command):
        server.add_command(cmd)


def _server_settings(config: Path | None) -> ServerSettings:
    from fiovpn.cli.server import _settings

    return _settings(config)


def _replicated(answer: dict[str, Any], data: dict[str, Any]) -> str:
    """HA: what the op's copy to the standby did (the daemon copies a change before
    it answers; ``ops.dispatch``), added to ``data`` and said in a line."""
    done = answer.get("ha")
    if not isinstance(done, dict) or done.get("peer") is None:
        return ""
    data["replicated"] = bool(done.get("replicated"))
    if done.get("warning"):
        data["warning"] = done["warning"]
        return f"\n[yellow]warning:[/] {done['warning']}"
    return f"\nCopied to the standby {done['peer']}."


def _config_file(config: Path | None) -> Path | None:
    from fiovpn.cli.server import _config_file as config_file

    return config_file(config)


def _settings_file(config: Path | None) -> Path:
    from fiovpn.cli.server import _config
    from fiovpn.settings import server_settings_file

    return server_settings_file(_config(config))


def config_opt(fn: Any) -> Any:
    return click.option("--config", "config", type=click.Path(path_type=Path), default=None,
                        help="Settings file (TOML; default /etc/fiovpn/server.toml, "
                             "env FIOVPN_SERVER_CONFIG).")(fn)


# --------------------------------------------------------------------------- access


def grants_service(settings: ServerSettings) -> AccessGrants:
    """For reading (``access list``); changes go through ``_ask``."""
    from fiovpn.services import server as service
    from fiovpn.services.server.ops import access_grants

    settings = service.live_settings(settings)  # the running daemon's state dir
    return access_grants(service.ServerContext.from_settings(settings),
                         server_actor(settings.clients_file))


def _ask(settings: ServerSettings, config: Path | None, op: str, params: dict[str, Any],
         command: str) -> dict[str, Any]:
    """Grant/revoke where live state is owned: the running daemon (its control
    socket) applies it, else this process with the daemon's recorded settings."""
    from fiovpn.cli.server import _actor
    from fiovpn.services import server as service

    answer = service.ask(settings, op, {**params, "actor": _actor(settings)},
                         requester=service.Requester.of_this_process(command),
                         settings_file=_settings_file(config))
    grant = answer.get("grant")
    if not isinstance(grant, dict):
        raise FiovpnError(f"unexpected answer to {op}: {answer!r}"[:200])
    return answer


@click.group("access")
def access() -> None:
    """Time-boxed grants: a client reaches a device group or one device for a while.

    The grant ends on time in the kernel (an nft set element with a timeout),
    even while the daemon is stopped.
    """


def _target_opts(fn: Any) -> Any:
    for opt in (
        click.option("--device", default=None, help="One device, by name."),
        click.option("--group", default=None, help="A factory device group."),
        click.option("--public-key", "public_key", default=None,
                     help="The client, by public key."),
        click.option("--name", default=None, help="The client, by registry name."),
    ):
        fn = opt(fn)
    return fn


@access.command("grant")
@command
@config_opt
@_target_opts
@click.option("--for", "duration", required=True,
              help="How long: a number and a unit s, m, h, d (5m, 2h, 1h30m).")
def grant_cmd(config: Path | None, name: str | None, public_key: str | None,
              group: str | None, device: str | None, duration: str) -> Result:
    """Let a client reach a device group or one device for a while.

    \b
      fiovpn server access grant --name alice --group prod --for 2h
      fiovpn server access grant --name alice --device gw-17 --for 30m
    """
    settings = _server_settings(config)
    answer = _ask(settings, config, "access.grant",
                {"name": name, "public_key": public_key, "group": group, "device": device,
                 "for": duration}, "server access grant")
    data = answer["grant"]
    what = f"group {data['group']}" if data["group"] else f"device {data['device']}"
    return Result(data, f"{data['client']} may reach {what} until {data['expires']}."
                  + _replicated(answer, data))


@access.command("revoke")
@command
@config_opt
@_target_opts
def revoke_cmd(config: Path | None, name: str | None, public_key: str | None,
               group: str | None, device: str | None) -> Result:
    """End a grant now."""
    settings = _server_settings(config)
    answer = _ask(settings, config, "access.revoke",
                {"name": name, "public_key": public_key, "group": group, "device": device},
                "server access revoke")
    data = answer["grant"]
    what = f"group {data['group']}" if data["group"] else f"device {data['device']}"
    return Result(data, f"Revoked: {data['client']} no longer reaches {what}."
                  + _replicated(answer, data))


@access.command("list")
@command
@config_opt
def access_list_cmd(config: Path | None) -> Result:
    """Live grants: client, group or device, end, seconds left."""
    data = grants_service(_server_settings(config)).list()
    table = Table(title=f"{len(data)} grants", title_justify="left")
    for col in ("client", "group", "device", "expires", "remaining"):
        table.add_column(col)
    for g in data:
        table.add_row(g["client"], g["group"] or "-", g["device"] or "-", g["expires"],
                      f"{g['remaining_s']}s")
    return Result(data, table)


# --------------------------------------------------------------------------- admins


def _ask_admins(settings: ServerSettings, config: Path | None, op: str,
                params: dict[str, Any], command: str) -> dict[str, Any]:
    """An admin change where live state is owned (the daemon, else here): the op
    refuses on an HA standby and copies to the peer before it answers. The forced
    command names this fiovpn and this settings file, as sshd will run them."""
    from fiovpn.cli.server import _actor
    from fiovpn.services import server as service

    keys = AdminKeys.of_server(settings, _config_file(config))
    return service.ask(settings, op, {**params, "actor": _actor(settings),
                                      "program": keys.program, "config": keys.config},
                       requester=service.Requester.of_this_process(command),
                       settings_file=_settings_file(config))


@click.group("admins")
def admins() -> None:
    """Admins without a root shell: SSH keys that may run only fiovpn's registry,
    access, journal and status commands (a forced command in authorized_keys)."""


@admins.command("add")
@command
@config_opt
@click.option("--ssh-public-key", "key_file", required=True,
              type=click.Path(path_type=Path, dir_okay=False),
              help="The admin's OpenSSH public key file (id_ed25519.pub).")
@click.option("--name", required=True, help="The admin's name (journal actor).")
def admins_add(config: Path | None, key_file: Path, name: str) -> Result:
    """Let an SSH key run `fiovpn register` & co on this server, and nothing else.

    \b
      fiovpn server admins add --ssh-public-key alice.pub --name alice
    """
    settings = _server_settings(config)
    try:
        text = key_file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read the SSH public key file {key_file}: {exc}",
                       code="bad_ssh_key") from None
    answer = _ask_admins(settings, config, "admins.add", {"name": name, "key": text},
                         "server admins add")
    data = answer["admin"]
    return Result(data,
                  f"Admin {name} added to {settings.authorized_keys}: that key may run "
                  "fiovpn's registry, access, journal and status commands only.\n"
                  f"Next (on {name}'s machine): fiovpn register --public-key KEY --name N"
                  + _replicated(answer, data))


@admins.command("remove")
@command
@config_opt
@click.option("--name", required=True, help="The admin's name.")
def admins_remove(config: Path | None, name: str) -> Result:
    """Remove an admin's key from authorized_keys."""
    settings = _server_settings(config)
    answer = _ask_admins(settings, config, "admins.remove", {"name": name},
                         "server admins remove")
    data = answer["admin"]
    return Result(data, f"Admin {name} removed from {settings.authorized_keys}."
                  + _replicated(answer, data))


@admins.command("list")
@command
@config_opt
def admins_list(config: Path | None) -> Result:
    """Admins (keys with fiovpn's forced command)."""
    settings = _server_settings(config)
    found = AdminKeys.of_server(settings, _config_file(config)).list()
    table = Table(title=f"{len(found)} admins", title_justify="left")
    for col in ("name", "key type", "key"):
        table.add_column(col, overflow="fold")
    for a in found:
        table.add_row(a.name, a.key_type, a.key)
    return Result([a.to_json() for a in found], table)


@click.command("admin-command", hidden=True)
@command
@config_opt
@click.option("--name", required=True)
def admin_command(config: Path | None, name: str) -> Result:
    """The forced command of an admin's key: runs the checked SSH_ORIGINAL_COMMAND."""
    from fiovpn.services import server as service
    from fiovpn.services.ha import own_journal

    settings = _server_settings(config)
    # on the HA standby: its own lines, kept apart; in the running daemon's state dir
    journal = own_journal(service.live_settings(settings))
    original = os.environ.get("SSH_ORIGINAL_COMMAND")
    try:
        args = parse_forced_command(original)
    except BadInput:
        journal.try_append(actor=name, action="refused", target=name,
                           detail={"command": (original or "")[:200]})
        raise
    path = _config_file(config)
    argv = [sys.executable, "-m", "fiovpn", args[0],
            *(["--config", str(path.absolute())] if path else []), *args[1:]]
    env = {**os.environ, ADMIN_ENV: name}
    sys.stdout.flush()
    # never a shell: the checked words, as they are
    os.execve(sys.executable, argv, env)  # noqa: S606


# --------------------------------------------------------------------------- journal


@click.command("journal")
@command
@config_opt
@click.option("--since", default=None, help="Only the last DURATION (1h, 7d).")
@click.option("--action", default=None,
              help="Only this action (client_add, client_remove, renew, expire, grant, "
                   "revoke, admin_add, admin_remove, peer_add, peer_remove, refused).")
def journal_cmd(config: Path | None, since: str | None, action: str | None) -> Result:
    """Every change an admin or the daemon made: when, who, what, to whom."""
    from fiovpn.services import server as service

    settings = service.live_settings(_server_settings(config))  # the daemon's journal
    cutoff = time.time() - parse_duration(since, what="--since") if since else None
    # with the lines an HA standby wrote itself that the journal does not have yet
    lines = read_server_journal(settings.state_dir, since=cutoff, action=action)
    table = Table(title=f"{len(lines)} journal lines", title_justify="left")
    for col in ("at", "actor", "action", "target", "detail"):
        table.add_column(col, overflow="fold")
    for ln in lines:
        table.add_row(str(ln.get("at")), str(ln.get("actor")), str(ln.get("action")),
                      str(ln.get("target")), json.dumps(ln.get("detail"), sort_keys=True))
    return Result(lines, table)
