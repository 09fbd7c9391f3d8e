"""The operations a caller may ask of the server, in one table used two ways:

- while a daemon runs, the CLI sends ``{"op", "params"}`` over the control
  socket (``control.py``) of the daemon it finds in ``run-dir`` (``services/run_dir.py``),
  and the daemon runs the op in its own process, with its own settings and
  memos: the only writer of interface, firewall and hosts;
- with no daemon, ``ask`` runs the same op in the CLI process, holding the
  daemon lock, with the settings the daemon last recorded (``effective.json``),
  never a partial view from ``server.toml``.

To add an op: write ``def _my_op(ctx: ServerContext, req: Request) -> dict``
(``req.params`` is the JSON object the caller sent; raise ``BadInput`` for bad
params, exit 2), add it to ``OPS`` (``daemon_only=True`` when it makes no sense
without a running daemon), and call ``ask(settings, "my.op", {...})``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fiovpn.adapters.fs import file_signature
from fiovpn.errors import BadInput, PermanentError, TemporaryError
from fiovpn.services.access import AccessGrants
from fiovpn.services.admins import AdminKeys, this_program
from fiovpn.services.ha import replicate, standby_refusal
from fiovpn.services.registry import ClientRegistry, LiveInterface, read_registry
from fiovpn.services.run_dir import Announced, RunDir, find_daemon
from fiovpn.services.server.context import ServerContext
from fiovpn.services.server.control import ControlClient, NoDaemon, Request, Requester
from fiovpn.services.server.reconcile import apply_local
from fiovpn.services.server.report import ReconcileReport
from fiovpn.services.state import StateCache
from fiovpn.settings import ServerSettings, settings_from_record, settings_record

log = logging.getLogger("fiovpn.server")

Handler = Callable[[ServerContext, Request], dict[str, Any]]


@dataclass(frozen=True)
class Op:
    handler: Handler
    daemon_only: bool = False
    # A registry / access / admin change: in HA mode only the active makes it, and
    # it is confirmed only once the standby has it (SPEC 14).
    change: bool = False


def applied(ctx: ServerContext, report: ReconcileReport | None) -> dict[str, Any]:
    """What an op applied to live state, for the caller to report."""
    return {
        "by": "daemon" if ctx.daemon else "cli",
        "pid": os.getpid(),
        "interface": report is not None,
        "changes": [c.describe() for c in report.changes] if report else [],
        "firewall_applied": bool(report and report.firewall_applied),
        "errors": list(report.errors) if report else [],
    }


def _registry(ctx: ServerContext) -> ClientRegistry:
    from fiovpn.services.access import DeviceGroups

    return ClientRegistry(ctx.settings.clients_file, ctx.network, state=ctx.state,
                          server_key=ctx.server_key,
                          live=LiveInterface(ctx.wg, ctx.settings.interface),
                          device_groups=DeviceGroups.in_state_dir(ctx.settings.state_dir))


def _apply_own_edit(ctx: ServerContext, req: Request) -> dict[str, Any]:
    # This process wrote the registry: the daemon's file watch need not re-apply
    # it, and the empty-registry debounce need not doubt it.
    ctx.trusted_registry = file_signature(ctx.settings.clients_file)
    return applied(ctx, apply_local(ctx, cause=req.requester.cause()))


def _str(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadInput(f"{name} must be a string", code="bad_request")
    return value


def _clients_add(ctx: ServerContext, req: Request) -> dict[str, Any]:
    key = _str(req.params, "public_key")
    if key is None:
        raise BadInput("public_key is required", code="bad_request")
    entry = _registry(ctx).add(key, ip=_str(req.params, "ip") or "auto",
                               name=_str(req.params, "name"),
                               groups=_str(req.params, "groups"),
                               expires=_str(req.params, "expires"))
    log.info("client %s %s%s added to the registry: %s", entry.public_key, entry.ip,
             f" ({entry.name})" if entry.name else "", req.requester.cause())
    data = entry.to_json()
    ctx.access.journal.try_append(
        actor=_actor(req), action="client_add", target=data.get("name") or data["public_key"],
        detail={"ip": data["ip"], "public_key": data["public_key"],
                "groups": data.get("groups"), "expires": data.get("expires")})
    return {"entry": data, "applied": _apply_own_edit(ctx, req)}


def _clients_remove(ctx: ServerContext, req: Request) -> dict[str, Any]:
    removed = _registry(ctx).remove(public_key=_str(req.params, "public_key"),
                                    name=_str(req.params, "name"),
                                    all_matching=bool(req.params.get("all")))
    for e in removed:
        log.info("client %s %s%s removed from the registry: %s", e.public_key, e.ip,
                 f" ({e.name})" if e.name else "", req.requester.cause())
        ctx.access.journal.try_append(actor=_actor(req), action="client_remove",
                                      target=e.name or str(e.public_key),
                                      detail={"ip": str(e.ip), "public_key": str(e.public_key)})
    return {"removed": [e.to_json() for e in removed], "applied": _apply_own_edit(ctx, req)}


def _clients_renew(ctx: ServerContext, req: Request) -> dict[str, Any]:
    expires = _str(req.params, "expires")
    if expires is None:
        raise BadInput("expires is required", code="bad_request")
    changed = _registry(ctx).renew(expires=expires, public_key=_str(req.params, "public_key"),
                                   name=_str(req.params, "name"))
    now = time.time()
    data = [e.to_json(now) for e in changed]
    for d in data:
        log.info("client %s %s renewed until %s: %s", d["public_key"], d["ip"], d["expires"],
                 req.requester.cause())
        ctx.access.journal.try_append(actor=_actor(req), action="renew",
                                      target=d.get("name") or d["public_key"],
                                      detail={"expires": d["expires"]})
    return {"renewed": data, "applied": _apply_own_edit(ctx, req)}


def _apply(ctx: ServerContext, req: Request) -> dict[str, Any]:
    """Apply registry + cached devices now (no factory call)."""
    return {"applied": applied(ctx, apply_local(ctx, cause=req.requester.cause()))}


def access_grants(ctx: ServerContext, actor: str) -> AccessGrants:
    """``server access`` over this context: a grant goes into the live table as one
    set element (``nft -f`` of one statement), else the whole table is re-applied."""
    def apply(statement: str) -> bool:
        if not ctx.wg.interface_exists(ctx.settings.interface):
            return True  # no live interface: grants.json is applied when it starts
        ctx.nft.apply(statement)
        return True

    return AccessGrants(
        store=ctx.access.grants, journal=ctx.access.journal,
        registry=lambda: read_registry(ctx.settings.clients_file),
        devices=ctx.state.load_devices, groups=ctx.access.groups,
        table=ctx.settings.nft_table, apply=apply,
        reapply=lambda: apply_local(ctx, cause=f"grants changed by {actor}"),
        actor=actor, clock=ctx.clock)


def _actor(req: Request) -> str:
    return _str(req.params, "actor") or req.requester.user or "unknown"


def _access_grant(ctx: ServerContext, req: Request) -> dict[str, Any]:
    duration = _str(req.params, "for")
    if duration is None:
        raise BadInput("for (a duration) is required", code="bad_request")
    grant = access_grants(ctx, _actor(req)).grant(
        name=_str(req.params, "name"), public_key=_str(req.params, "public_key"),
        group=_str(req.params, "group"), device=_str(req.params, "device"),
        duration=duration)
    ctx.trusted_grants = file_signature(ctx.access.grants.path)
    return {"grant": grant, "by": "daemon" if ctx.daemon else "cli"}


def _access_revoke(ctx: ServerContext, req: Request) -> dict[str, Any]:
    grant = access_grants(ctx, _actor(req)).revoke(
        name=_str(req.params, "name"), public_key=_str(req.params, "public_key"),
        group=_str(req.params, "group"), device=_str(req.params, "device"))
    ctx.trusted_grants = file_signature(ctx.access.grants.path)
    return {"grant": grant, "by": "daemon" if ctx.daemon else "cli"}


def _admin_keys(ctx: ServerContext, req: Request) -> AdminKeys:
    """The server SSH's authorized_keys; the forced command names the fiovpn and
    the settings file the caller gave (the CLI's own), else this process's."""
    program = req.params.get("program")
    if program is None:
        program = this_program()
    elif not (isinstance(program, list) and program
              and all(isinstance(w, str) and w for w in program)):
        raise BadInput("program must be a list of strings", code="bad_request")
    return AdminKeys(ctx.settings.authorized_keys, list(program), _str(req.params, "config"))


def _admins_add(ctx: ServerContext, req: Request) -> dict[str, Any]:
    name, key = _str(req.params, "name"), _str(req.params, "key")
    if name is None or key is None:
        raise BadInput("name and key (the OpenSSH public key line) are required",
                       code="bad_request")
    admin = _admin_keys(ctx, req).add(name, key)
    log.info("admin %s (%s) added to %s: %s", name, admin.key_type,
             ctx.settings.authorized_keys, req.requester.cause())
    ctx.access.journal.try_append(
        actor=_actor(req), action="admin_add", target=name,
        detail={"key_type": admin.key_type,
                "authorized_keys": str(ctx.settings.authorized_keys)})
    return {"admin": admin.to_json()}


def _admins_remove(ctx: ServerContext, req: Request) -> dict[str, Any]:
    name = _str(req.params, "name")
    if name is None:
        raise BadInput("name is required", code="bad_request")
    admin = _admin_keys(ctx, req).remove(name)
    log.info("admin %s removed from %s: %s", name, ctx.settings.authorized_keys,
             req.requester.cause())
    ctx.access.journal.try_append(actor=_actor(req), action="admin_remove", target=name,
                                  detail={})
    return {"admin": admin.to_json()}


def _hello(ctx: ServerContext, _req: Request) -> dict[str, Any]:
    return {"pid": os.getpid(), "settings": settings_record(ctx.settings)}


OPS: dict[str, Op] = {
    "hello": Op(_hello, daemon_only=True),
    "apply": Op(_apply),
    "clients.add": Op(_clients_add, change=True),
    "clients.remove": Op(_clients_remove, change=True),
    "clients.renew": Op(_clients_renew, change=True),
    "access.grant": Op(_access_grant, change=True),
    "access.revoke": Op(_access_revoke, change=True),
    "admins.add": Op(_admins_add, change=True),
    "admins.remove": Op(_admins_remove, change=True),
}


def dispatch(ctx: ServerContext, req: Request) -> dict[str, Any]:
    """Run one op. A change op is where HA's single writer is enforced, for every
    caller of the socket (not only the CLI): refused on the standby with one line
    naming the active; on the active, the change is sent to ``ha-peer`` and the
    answer (``"ha"``) comes only after the peer took it."""
    op = OPS.get(req.op)
    if op is None:
        raise BadInput(f"unknown control op {req.op!r}", code="bad_request",
                       hint=f"known ops: {', '.join(sorted(OPS))}")
    if not op.change:
        return op.handler(ctx, req)
    refusal = standby_refusal(ctx.settings)
    if refusal is not None:
        log.info("refused %s on the HA standby: %s", req.op, req.requester.cause())
        raise refusal
    result = op.handler(ctx, req)
    if ctx.settings.vip is not None and ctx.settings.ha_peer is not None:
        done = replicate(ctx.settings)
        if done["replicated"]:
            log.info("%s copied to the standby %s", req.op, ctx.settings.ha_peer)
        result["ha"] = done
    return result


# --------------------------------------------------------------------------- caller


# Settings that say which interface, addresses, keys, table, registry and state
# directory the live state is: the last daemon set it up with its own; a CLI
# applying with others would leave it half moved, so it refuses and asks for the
# daemon to be started. (A state dir moved in the settings file was applied in the
# old one, with none of the file's other edits, while the CLI said it applied them.)
IDENTITY = ("interface", "subnet", "address", "client_pool", "port", "private_key",
            "nft_table", "clients_file", "state_dir", "ha_vip", "ha_peer")


def _changes(old: ServerSettings, new: ServerSettings) -> list[tuple[str, Any, Any]]:
    return [(f.name, getattr(old, f.name), getattr(new, f.name))
            for f in dataclasses.fields(ServerSettings)
            if getattr(old, f.name) != getattr(new, f.name)]


def _said(changes: list[tuple[str, Any, Any]]) -> str:
    return ", ".join(f"{name.replace('_', '-')} {old} -> {new}" for name, old, new in changes)


def effective_settings(settings: ServerSettings, *, recorded_in: Path | None = None,
                       settings_file: Path | None = None) -> ServerSettings:
    """What a CLI applies with when no daemon runs: the settings the last daemon
    recorded in its state dir (``recorded_in``, default ``settings.state_dir``),
    its command-line flags included, else ``settings`` (no daemon ever ran there).

    ``settings`` is what the settings file says now. When the daemon recorded which
    settings its command line and environment set (``overrides``), a settings-file
    edit since it started is told apart from a flag: the CLI applies the settings
    the daemon would run with if started now with the same command line (and says
    what changed), or refuses when the change moves the live state elsewhere
    (``IDENTITY``): only the daemon, started again, moves it whole.

    ``settings_file``: the file ``settings`` were read from. When the daemon read
    another one (it recorded which), ``settings`` say nothing of an edit since: its
    recorded settings are applied, and the CLI says so."""
    where = settings.state_dir if recorded_in is None else recorded_in
    state = StateCache(where)
    doc = state.load_effective_document()
    if doc is None:
        return settings
    source = str(state.effective_path)
    try:
        recorded = settings_from_record(doc["settings"], source=source)
    except BadInput as exc:
        log.warning("ignoring %s: %s", state.effective_path, exc)
        return settings
    if os.path.realpath(recorded.state_dir) != os.path.realpath(where):
        return settings  # copied from another server's state dir: not this one's
    overrides = doc.get("overrides")
    if not isinstance(overrides, dict):
        return recorded  # an older daemon: flags and file edits cannot be told apart
    theirs = doc.get("settings_file")
    if settings_file is not None and isinstance(theirs, str) \
            and os.path.realpath(theirs) != os.path.realpath(settings_file):
        log.warning("the last fiovpn server daemon (pid %s) read its settings from %s, this "
                    "command from %s: applying the daemon's recorded settings (give this "
                    "command --config %s)", doc.get("pid"), theirs, settings_file, theirs)
        return recorded
    try:
        now = settings_from_record({**settings_record(settings), **overrides}, source=source)
    except BadInput as exc:
        raise PermanentError(f"the settings file and the last daemon's command line "
                             f"({source}) no longer fit together: {exc.message}",
                             code="settings_changed",
                             hint="fix the settings file, then start the daemon") from None
    changes = _changes(recorded, now)
    if not changes:
        return recorded
    who = f"the daemon (pid {doc.get('pid')}, started {doc.get('started_at')})"
    moved = [c for c in changes if c[0] in IDENTITY]
    if moved:
        raise PermanentError(
            f"the settings changed since {who} set up the live state: {_said(moved)}; "
            "with no daemon running, this command will not apply them to half of it",
            code="settings_changed",
            hint="start the daemon (systemctl start fiovpn-<factory>) so that it moves "
                 "to the new settings, then retry; or undo the settings-file edit")
    log.warning("the settings changed since %s recorded them: %s; applying the current "
                "ones, as the daemon will when it starts", who, _said(changes))
    return now


def _daemon_settings(settings: ServerSettings, found: Announced, *, running: bool = True
                     ) -> ServerSettings:
    """The settings of the daemon ``found`` (running, else the last one), said when its
    state directory is not ``settings``'."""
    if os.path.realpath(found.settings.state_dir) != os.path.realpath(settings.state_dir):
        log.warning("%s fiovpn server daemon (pid %s) %s state directory %s, not %s from "
                    "the settings file (it was given on its command line): using it; put "
                    "its settings into the settings file",
                    "the running" if running else "no daemon runs; the last", found.pid,
                    "uses" if running else "kept its state in", found.settings.state_dir,
                    settings.state_dir)
    return found.settings


def live_settings(settings: ServerSettings) -> ServerSettings:
    """For a command that reads live state (``status``, ``clients list``, ``access
    list``, ``journal``): the settings of the running daemon that owns any of
    ``settings``' live state, said when they differ; with none running, those of
    the last one that did (where ``ask`` applies a change now: a grant made then is
    listed); else ``settings``."""
    found, last = find_daemon(settings)  # (None, None) too when run-dir is unreadable
    if found is not None:
        return _daemon_settings(settings, found)
    return settings if last is None else _daemon_settings(settings, last, running=False)


def ask(settings: ServerSettings, op: str, params: Mapping[str, Any] | None = None, *,
        requester: Requester | None = None, wait: float = 5.0,
        build: Callable[[ServerSettings], ServerContext] | None = None,
        settings_file: Path | None = None) -> dict[str, Any]:
    """Run ``op`` where live state is owned: by the daemon that owns any of the live
    state ``settings`` name (found in ``run-dir``, whatever its command line said,
    else the one of ``settings.state_dir``), else here, with the daemon's recorded
    settings, holding the run directory so that no daemon starts meanwhile
    (``settings_file``: the file ``settings`` came from, see ``effective_settings``)."""
    requester = requester or Requester.of_this_process()
    run = RunDir(settings.run_dir)
    deadline = time.monotonic() + wait
    entry = OPS.get(op)
    if entry is None:
        raise BadInput(f"unknown control op {op!r}", code="bad_request")
    told = False
    while True:
        with run.no_daemon_starts():
            found, _last = run.find(settings)
        target = settings
        if found is not None:
            target = found.settings if told else _daemon_settings(settings, found)
            told = True
        client = ControlClient(target.state_dir)
        try:
            return client.request(op, params, requester=requester)
        except NoDaemon:
            pass
        if entry.daemon_only and found is None:
            raise PermanentError("no fiovpn server daemon is running", code="no_daemon",
                                 hint="start it: systemctl start fiovpn-<factory>")
        with run.no_daemon_starts():
            found, last = run.find(settings)
            if found is None:
                # the last daemon's settings: it may have had another state dir
                base = settings if last is None else last.settings
                with StateCache(base.state_dir).cli_lock() as mine:
                    if mine:
                        eff = effective_settings(settings, recorded_in=base.state_dir,
                                                 settings_file=settings_file)
                        if eff.state_dir != base.state_dir:
                            eff = base  # its effective.json is gone: its entry says
                        ctx = (build or ServerContext.from_settings)(eff)
                        return dispatch(ctx, Request(op, dict(params or {}), requester))
        # A daemon holds the lock but its socket does not answer yet: it is starting.
        if time.monotonic() >= deadline:
            raise TemporaryError(
                f"a fiovpn server daemon holds {target.state_dir} but does not answer on "
                f"{client.path}", code="daemon_not_answering",
                hint="is it an older fiovpn, or still starting? check its log "
                     "(journalctl -u fiovpn-<factory>), then retry")
        time.sleep(0.1)
