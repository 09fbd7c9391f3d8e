"""``status.json``: the document each reconcile writes, and ``server status``
which reads it back with live handshake and traffic figures."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

from fiovpn.adapters.runner import Runner, SubprocessRunner, pid_alive
from fiovpn.adapters.wireguard import WireGuard
from fiovpn.core.keys import Key, public_key
from fiovpn.core.peerrows import PeerRows
from fiovpn.core.peers import Peer
from fiovpn.core.registry import ClientEntry
from fiovpn.core.wgdump import WgDump
from fiovpn.errors import FiovpnError
from fiovpn.services import ha as ha_service
from fiovpn.services.keys import read_private_key
from fiovpn.services.registry import read_registry
from fiovpn.services.server.context import ServerContext
from fiovpn.services.server.report import ReconcileReport
from fiovpn.services.state import StateCache
from fiovpn.settings import ServerSettings

log = logging.getLogger("fiovpn.server")


def _status_order(p: Peer) -> tuple[str, int]:
    return (p.kind, int(p.ip))


def _peers_json(ctx: ServerContext, dump: WgDump | None, peers: list[Peer]) -> PeerRows:
    """The status file's peers with this pass's handshakes and traffic (the sort is
    remembered for the same list of peers, which the reconcile keeps while they
    are equal; the rows while the dump stays the same too: they are immutable,
    each read builds its own dicts)."""
    last = ctx.last_order
    if last is not None and peers is last[0]:
        ordered = last[1]
    else:
        ordered = sorted(peers, key=_status_order)
        ctx.last_order = (peers, ordered)
    memo = ctx.last_peers_json
    if memo is not None and memo[0] is ordered and memo[1] is dump:
        return memo[2]  # same peers, same dump object (an idle interface): same rows
    rows = PeerRows(ordered, dump)
    ctx.last_peers_json = (ordered, dump, rows)
    return rows


def status_document(ctx: ServerContext, report: ReconcileReport, dump: WgDump | None,
                    peers: list[Peer]) -> dict[str, Any]:
    s = ctx.settings
    previous: dict[str, Any] = {}
    if not report.used_api or ctx.last_api_success is None:
        previous = ctx.state.load_status() or {}
    api_ok, error = report.api_ok, report.error
    code = report.api_error_code
    if not report.used_api:
        # A local apply (registry edit) says nothing about the API: keep the
        # daemon's view of it.
        api_ok = bool(previous.get("api_ok"))
        parts = [e for e in (previous.get("last_error"), report.error) if e]
        error = "; ".join(parts) if parts else None
        code = previous.get("last_error_code")
    last_success = ctx.last_api_success or previous.get("last_success")
    desired = report.desired
    return {
        "factory": s.factory,
        "interface": s.interface,
        "server_address": str(ctx.network.server),
        "subnet": str(ctx.network.subnet),
        "client_pool": str(ctx.network.pool),
        "port": s.port,
        "public_key": str(ctx.server_key) if ctx.server_key else None,
        "allow_device_to_device": s.allow_device_to_device,
        "daemon_pid": os.getpid() if ctx.daemon else previous.get("daemon_pid"),
        "last_sync": report.at,
        "last_success": last_success,
        "last_error": error,
        "last_error_code": code,
        "device_list_age_s": device_list_age_s(last_success),
        "api_ok": api_ok,
        "devices_source": report.devices_source,
        "peers": _peers_json(ctx, dump, peers),
        "conflicts": [c.to_json() for c in (desired.conflicts if desired else ())],
        "skipped": [p.to_json() for p in (desired.skipped if desired else ())],
        "registry_problems": [p.to_json() for p in report.registry_problems],
        "last_changes": [c.to_json() for c in report.changes],
        **(ctx.ha.status_fields() if ctx.ha is not None
           else {"role": "single", "vip": None, "ha_peer": None, "peer_sync_age_s": None,
                 "expect_handshakes": True}),
    }


def status(settings: ServerSettings, *, runner: Runner | None = None,
           document: dict[str, Any] | None = None, dump: WgDump | None = None
           ) -> dict[str, Any]:
    """The daemon's last status with live handshake and traffic figures.

    ``document``: the daemon's last status document when the caller holds it
    (the daemon's own web page), instead of reading ``status.json``; ``dump``:
    the interface as that pass read it (at most one poll old), instead of a
    ``wg show dump`` of its own (at 50,000 peers that read takes longer than a
    page or an ``/api/status`` answer may).

    Shape: ``{"factory", "interface", "server_address", "public_key", "port",
    "daemon_running", "interface_up", "last_sync", "last_success", "last_error",
    "last_error_code" (``auth_failed`` | ``api_unreachable`` | ``api_error`` | null),
    "device_list_age_s" (seconds since the last good factory answer, null: never),
    "api_ok", "peers": [{"kind", "name", "ip", "public_key", "latest_handshake",
    "rx", "tx", "endpoint"}], "conflicts", "skipped", "registry_problems"}``.
    """
    doc = document if document is not None else (
        StateCache(settings.state_dir).load_status() or {})
    error = None
    if dump is not None:
        up = True
    else:
        wg = WireGuard(runner or SubprocessRunner(), wireguard_go=settings.wireguard_go)
        up = wg.interface_exists(settings.interface)
        if up:
            try:
                dump = wg.show_dump(settings.interface)
            except FiovpnError as exc:
                error = str(exc)
    live = dump.by_key() if dump else {}
    peers: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in doc.get("peers", []):
        key = str(item.get("public_key"))
        seen.add(key)
        cur = live.get(Key(key)) if _is_key(key) else None
        peers.append({**item,
                      "latest_handshake": (cur.latest_handshake or None) if cur
                      else item.get("latest_handshake"),
                      "rx": cur.rx if cur else item.get("rx", 0),
                      "tx": cur.tx if cur else item.get("tx", 0),
                      "endpoint": cur.endpoint if cur else item.get("endpoint"),
                      "on_interface": cur is not None if dump else None})
    clients: dict[Key, ClientEntry] = {}
    with contextlib.suppress(FiovpnError):  # the daemon reports an unreadable registry
        clients = {e.public_key: e for e in read_registry(settings.clients_file).entries}
    for cur in (dump.peers if dump else ()):
        if str(cur.public_key) in seen:
            continue
        entry = clients.get(cur.public_key)
        ip = cur.single_ip
        peers.append({"kind": "client" if entry else "device",
                      "name": entry.name if entry else None,
                      "ip": str(ip) if ip else ",".join(cur.allowed_ips) or None,
                      "public_key": str(cur.public_key),
                      "latest_handshake": cur.latest_handshake or None,
                      "rx": cur.rx, "tx": cur.tx, "endpoint": cur.endpoint,
                      "on_interface": True})
    pid = doc.get("daemon_pid")
    return {
        "factory": doc.get("factory", settings.factory),
        "interface": settings.interface,
        "server_address": doc.get("server_address", str(settings.network().server)),
        "public_key": (str(dump.interface.public_key) if dump and dump.interface.public_key
                       else doc.get("public_key") or _key_file_public(settings)),
        "port": dump.interface.listen_port if dump else doc.get("port", settings.port),
        "interface_up": up,
        "daemon_running": isinstance(pid, int) and pid_alive(pid),
        "last_sync": doc.get("last_sync"),
        "last_success": doc.get("last_success"),
        "last_error": doc.get("last_error") or error,
        "last_error_code": doc.get("last_error_code"),
        "device_list_age_s": device_list_age_s(doc.get("last_success")),
        "api_ok": doc.get("api_ok"),
        "peers": peers,
        "conflicts": doc.get("conflicts", []),
        "skipped": doc.get("skipped", []),
        "registry_problems": doc.get("registry_problems", []),
        **ha_service.status_fields(settings, doc),
    }


def device_list_age_s(last_success: Any, now: float | None = None) -> int | None:
    """Seconds since the last good answer from the factory (``last_success``)."""
    if not isinstance(last_success, str):
        return None
    try:
        when = datetime.strptime(last_success, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return max(0, int((time.time() if now is None else now) - when.timestamp()))


def _key_file_public(settings: ServerSettings) -> str | None:
    """The server's public key from its key file (before the daemon ever ran)."""
    try:
        return str(public_key(read_private_key(settings.private_key)))
    except (FiovpnError, OSError):
        return None


def _is_key(text: str) -> bool:
    try:
        Key(text)
    except ValueError:
        return False
    return True



