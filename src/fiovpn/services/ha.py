"""High availability: two servers, one key, one VIP moved by keepalived (SPEC 14).

The daemon asks :class:`HaNode` a few times a second which role it has (is the
VIP one of this namespace's addresses?) and acts on a change:

- becoming **active**: restore the endpoints the old active last copied here and
  start a handshake to every one of those peers at once (switching persistent
  keepalive on makes wireguard-go send a keepalive, which needs a session, so it
  initiates the handshake now instead of waiting for a peer's timers); the
  firewall makes those packets leave from the VIP;
- becoming **standby**: forget every session and endpoint (each peer is removed
  and added back in one ``wg set``), so this server never talks from its own
  address and never holds a stale session;
- while **active**: copy the peers' current endpoints (and the registry, when it
  changed) to the standby every ``ha-sync-interval`` seconds, over SSH to
  ``ha-peer`` running ``fiovpn server ha-receive``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from fiovpn.adapters.fs import atomic_write, locked
from fiovpn.adapters.runner import Runner, SubprocessRunner
from fiovpn.adapters.ssh import SshClient, SshOptions, SshTarget, parse_ha_peer, runtime_dir
from fiovpn.adapters.wireguard import WireGuard
from fiovpn.core.ha import (
    ACTIVE,
    REPLICATED_FILES,
    SINGLE,
    STANDBY,
    JournalMark,
    Role,
    SyncMessage,
    admins_digest,
    checked_admin,
    journal_update,
    local_ipv4,
    registry_digest,
    role_for,
    standby_part,
    taken_mark,
    untaken_standby_lines,
)
from fiovpn.core.keys import Key
from fiovpn.core.wgdump import WgDump
from fiovpn.errors import FiovpnError, PermanentError, TemporaryError
from fiovpn.services.admins import Admin, AdminKeys, this_program
from fiovpn.services.ha_journal import StandbyJournal, StandbyLines, journal_digest
from fiovpn.services.ha_registry import registry_digest_of, registry_text
from fiovpn.services.journal import JOURNAL_FILE, Journal
from fiovpn.settings import ServerSettings

log = logging.getLogger("fiovpn.server")

ENDPOINTS_FILE = "ha-endpoints.json"
HA_STATE_FILE = "ha.json"
TAKEOVER_KEEPALIVE = 25  # seconds; on only until the takeover handshakes are done
KEEPALIVE_OFF_AFTER = 15.0
SYNC_TIMEOUT = 15.0
SESSION_FRESH = 180.0  # seconds: a handshake this recent is a live session


def current_role(settings: ServerSettings) -> Role:
    """``active`` / ``standby`` from whether the VIP is on this host, ``single`` without
    HA mode."""
    vip = settings.vip
    if vip is None:
        return SINGLE
    try:
        text = settings.local_addresses_file.read_text()
    except OSError:
        return STANDBY  # cannot tell: never claim the VIP
    return role_for(vip, local_ipv4(text))


def peer_client(settings: ServerSettings, runner: Runner | None = None) -> SshClient | None:
    if settings.ha_peer is None:
        return None
    target: SshTarget = parse_ha_peer(settings.ha_peer)
    control: Path | None = None
    with contextlib.suppress(FiovpnError, OSError):
        control = runtime_dir()
    options = SshOptions(identity_file=settings.ha_identity_file,
                         known_hosts=settings.ha_known_hosts, control_dir=control,
                         control_persist=120, connect_timeout=5,
                         extra=("GlobalKnownHostsFile=/dev/null",)
                         if settings.ha_known_hosts is not None else ())
    return SshClient(runner or SubprocessRunner(), target, options)


def standby_refusal(settings: ServerSettings) -> PermanentError | None:
    """The error a registry / access / admin change meets on the standby (None when
    this server may make it)."""
    if current_role(settings) != STANDBY:
        return None
    active = settings.ha_peer or "the server holding the VIP"
    return PermanentError(
        f"this server is the HA standby: registry changes are made on the active server "
        f"({active}, holding VIP {settings.ha_vip})", code="ha_standby",
        hint="run the command there, or over the VPN (the VIP always reaches the active)")


# --------------------------------------------------------------------------- state files


@dataclass
class HaFiles:
    """``ha-endpoints.json`` (what the active last copied here) and ``ha.json`` (this
    server's own HA facts for status and health), both in the state dir, 0600."""

    directory: Path

    @property
    def endpoints_path(self) -> Path:
        return self.directory / ENDPOINTS_FILE

    @property
    def state_path(self) -> Path:
        return self.directory / HA_STATE_FILE

    def _read(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, path: Path, data: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(data, separators=(",", ":")) + "\n", mode=0o600)

    def endpoints(self) -> dict[str, Any]:
        return self._read(self.endpoints_path)

    def save_endpoints(self, message: SyncMessage, received: float) -> None:
        self._write(self.endpoints_path, {"received": received, "sent": message.sent,
                                          "endpoints": message.endpoints})

    def state(self) -> dict[str, Any]:
        return self._read(self.state_path)

    def update_state(self, **values: Any) -> dict[str, Any]:
        with locked(self.state_path):
            data = {**self.state(), **values}
            self._write(self.state_path, data)
        return data


# --------------------------------------------------------------------------- receiving


def receive(settings: ServerSettings, message: SyncMessage, *,
            admins: AdminKeys | None = None,
            clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """``fiovpn server ha-receive`` on the standby: keep the endpoints; write the
    registry, the grants, the managed admins (``admins``: this server's
    authorized_keys, each line with its own forced command) and the journal when
    the active sent them. Refused when this server holds the VIP too (two actives:
    keepalived will settle it; neither overwrites the other). The answer holds a
    digest of each, so the active confirms a change only once they match its own."""
    role = current_role(settings)
    if role == ACTIVE and message.sender_role == ACTIVE:
        raise PermanentError(f"this server holds the VIP {settings.ha_vip} too: refusing "
                             "the copy (two actives)", code="ha_two_actives")
    files = HaFiles(settings.state_dir)
    now = clock()
    # merged: a copy sent with a change (no endpoints) or one taken while a peer
    # was between sessions must not make us forget where that peer was
    known = files.endpoints().get("endpoints")
    files.save_endpoints(dataclasses.replace(message, endpoints={
        **(known if isinstance(known, dict) else {}), **message.endpoints}), now)
    wrote = False
    if message.registry is not None:
        wrote = write_registry_text(settings.clients_file, message.registry)
    journal_written = take_state(settings, message, admins)
    own = StandbyLines(settings.state_dir)
    if message.standby_taken is not None:
        own.acknowledge(message.standby_taken)  # they are in the journal part just taken
    # each copy is a new process here: the registry is read only when it changed
    digests = registry_digest_of(settings.clients_file)
    digests.seed(files.state().get("registry_mark"))
    sha = digests.digest()
    files.update_state(last_received=now, last_received_sent=message.sent,
                       registry_mark=digests.mark())
    return {"role": role, "registry_sha": sha,
            "registry_written": wrote, "endpoints": len(message.endpoints),
            "files_sha": files_digest(state_files(settings)),
            "admins_sha": admins_digest(admins_of(settings)),
            "journal": list(StandbyJournal(journal_path(settings)).mark()),
            "journal_written": journal_written,
            # lines this standby journaled itself (a refused admin command): the active
            # puts them in the journal, which comes back here with its next copy
            "standby_lines": own.pending()}


def take_state(settings: ServerSettings, message: SyncMessage,
               admins: AdminKeys | None = None) -> bool:
    """The grants, the journal and the managed admins of the active's ``message``
    written here (what ``ha-receive`` and a returning server's catch-up both take);
    ``admins``: this server's authorized_keys, each line with its own forced
    command. False when the journal part did not fit our copy."""
    write_state_files(settings, message.files)
    journal_written = True
    if message.journal is not None:
        journal_written = StandbyJournal(journal_path(settings)).take(message.journal)
    keys = admins or AdminKeys(settings.authorized_keys, this_program())
    if message.admins is not None and keys.replace_managed(
            [Admin(a["name"], a["key_type"], a["public_key"]) for a in message.admins]):
        log.info("admins in %s replaced by the active server's (%d)",
                 settings.authorized_keys, len(message.admins))
    return journal_written


def write_state_files(settings: ServerSettings, texts: dict[str, str]) -> None:
    for name, text in texts.items():
        path = settings.state_dir / name
        if state_text(path) != text:
            atomic_write(path, text, mode=0o600)
            log.info("%s replaced by the active server's copy", name)


def files_digest(files: dict[str, str]) -> str:
    return registry_digest(json.dumps(files, sort_keys=True))


_warned_admins: set[str] = set()


def admins_of(settings: ServerSettings) -> list[dict[str, str]]:
    """The managed admins of this server's authorized_keys (name, key type, key)
    that the peer would take: a line that fails the check (edited by hand, or
    written before the check was this strict) is left out, with a warning once,
    rather than stop every copy to the peer."""
    try:
        found = AdminKeys(settings.authorized_keys, []).list()
    except FiovpnError as exc:
        log.warning("%s", exc)
        return []
    out: list[dict[str, str]] = []
    for a in found:
        try:
            out.append(checked_admin(a.to_json()))
        except ValueError as exc:
            if repr(a) not in _warned_admins:
                _warned_admins.add(repr(a))
                log.warning("%s: %s: not copied to the HA peer (remove it with `fiovpn server "
                            "admins remove --name %s`, then add it again)",
                            settings.authorized_keys, exc, a.name)
    return out


def journal_path(settings: ServerSettings) -> Path:
    return settings.state_dir / JOURNAL_FILE


def journal_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def state_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def state_files(settings: ServerSettings) -> dict[str, str]:
    """The replicated state files this server has (grants, ...)."""
    out: dict[str, str] = {}
    for name in REPLICATED_FILES:
        text = state_text(settings.state_dir / name)
        if text is not None:
            out[name] = text
    return out


def registry_sha(path: Path) -> str:
    """The registry's digest, the file read again only when it changed."""
    return registry_digest_of(path).digest()


def write_registry_text(path: Path, text: str) -> bool:
    """Replace the registry with the active's copy (byte for byte, comments and all),
    under the registry's lock; False when it already was that."""
    with locked(path):
        if registry_text(path) == text:
            return False
        atomic_write(path, text.encode("utf-8", "surrogateescape"), mode=0o600)
    log.info("registry replaced by the active server's copy (%s)", registry_digest(text))
    return True


def snapshot(settings: ServerSettings) -> dict[str, Any]:
    """``fiovpn server ha-snapshot``: what a returning server catches up from."""
    role = current_role(settings)
    wg = WireGuard(SubprocessRunner(), wireguard_go=settings.wireguard_go)
    endpoints: dict[str, str] = {}
    if role == ACTIVE and wg.interface_exists(settings.interface):
        with contextlib.suppress(FiovpnError):
            endpoints = live_endpoints(wg.show_dump(settings.interface))
    text = registry_text(settings.clients_file)
    return {"role": role, "registry": text, "registry_sha": registry_digest(text),
            "endpoints": endpoints, "at": time.time(), "files": state_files(settings),
            "admins": admins_of(settings),
            "journal": journal_update(journal_bytes(journal_path(settings)), None)}


def live_endpoints(dump: WgDump) -> dict[str, str]:
    return {str(p.public_key): p.endpoint for p in dump.peers if p.endpoint}


# --------------------------------------------------------------------------- sending


@dataclass
class PeerLink:
    """The SSH link to the other server's fiovpn."""

    client: SshClient
    command: str = "fiovpn"
    config: Path | None = None

    def _argv(self, *args: str) -> list[str]:
        return [self.command, "server", *args, "--json"]

    def call(self, *args: str, payload: dict[str, Any] | None = None,
             timeout: float = SYNC_TIMEOUT) -> dict[str, Any]:
        result = self.client.run(self._argv(*args), check=False, timeout=timeout,
                                 input=json.dumps(payload) if payload is not None else None)
        try:
            data = json.loads(result.stdout or "{}")
        except ValueError:
            data = {}
        if result.returncode != 0:
            err = data.get("error", {}) if isinstance(data, dict) else {}
            msg = err.get("message") if isinstance(err, dict) else None
            raise PermanentError(f"the HA peer {self.client.target} refused `server "
                                 f"{' '.join(args)}`: "
                                 f"{msg or result.stderr.strip()[-200:] or result.returncode}",
                                 code=str(err.get("code") or "ha_peer_refused")
                                 if isinstance(err, dict) else "ha_peer_refused")
        return data if isinstance(data, dict) else {}

    def send(self, message: SyncMessage) -> dict[str, Any]:
        return self.call("ha-receive", payload=message.to_json())

    def snapshot(self) -> dict[str, Any]:
        return self.call("ha-snapshot")


def peer_link(settings: ServerSettings, runner: Runner | None = None) -> PeerLink | None:
    client = peer_client(settings, runner)
    if client is None:
        return None
    return PeerLink(client, settings.ha_peer_command)


# Every copy to the peer is built and sent under this lock, so copies leave in the
# order their state was read: a slower, older copy never lands after a newer one.
_send_lock = threading.Lock()


def state_message(settings: ServerSettings, *, endpoints: dict[str, str] | None = None,
                  peer_journal: JournalMark | None = None, registry: bool = True,
                  files: bool = True) -> SyncMessage:
    """Everything the standby keeps identical: the registry and grants (``registry``
    / ``files`` False: not resent), the managed admins, the journal beyond the
    peer's copy (``peer_journal``), and the peers' endpoints when given."""
    digests = registry_digest_of(settings.clients_file)
    # not resent: its digest only, which reads nothing while the file is unchanged
    text, sha = digests.read() if registry else (None, digests.digest())
    taken = taken_mark(HaFiles(settings.state_dir).state().get("standby_taken"))
    return SyncMessage(time.time(), current_role(settings), endpoints or {},
                       text, sha,
                       state_files(settings) if files else {}, admins_of(settings),
                       journal_digest(journal_path(settings)).update_for(peer_journal),
                       taken)


def _mark(value: Any) -> JournalMark | None:
    if isinstance(value, list | tuple) and len(value) == 2:
        with contextlib.suppress(TypeError, ValueError):
            return int(value[0]), str(value[1])
    return None


def send_state(link: PeerLink, settings: ServerSettings, message: SyncMessage
               ) -> dict[str, Any]:
    """Send ``message``; when the peer's journal did not fit the part sent (its copy
    is not the prefix we thought), send the journal again from what it says it has."""
    reply = link.send(message)
    if reply.get("journal_written") is False:
        part = journal_digest(journal_path(settings)).update_for(_mark(reply.get("journal")))
        retry = dataclasses.replace(message, journal=part, registry=None, files={})
        reply = {**reply, **link.send(retry)}
    peer = _mark(reply.get("journal"))
    with contextlib.suppress(OSError):
        HaFiles(settings.state_dir).update_state(peer_journal=list(peer) if peer else None)
    return reply


def take_standby_lines(settings: ServerSettings, reply: dict[str, Any]) -> int:
    """The standby's own journal lines from its ``reply``, appended to our journal
    (each saying which server wrote it) once: how far we took them is kept, and
    sent with the next copy so the standby stops sending them. How many lines.

    Never raises: the copy itself went through (a failure here must not count as
    a failed copy, stop the sync thread or fail an admin's confirmed change); lines
    not recorded as taken come again with the next answer."""
    try:
        part = standby_part(reply.get("standby_lines"))
    except (TypeError, ValueError) as exc:
        log.warning("HA peer %s sent unusable journal lines of its own: %s",
                    settings.ha_peer, exc)
        return 0
    if part is None:
        return 0
    files = HaFiles(settings.state_dir)
    lines, end = untaken_standby_lines(part, taken_mark(files.state().get("standby_taken")))
    if lines:
        server = f"standby {settings.ha_peer}" if settings.ha_peer else "standby"
        for line in lines:
            detail = line.get("detail")
            line["detail"] = {**(detail if isinstance(detail, dict) else {}), "server": server}
        try:
            Journal(journal_path(settings)).write_raw("".join(
                json.dumps(line, separators=(",", ":"), default=str) + "\n"
                for line in lines).encode())
        except OSError as exc:
            log.warning("cannot add %d journal line(s) of the HA standby %s to %s: %s "
                        "(they come again with its next answer)", len(lines),
                        settings.ha_peer, journal_path(settings), exc)
            return 0
        log.info("%d journal line(s) of the standby %s added to the journal", len(lines),
                 settings.ha_peer)
    try:
        files.update_state(standby_taken=[part["file"], end])
    except (OSError, FiovpnError) as exc:
        log.warning("cannot record in %s how far the journal lines of the HA standby %s "
                    "were taken: %s (its next answer may add them again)",
                    files.state_path, settings.ha_peer, exc)
    return len(lines)


def own_journal(settings: ServerSettings) -> Journal:
    """Where this server journals a line of its own (a refused admin command): the
    journal, or on the HA standby its ``StandbyLines`` (the journal there is the
    active's copy, which a whole copy replaces)."""
    if current_role(settings) == STANDBY:
        return StandbyLines(settings.state_dir).journal()
    return Journal(journal_path(settings))


def replicate(settings: ServerSettings, *, runner: Runner | None = None) -> dict[str, Any]:
    """After a registry, grant or admin change on the active: send the registry,
    the grants, the admins and the journal to the standby and wait until its copy
    matches ours. ``{"replicated": bool, "peer": str|None, "warning": str|None}``;
    a peer that answers and refuses is an error, an unreachable one a warning (it
    catches up when it returns)."""
    link = peer_link(settings, runner)
    if link is None:
        return {"replicated": False, "peer": None, "warning": None}
    files = HaFiles(settings.state_dir)
    with _send_lock:
        message = state_message(settings, peer_journal=_mark(files.state().get("peer_journal")))
        try:
            reply = send_state(link, settings, message)
        except TemporaryError as exc:
            warning = (f"the HA peer {settings.ha_peer} is unreachable ({exc.message}): the "
                       "change is saved here and reaches it when it returns")
            log.warning("%s", warning)
            return {"replicated": False, "peer": settings.ha_peer, "warning": warning}
        ours = journal_digest(journal_path(settings)).mark()
        take_standby_lines(settings, reply)  # after `ours`: they go with the next copy
    differs = [what for what, theirs, mine in (
        ("registry", reply.get("registry_sha"), message.registry_sha),
        ("grants", reply.get("files_sha"), files_digest(message.files)),
        ("admins", reply.get("admins_sha"), admins_digest(message.admins or [])),
        ("journal", _mark(reply.get("journal")), ours)) if theirs != mine]
    if differs:
        raise PermanentError(f"the HA peer {settings.ha_peer} did not take the "
                             f"{', '.join(differs)} (its copy differs)",
                             code="ha_replication_failed")
    files.update_state(last_sent=time.time(), peer_registry_sha=message.registry_sha)
    return {"replicated": True, "peer": settings.ha_peer, "warning": None}




# --------------------------------------------------------------------------- the daemon's part


@dataclass
class HaNode:
    """The daemon's HA role keeper (one per daemon)."""

    settings: ServerSettings
    wg: WireGuard
    link: PeerLink | None = None
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    role: Role | None = None
    role_since: float | None = None
    last_sync_ok: float | None = None  # active: last copy the standby took
    last_sync_error: str | None = None
    sent_registry_sha: str | None = None
    sent_files_sha: str | None = None
    caught_up: str = "pending"  # pending | done | peer_unreachable | peer_not_active | off
    keepalive_off_at: float | None = None
    transitions: list[dict[str, Any]] = field(default_factory=list)
    # this server's authorized_keys as `server admins` writes it (forced command)
    admin_keys: AdminKeys | None = None
    _next_sync: float = 0.0
    _sync: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # the daemon's: a role step and a reconcile never write the interface at once
    apply_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def files(self) -> HaFiles:
        return HaFiles(self.settings.state_dir)

    @property
    def enabled(self) -> bool:
        return self.settings.vip is not None

    # --- start: catch up before this server may become active -----------------------

    def catch_up(self) -> str:
        """Pull the registry (and endpoints) from the peer when it is the active one.
        Runs before the daemon's first reconcile; health stays failing until done."""
        if not self.enabled:
            self.caught_up = "off"
            return self.caught_up
        if self.link is None:
            self.caught_up = "done"  # no peer to learn from: this one is the truth
            self._save()
            return self.caught_up
        try:
            snap = self.link.snapshot()
        except FiovpnError as exc:
            log.warning("HA peer %s unreachable at start (%s): serving from local state; "
                        "`fiovpn server status` says degraded until it answers",
                        self.settings.ha_peer, exc)
            self.last_sync_error = str(exc)
            self.caught_up = "peer_unreachable"
            self._save()
            return self.caught_up
        if snap.get("role") == ACTIVE:
            text = snap.get("registry")
            if isinstance(text, str) and write_registry_text(self.settings.clients_file, text):
                log.info("caught up: registry copied from the active server %s",
                         self.settings.ha_peer)
            self._catch_up_state(snap)
            endpoints = snap.get("endpoints") or {}
            if isinstance(endpoints, dict):
                with contextlib.suppress(FiovpnError):
                    msg = SyncMessage.from_json({"sent": snap.get("at", self.clock()),
                                                 "sender_role": ACTIVE,
                                                 "endpoints": endpoints})
                    self.files.save_endpoints(msg, self.clock())
            self.caught_up = "done"
        else:
            # Neither holds the VIP (both starting): keepalived picks one; ours is as
            # good as theirs, and the active pushes its registry from then on.
            self.caught_up = "peer_not_active"
        self.last_sync_ok = self.clock()
        self._save()
        return self.caught_up

    def _catch_up_state(self, snap: dict[str, Any]) -> None:
        """The grants, admins and journal of the active's snapshot, taken as
        ``ha-receive`` takes them."""
        try:
            message = SyncMessage.from_json({
                "sent": snap.get("at", self.clock()), "sender_role": ACTIVE,
                "endpoints": {}, "files": snap.get("files") or {},
                "admins": snap.get("admins"), "journal": snap.get("journal")})
        except FiovpnError as exc:
            log.warning("catching up: the active's snapshot is not usable: %s", exc)
            return
        take_state(self.settings, message, self.admin_keys)  # the journal: all of it

    # --- every poll ---------------------------------------------------------------

    def tick(self, *, starting: bool = False) -> Role:
        role = current_role(self.settings)
        if role != self.role:
            previous = self.role
            self.role = role
            self.role_since = self.clock()
            self._transition(previous, role, starting=starting)
        now = self.monotonic()
        if self.keepalive_off_at is not None and now >= self.keepalive_off_at:
            self.keepalive_off_at = None
            self._keepalive_off()
        if role == ACTIVE and self.link is not None and now >= self._next_sync and (
                self._sync is None or not self._sync.is_alive()):
            self._next_sync = now + self.settings.ha_sync_interval
            self._sync = threading.Thread(target=self.sync_once, name="fiovpn-ha-sync",
                                          daemon=True)
            self._sync.start()
        return role

    def _transition(self, previous: Role | None, role: Role, *, starting: bool) -> None:
        log.info("HA role: %s -> %s (VIP %s)", previous or "start", role, self.settings.ha_vip)
        self.transitions.append({"at": self.clock(), "from": previous, "to": role})
        del self.transitions[:-20]
        if role == ACTIVE:
            with contextlib.suppress(OSError):
                n = StandbyLines(self.settings.state_dir).fold_into(
                    Journal(journal_path(self.settings)))
                if n:
                    log.info("active: %d journal line(s) written as the standby added to "
                             "the journal", n)
        try:
            with self.apply_lock:
                if role == STANDBY:
                    self.forget_sessions()
                elif role == ACTIVE and not (starting and self._has_sessions()):
                    # A daemon restarted on the active leaves live sessions alone; one
                    # that starts on a server that just got the VIP takes over.
                    self.take_over()
        except FiovpnError as exc:
            log.error("HA %s step failed: %s", role, exc)
        self._save()

    def _has_sessions(self) -> bool:
        iface = self.settings.interface
        if not self.wg.interface_exists(iface):
            return False
        now = self.clock()
        return any(p.latest_handshake and now - p.latest_handshake < SESSION_FRESH
                   for p in self.wg.show_dump(iface).peers)

    def forget_sessions(self) -> int:
        """Drop every session and endpoint: remove each peer and add it back with
        the same allowed-ips in one ``wg set`` (the peers stay, their state goes)."""
        iface = self.settings.interface
        if not self.wg.interface_exists(iface):
            return 0
        dump = self.wg.show_dump(iface)
        own = live_endpoints(dump)
        if own:
            # keep what we knew: should the VIP come back here before the new active
            # copies its own, these are the freshest endpoints there are
            copied = self.files.endpoints().get("endpoints") or {}
            merged = {**(copied if isinstance(copied, dict) else {}), **own}
            with contextlib.suppress(OSError, FiovpnError):
                self.files.save_endpoints(SyncMessage(self.clock(), STANDBY, merged),
                                          self.clock())
        argv = ["wg", "set", iface]
        n = 0
        for p in dump.peers:
            if p.endpoint is None and not p.latest_handshake:
                continue
            argv += ["peer", str(p.public_key), "remove", "peer", str(p.public_key),
                     "allowed-ips", ",".join(p.allowed_ips)]
            n += 1
        if n:
            self.wg.runner.run(argv, timeout=60.0)
            log.info("standby: forgot the sessions and endpoints of %d peer(s)", n)
        self.keepalive_off_at = None
        return n

    def take_over(self) -> int:
        """Restore the endpoints the old active copied here and start a handshake to
        each of those peers now (from the VIP: the firewall source-NATs our port)."""
        iface = self.settings.interface
        if not self.wg.interface_exists(iface):
            return 0
        copied = self.files.endpoints().get("endpoints") or {}
        dump = self.wg.show_dump(iface)
        argv = ["wg", "set", iface]
        n = 0
        for p in dump.peers:
            endpoint = copied.get(str(p.public_key)) or p.endpoint
            if not endpoint:
                continue
            # 0 first: wireguard-go sends at once only when keepalive goes 0 -> on
            argv += ["peer", str(p.public_key), "endpoint", str(endpoint),
                     "persistent-keepalive", "0", "peer", str(p.public_key),
                     "persistent-keepalive", str(TAKEOVER_KEEPALIVE)]
            n += 1
        if n:
            self.wg.runner.run(argv, timeout=60.0)
            self.keepalive_off_at = self.monotonic() + KEEPALIVE_OFF_AFTER
        log.info("active: restored %d endpoint(s) and started their handshakes from the VIP",
                 n)
        return n

    def _keepalive_off(self) -> None:
        iface = self.settings.interface
        with contextlib.suppress(FiovpnError):
            dump = self.wg.show_dump(iface)
            argv = ["wg", "set", iface]
            for p in dump.peers:
                if p.persistent_keepalive:
                    argv += ["peer", str(p.public_key), "persistent-keepalive", "off"]
            if len(argv) > 3:
                self.wg.runner.run(argv, timeout=60.0)

    def sync_once(self) -> bool:
        """One copy to the standby: endpoints always, the registry when it changed."""
        if self.link is None:
            return False
        iface = self.settings.interface
        try:
            endpoints = live_endpoints(self.wg.show_dump(iface))
            with _send_lock:
                sha = registry_sha(self.settings.clients_file)
                files_sha = files_digest(state_files(self.settings))
                message = state_message(
                    self.settings, endpoints=endpoints,
                    peer_journal=_mark(self.files.state().get("peer_journal")),
                    registry=sha != self.sent_registry_sha,
                    files=files_sha != self.sent_files_sha)
                message = dataclasses.replace(message, sent=self.clock(), sender_role=ACTIVE)
                reply = send_state(self.link, self.settings, message)
                take_standby_lines(self.settings, reply)
        except FiovpnError as exc:
            with self._lock:
                if self.last_sync_error != str(exc):
                    log.warning("HA copy to %s failed: %s", self.settings.ha_peer, exc)
                self.last_sync_error = str(exc)
            self._save()
            return False
        with self._lock:
            self.sent_registry_sha = str(reply.get("registry_sha") or "") or None
            self.sent_files_sha = files_sha
            self.last_sync_ok = self.clock()
            if self.last_sync_error:
                log.info("HA copy to %s works again", self.settings.ha_peer)
            self.last_sync_error = None
        self._save()
        return True

    # --- what status and health read ----------------------------------------------

    def peer_sync_age(self) -> float | None:
        """Seconds since the last copy between the two servers (sent when active,
        received when standby)."""
        if self.role == STANDBY:
            received = self.files.state().get("last_received")
            last = float(received) if isinstance(received, int | float) else None
        else:
            last = self.last_sync_ok
        return None if last is None else max(0.0, self.clock() - last)

    def _save(self) -> None:
        with contextlib.suppress(OSError):
            self.files.update_state(role=self.role, role_since=self.role_since,
                                    caught_up=self.caught_up,
                                    last_sync_ok=self.last_sync_ok,
                                    last_sync_error=self.last_sync_error,
                                    transitions=self.transitions)

    def status_fields(self) -> dict[str, Any]:
        age = self.peer_sync_age()
        role = self.role or current_role(self.settings)
        return {"role": role,
                "vip": self.settings.ha_vip, "ha_peer": self.settings.ha_peer,
                "peer_sync_age_s": None if age is None else round(age, 1),
                "ha_caught_up": self.caught_up, "ha_sync_error": self.last_sync_error,
                # a standby has no sessions by design: "no handshake" is no alarm there
                "expect_handshakes": role != STANDBY}


def status_fields(settings: ServerSettings, doc: dict[str, Any]) -> dict[str, Any]:
    """The HA keys of ``server status --json`` for a reader outside the daemon."""
    role = current_role(settings)
    state = HaFiles(settings.state_dir).state() if settings.vip is not None else {}
    last: Any = state.get("last_received") if role == STANDBY else state.get("last_sync_ok")
    age = round(max(0.0, time.time() - float(last)), 1) if isinstance(last, int | float) \
        else None
    return {"role": role, "vip": settings.ha_vip, "ha_peer": settings.ha_peer,
            "peer_sync_age_s": age, "ha_caught_up": state.get("caught_up"),
            "ha_sync_error": state.get("last_sync_error") if role == ACTIVE else None,
            # a standby has no sessions by design: "no handshake" is no alarm there
            "expect_handshakes": role != STANDBY}


def vip_address(settings: ServerSettings) -> IPv4Address | None:
    return settings.vip


def peer_key(text: str) -> Key:
    return Key.parse(text, what="peer public key")
