"""The operations a caller may ask of the server, in one table used two ways:

- while a daemon runs, the CLI sends ``{"op", "params"}`` over the control
  socket (``control.py``) and the daemon runs the op in its own process, with
  its own settings and memos: the only writer of interface, firewall and hosts;
- with no daemon, ``ask`` runs the same op in the CLI process, holding the
  daemon lock, with the settings the daemon last recorded (``effective.json``),
  never a partial view from ``server.toml``.

To add an op: write ``def _my_op(ctx: ServerContext, req: Request) -> dict``
(``req.params`` is the JSON object the caller sent; raise ``BadInput`` for bad
params, exit 2), add it to ``OPS`` (``daemon_only=True`` when it makes no sense
without a running daemon), and call ``ask(settings, "my.op", {...})``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fiovpn.adapters.fs import file_signature
from fiovpn.errors import BadInput, PermanentError, TemporaryError
from fiovpn.services.access import AccessGrants
from fiovpn.services.registry import ClientRegistry, LiveInterface, read_registry
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
    return {"entry": entry.to_json(), "applied": _apply_own_edit(ctx, req)}


def _clients_remove(ctx: ServerContext, req: Request) -> dict[str, Any]:
    removed = _registry(ctx).remove(public_key=_str(req.params, "public_key"),
                                    name=_str(req.params, "name"),
                                    all_matching=bool(req.params.get("all")))
    for e in removed:
        log.info("client %s %s%s removed from the registry: %s", e.public_key, e.ip,
                 f" ({e.name})" if e.name else "", req.requester.cause())
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


def _hello(ctx: ServerContext, _req: Request) -> dict[str, Any]:
    return {"pid": os.getpid(), "settings": settings_record(ctx.settings)}


OPS: dict[str, Op] = {
    "hello": Op(_hello, daemon_only=True),
    "apply": Op(_apply),
    "clients.add": Op(_clients_add),
    "clients.remove": Op(_clients_remove),
    "clients.renew": Op(_clients_renew),
    "access.grant": Op(_access_grant),
    "access.revoke": Op(_access_revoke),
}


def dispatch(ctx: ServerContext, req: Request) -> dict[str, Any]:
    op = OPS.get(req.op)
    if op is None:
        raise BadInput(f"unknown control op {req.op!r}", code="bad_request",
                       hint=f"known ops: {', '.join(sorted(OPS))}")
    return op.handler(ctx, req)


# --------------------------------------------------------------------------- caller


def effective_settings(settings: ServerSettings) -> ServerSettings:
    """The settings the daemon of ``settings.state_dir`` recorded (its command-line
    flags included), else ``settings`` (no daemon ever ran there)."""
    state = StateCache(settings.state_dir)
    record = state.load_effective()
    if record is None:
        return settings
    try:
        recorded = settings_from_record(record, source=str(state.effective_path))
    except BadInput as exc:
        log.warning("ignoring %s: %s", state.effective_path, exc)
        return settings
    return recorded if recorded.state_dir == settings.state_dir else settings


def ask(settings: ServerSettings, op: str, params: Mapping[str, Any] | None = None, *,
        requester: Requester | None = None, wait: float = 5.0,
        build: Callable[[ServerSettings], ServerContext] | None = None) -> dict[str, Any]:
    """Run ``op`` where live state is owned: by the daemon when one runs on
    ``settings.state_dir``, else here, with the daemon's recorded settings."""
    requester = requester or Requester.of_this_process()
    client = ControlClient(settings.state_dir)
    state = StateCache(settings.state_dir)
    deadline = time.monotonic() + wait
    entry = OPS.get(op)
    if entry is None:
        raise BadInput(f"unknown control op {op!r}", code="bad_request")
    while True:
        try:
            return client.request(op, params, requester=requester)
        except NoDaemon:
            pass
        if entry.daemon_only:
            raise PermanentError("no fiovpn server daemon is running", code="no_daemon",
                                 hint="start it: systemctl start fiovpn-<factory>")
        with state.cli_lock() as mine:
            if mine:
                eff = effective_settings(settings)
                ctx = (build or ServerContext.from_settings)(eff)
                return dispatch(ctx, Request(op, dict(params or {}), requester))
        # A daemon holds the lock but its socket does not answer yet: it is starting.
        if time.monotonic() >= deadline:
            raise TemporaryError(
                f"a fiovpn server daemon holds {settings.state_dir} but does not answer on "
                f"{client.path}", code="daemon_not_answering",
                hint="is it an older fiovpn, or still starting? check its log "
                     "(journalctl -u fiovpn-<factory>), then retry")
        time.sleep(0.1)
