"""The WireGuard server: ``enable``/``disable`` in the factory, ``reconcile_once``,
the daemon loop around it, and ``status``.

A reconcile reads the factory's ``wireguard-ips`` (or, when the API fails, the
last good list from the state cache), the client registry, and the interface
(``wg show dump``); plans the minimal delta and applies it with ``wg set``.
Peers that did not change keep their sessions. Only a successful API answer
may remove a device peer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path
from types import FrameType
from typing import Any

from fiovpn.adapters.factory_api import ConfigFile, FactoryApi, WireguardIp, current_file
from fiovpn.adapters.fs import atomic_write
from fiovpn.adapters.nft import Nft
from fiovpn.adapters.runner import Runner, SubprocessRunner
from fiovpn.adapters.wireguard import WireGuard
from fiovpn.core.addresses import VpnNetwork
from fiovpn.core.factory_files import (
    VPN_HANDLER,
    WIREGUARD_SERVER_FILE,
    ServerConfigFile,
    parse_endpoint,
)
from fiovpn.core.firewall import FirewallPolicy, render_ruleset
from fiovpn.core.hosts import update_hosts
from fiovpn.core.keys import Key, public_key
from fiovpn.core.names import validate_name
from fiovpn.core.peers import DISABLED, DesiredPeers, Peer, desired_peers
from fiovpn.core.plan import PeerChange, plan
from fiovpn.core.registry import ClientEntry, RegistryProblem
from fiovpn.core.wgdump import PeerDump, WgDump
from fiovpn.errors import BadInput, FiovpnError, NotFound, PermanentError, TemporaryError
from fiovpn.services.keys import ensure_key_file, read_private_key
from fiovpn.services.registry import ClientRegistry, LiveInterface, read_registry
from fiovpn.services.state import StateCache
from fiovpn.settings import SERVER_CONFIG_ENV, ServerSettings, load, render_toml

log = logging.getLogger("fiovpn.server")

TOKEN_ENV = "FIOVPN_API_TOKEN"  # noqa: S105 - the name of a variable, not a secret
BACKOFF_START = 5.0
FILE_POLL = 0.5  # seconds between clients-file checks: edits apply within ~1 s


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- context


@dataclass
class ServerContext:
    """Everything a reconcile needs; built once by the daemon or the CLI."""

    settings: ServerSettings
    network: VpnNetwork
    wg: WireGuard
    nft: Nft
    state: StateCache
    api: FactoryApi | None = None
    server_key: Key | None = None  # public key, to keep peers from claiming it
    clock: Callable[[], float] = time.time
    last_notes: frozenset[str] = frozenset()
    last_api_success: str | None = None
    # Memos so an idle poll at 5,000 peers stays cheap: what was last saved,
    # applied or written, compared before doing it again.
    last_rows: list[WireguardIp] | None = None
    last_firewall: tuple[object, ...] | None = None
    last_hosts: tuple[object, ...] | None = None
    known: dict[Key, Peer] | None = None
    daemon: bool = False  # True in the daemon process (its pid goes into status.json)
    forwarding_on: bool = False  # switched on (or found on) after the firewall applied
    apply_lock: threading.Lock = field(default_factory=threading.Lock, repr=False,
                                       compare=False)

    @classmethod
    def from_settings(cls, settings: ServerSettings, *, runner: Runner | None = None,
                      api: FactoryApi | None = None) -> ServerContext:
        runner = runner or SubprocessRunner()
        server_key = None
        with contextlib.suppress(FiovpnError):
            server_key = public_key(read_private_key(settings.private_key))
        return cls(
            settings=settings,
            network=settings.network(),
            wg=WireGuard(runner, wireguard_go=settings.wireguard_go),
            nft=Nft(runner, ip_forward_file=settings.ip_forward_file),
            state=StateCache(settings.state_dir),
            api=api,
            server_key=server_key,
        )

    def registry(self, *, apply_now: bool = False) -> ClientRegistry:
        """The client registry, checked against cached devices; with ``apply_now``
        every change reaches the live interface at once (when it exists)."""
        live = LiveInterface(self.wg, self.settings.interface)
        on_change = (lambda: apply_local(self)) if apply_now else None
        return ClientRegistry(self.settings.clients_file, self.network, state=self.state,
                              server_key=self.server_key, live=live, on_change=on_change)


def build_api(settings: ServerSettings) -> FactoryApi:
    """The FoundriesFactory client for ``settings`` (imported late: only server
    commands that talk to the factory need it)."""
    from fiovpn.adapters.factory import build_factory_client

    return build_factory_client(settings)


# --------------------------------------------------------------------------- reconcile


@dataclass
class ReconcileReport:
    """What one reconcile saw and did."""

    at: str
    changes: list[PeerChange] = field(default_factory=list)
    peers: list[Peer] = field(default_factory=list)
    desired: DesiredPeers | None = None
    registry_problems: list[RegistryProblem] = field(default_factory=list)
    api_ok: bool = False
    api_error: str | None = None
    retry_after: float | None = None
    errors: list[str] = field(default_factory=list)
    devices_source: str = "api"  # api | cache | interface
    used_api: bool = True
    firewall_applied: bool = False
    hosts_changed: bool = False
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.api_error is None and not self.errors

    @property
    def error(self) -> str | None:
        parts = ([self.api_error] if self.api_error else []) + self.errors
        return "; ".join(parts) if parts else None


def _fetch_devices(ctx: ServerContext, report: ReconcileReport) -> list[WireguardIp] | None:
    if ctx.api is None:
        report.devices_source = "cache"
        return ctx.state.load_devices()
    try:
        rows = ctx.api.wireguard_ips()
    except FiovpnError as exc:
        report.api_error = f"factory API failed: {exc}"
        if isinstance(exc, TemporaryError):
            report.retry_after = exc.delay
        cached = ctx.state.load_devices()
        report.devices_source = "cache" if cached is not None else "interface"
        return cached
    report.api_ok = True
    ctx.last_api_success = report.at
    if rows != ctx.last_rows:
        try:
            ctx.state.save_devices(rows, report.at)
            ctx.last_rows = rows
        except OSError as exc:
            report.errors.append(f"cannot write the state cache in {ctx.state.directory}: "
                                 f"{exc}")
    return rows


def _protected(dump: WgDump, desired: DesiredPeers, known: dict[Key, Peer],
               network: VpnNetwork) -> list[Peer]:
    """Peers on the interface that must stay because the device list is not
    authoritative (API failed): everything not known to be a removed client."""
    want = {p.public_key for p in desired.peers}
    kept: list[Peer] = []
    for cur in dump.peers:
        if cur.public_key in want:
            continue
        prev = known.get(cur.public_key)
        if prev is not None and prev.kind == "client":
            continue  # a client removed from the registry: the registry is authoritative
        ip = _single_ip(cur)
        if prev is not None and prev.kind == "device":
            kept.append(prev)
        elif ip is not None and network.is_host(ip):
            kept.append(Peer("device", None, cur.public_key, ip))
    return kept


def _single_ip(cur: PeerDump) -> IPv4Address | None:
    if len(cur.allowed_ips) == 1 and cur.allowed_ips[0].endswith("/32"):
        with contextlib.suppress(ValueError):
            return IPv4Address(cur.allowed_ips[0][:-3])
    return None


def reconcile_once(ctx: ServerContext, *, use_api: bool = True) -> ReconcileReport:
    """One pass: read factory + registry + interface, apply the delta, write status.

    Never raises for API or apply failures: they land in the report (and in
    ``status.json``) so the daemon can carry on. ``use_api=False`` reconciles
    from the state cache only (used to apply a registry edit at once).
    """
    report = ReconcileReport(at=_iso(ctx.clock()))
    if use_api:
        rows = _fetch_devices(ctx, report)
    else:
        report.used_api = False
        rows = ctx.state.load_devices()
        report.devices_source = "cache" if rows is not None else "interface"
    # The factory read above may take a minute when the API hangs; what follows is
    # local and quick, and one pass at a time may do it (the daemon applies a
    # registry edit from another thread while a factory read is in flight).
    with ctx.apply_lock:
        return _reconcile_local(ctx, report, rows)


def _reconcile_local(ctx: ServerContext, report: ReconcileReport,
                     rows: list[WireguardIp] | None) -> ReconcileReport:
    s = ctx.settings
    authoritative = report.api_ok

    try:
        registry = read_registry(s.clients_file)
    except FiovpnError as exc:
        # Without the registry every client would look removed: change nothing.
        report.errors.append(f"{exc}: no peer changed")
        known = ctx.known if ctx.known is not None else ctx.state.known_peers()
        dump_now = None
        with contextlib.suppress(FiovpnError):
            dump_now = ctx.wg.show_dump(s.interface)
        _finish(ctx, report, dump_now, list(known.values()))
        return report
    report.registry_problems = registry.problems
    desired = desired_peers(rows or [], registry.entries, ctx.network,
                            server_key=ctx.server_key)
    report.desired = desired

    known = ctx.known if ctx.known is not None else ctx.state.known_peers()
    try:
        dump = ctx.wg.show_dump(s.interface)
    except FiovpnError as exc:
        report.errors.append(f"cannot read interface {s.interface}: {exc}")
        _finish(ctx, report, None, list(desired.peers))
        return report

    peers = list(desired.peers)
    if not authoritative:
        peers += _protected(dump, desired, known, ctx.network)
    changes = plan(peers, dump.peers, known)
    try:
        ctx.wg.apply(s.interface, changes)
        report.changes = changes
        for change in changes:
            log.info("%s", change.describe())
    except FiovpnError as exc:
        report.errors.append(f"applying {len(changes)} peer change(s) failed: {exc}")
        with contextlib.suppress(FiovpnError):
            dump = ctx.wg.show_dump(s.interface)
    report.peers = peers
    ctx.known = {**known, **{p.public_key: p for p in peers}}

    policy = FirewallPolicy(s.nft_table, s.interface, ctx.network.server,
                            s.allow_device_to_device)
    fw_key = (policy, frozenset((p.kind, p.ip) for p in peers))
    if fw_key != ctx.last_firewall:
        try:
            ctx.nft.apply(render_ruleset(policy, peers))
            ctx.last_firewall = fw_key
            report.firewall_applied = True
            log.info("firewall table %s applied (%d clients, %d devices%s)", s.nft_table,
                     sum(p.kind == "client" for p in peers),
                     sum(p.kind == "device" for p in peers),
                     ", device-to-device allowed" if s.allow_device_to_device else "")
        except FiovpnError as exc:
            report.errors.append(f"applying the firewall failed: {exc}")
    if ctx.last_firewall is not None and not ctx.forwarding_on:
        # Only with the policy table in place: forwarding without it would pass
        # device->client and client<->client traffic unfiltered (fail closed).
        try:
            if ctx.nft.enable_forwarding():
                log.info("IPv4 forwarding switched on in this network namespace")
            ctx.forwarding_on = True
        except FiovpnError as exc:
            report.errors.append(str(exc))

    if s.factory and (authoritative or rows is not None):
        try:
            report.hosts_changed = _update_hosts(ctx, s.hosts_file, s.factory, peers)
        except OSError as exc:
            report.errors.append(f"cannot update {s.hosts_file}: {exc}")

    _finish(ctx, report, dump, peers)
    return report


def _file_id(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _update_hosts(ctx: ServerContext, path: Path, factory: str, peers: Iterable[Peer]
                  ) -> bool:
    entries = []
    for p in peers:
        if p.kind == "device" and p.name:
            with contextlib.suppress(BadInput):
                entries.append((p.ip, validate_name(p.name)))
    memo = (factory, frozenset(entries), _file_id(path))
    if memo == ctx.last_hosts:
        return False  # same devices, file untouched since we last looked
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raw = b""
    # The rest of the file is not ours: bytes that are not UTF-8 (a latin-1
    # comment) pass through unchanged instead of stopping the daemon.
    new = update_hosts(raw.decode("utf-8", "surrogateescape"), factory, entries)
    if new is None:
        ctx.last_hosts = memo
        return False
    mode = 0o644
    with contextlib.suppress(FileNotFoundError):
        mode = path.stat().st_mode & 0o777
    atomic_write(path, new.encode("utf-8", "surrogateescape"), mode=mode)
    ctx.last_hosts = (factory, frozenset(entries), _file_id(path))
    log.info("hosts block for factory %s updated in %s (%d devices)", factory, path,
             len(entries))
    return True


def _finish(ctx: ServerContext, report: ReconcileReport, dump: WgDump | None,
            peers: list[Peer]) -> None:
    desired = report.desired
    notes = {f"conflict: {c.message}" for c in (desired.conflicts if desired else ())}
    notes |= {f"skipped {p.kind} {p.name or ''}: {p.reason}"
              for p in (desired.skipped if desired else ()) if p.reason != DISABLED}
    notes |= {f"{ctx.settings.clients_file} {p}" for p in report.registry_problems}
    if report.error:
        notes.add(f"error: {report.error}")
    for note in sorted(notes - ctx.last_notes):
        log.warning("%s", note)
    ctx.last_notes = frozenset(notes)
    report.status = status_document(ctx, report, dump, peers)
    try:
        ctx.state.save_status(report.status)
    except OSError as exc:
        log.error("cannot write %s: %s", ctx.state.status_path, exc)


def _peer_json(p: Peer, live: PeerDump | None) -> dict[str, Any]:
    data = p.to_json()
    data.update(latest_handshake=live.latest_handshake if live and live.latest_handshake
                else None,
                rx=live.rx if live else 0, tx=live.tx if live else 0,
                endpoint=live.endpoint if live else None)
    return data


def status_document(ctx: ServerContext, report: ReconcileReport, dump: WgDump | None,
                    peers: list[Peer]) -> dict[str, Any]:
    s = ctx.settings
    previous: dict[str, Any] = {}
    if not report.used_api or ctx.last_api_success is None:
        previous = ctx.state.load_status() or {}
    api_ok, error = report.api_ok, report.error
    if not report.used_api:
        # A local apply (registry edit) says nothing about the API: keep the
        # daemon's view of it.
        api_ok = bool(previous.get("api_ok"))
        parts = [e for e in (previous.get("last_error"), report.error) if e]
        error = "; ".join(parts) if parts else None
    live = dump.by_key() if dump else {}
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
        "last_success": ctx.last_api_success or previous.get("last_success"),
        "last_error": error,
        "api_ok": api_ok,
        "devices_source": report.devices_source,
        "peers": [_peer_json(p, live.get(p.public_key))
                  for p in sorted(peers, key=lambda p: (p.kind, int(p.ip)))],
        "conflicts": [c.to_json() for c in (desired.conflicts if desired else ())],
        "skipped": [p.to_json() for p in (desired.skipped if desired else ())],
        "registry_problems": [p.to_json() for p in report.registry_problems],
        "last_changes": [c.to_json() for c in report.changes],
    }


def apply_local(ctx: ServerContext) -> ReconcileReport | None:
    """Apply the registry to the live interface now, devices from the state cache
    (no API call). Does nothing when the interface does not exist."""
    if not ctx.wg.interface_exists(ctx.settings.interface):
        return None
    # Keep the firewall in sync too: this process has not applied it yet.
    return reconcile_once(ctx, use_api=False)


# --------------------------------------------------------------------------- interface


def ensure_interface(ctx: ServerContext, private_key: Key) -> str:
    """Create the interface if missing and (re)apply key, port and address.
    Existing peers are untouched. Returns how: existing | kernel | wireguard-go."""
    s = ctx.settings
    how = "existing"
    if not ctx.wg.interface_exists(s.interface):
        how = ctx.wg.create_interface(s.interface)
        log.info("created WireGuard interface %s (%s)", s.interface, how)
    ctx.wg.configure(s.interface, private_key=private_key, port=s.port,
                     address=ctx.network.server, prefix=ctx.network.subnet.prefixlen)
    # Forwarding is switched on by the reconcile, once the policy table is in place.
    return how


def check_server_file(ctx: ServerContext, private_key: Key) -> ServerConfigFile | None:
    """The factory's ``wireguard-server`` file, its pubkey checked against our key.

    Raises ``PermanentError`` on a mismatch (devices would never handshake);
    returns None (with a warning) when the API cannot be read right now.
    """
    if ctx.api is None:
        return None
    try:
        entries = ctx.api.factory_config()
    except FiovpnError as exc:
        log.warning("cannot read the factory's %s file now (%s): continuing with the "
                    "last good state", WIREGUARD_SERVER_FILE, exc)
        return None
    cfile = current_file(entries, WIREGUARD_SERVER_FILE)
    if cfile is None:
        log.warning("the factory has no %s file: devices will not find this server; run "
                    "`fiovpn server enable --endpoint HOST`", WIREGUARD_SERVER_FILE)
        return None
    try:
        server = ServerConfigFile.parse(cfile.value)
    except BadInput as exc:
        raise PermanentError(
            f"the factory's {WIREGUARD_SERVER_FILE} file is malformed ({exc.message}): "
            "devices cannot use it", code="server_file_malformed",
            hint="rewrite it with `fiovpn server enable --endpoint HOST`") from None
    mine = public_key(private_key)
    if server.pubkey != mine:
        raise PermanentError(
            f"the factory's {WIREGUARD_SERVER_FILE} file announces public key "
            f"{server.pubkey}, but {ctx.settings.private_key} belongs to {mine}: devices "
            "would never connect", code="server_key_mismatch",
            hint="run `fiovpn server enable --endpoint HOST` to publish this key, or point "
                 "--private-key at the key the factory knows")
    if server.server_address != ctx.network.server:
        raise PermanentError(
            f"the factory's {WIREGUARD_SERVER_FILE} file announces server address "
            f"{server.server_address}, but this daemon uses {ctx.network.server}: devices "
            "would route to an address nobody answers", code="server_address_mismatch",
            hint="run `fiovpn server enable --endpoint HOST` to publish this address, or "
                 f"set address = \"{server.server_address}\" in the settings file")
    if not server.enabled:
        log.warning("the factory's %s file says enabled=0: devices keep their VPN off "
                    "until `fiovpn server enable`", WIREGUARD_SERVER_FILE)
    return server


# --------------------------------------------------------------------------- daemon


class _Stopped(BaseException):
    """Raised by the SIGTERM/SIGINT handler to unwind the daemon at once."""


@dataclass
class Daemon:
    """The loop around ``reconcile_once``: every ``interval``, sooner after an
    API failure (backoff), and within ~1 s of a clients-file edit. SIGTERM and
    SIGINT end it cleanly, leaving the interface and every tunnel up."""

    ctx: ServerContext
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    poll: float = FILE_POLL
    stopping: bool = False
    passes: int = 0

    def start(self) -> None:
        s = self.ctx.settings
        private, created = ensure_key_file(s.private_key)
        if created:
            log.info("generated server private key %s (0600)", s.private_key)
        self.ctx.server_key = public_key(private)
        self.ctx.daemon = True
        check_server_file(self.ctx, private)
        ensure_interface(self.ctx, private)

    def stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        first = not self.stopping
        self.stopping = True
        if signum is not None and first:
            log.info("received %s: stopping (interface and tunnels stay up)",
                     signal.Signals(signum).name)
            # Stop now, not after the API call in flight gives up (a minute of
            # timeouts and retries when the factory is unreachable): every write
            # is atomic and a restart converges, as after kill -9.
            raise _Stopped

    def _signature(self) -> tuple[int, int, int, int] | None:
        try:
            st = self.ctx.settings.clients_file.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def run(self, *, once: bool = False) -> int:
        """Run until stopped (exit code 0), or one pass with ``once`` (0 ok, 1 failed)."""
        installed = False
        if not once:
            with contextlib.suppress(ValueError):  # only possible in the main thread
                signal.signal(signal.SIGTERM, self.stop)
                signal.signal(signal.SIGINT, self.stop)
                installed = True
        try:
            with self.ctx.state.daemon_lock():
                self.start()
                return self._loop(once)
        except _Stopped:
            log.info("daemon stopped; interface %s and its peers stay up",
                     self.ctx.settings.interface)
            return 0
        finally:
            if installed:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)

    def _loop(self, once: bool) -> int:
        if once:
            report = reconcile_once(self.ctx)
            self.passes += 1
            return 0 if report.ok else 1
        interval = self.ctx.settings.interval
        failures = 0
        next_at = 0.0
        seen = self._signature()
        running: _Pass | None = None
        while not self.stopping:
            if running is not None and running.done:
                done, started = running.report, running.started
                running = None
                self.passes += 1
                if done is not None and done.api_error is not None:
                    failures += 1
                    delay = done.retry_after or min(
                        interval, min(BACKOFF_START, interval) * 2 ** (failures - 1))
                    log.info("factory API unavailable (%d in a row): peers kept, retrying "
                             "in %.0f s", failures, delay)
                else:
                    failures = 0
                    delay = interval
                next_at = started + delay
            now = self.monotonic()
            sig = self._signature()
            if sig != seen:
                seen = sig
                if running is None:
                    log.info("%s changed: reconciling now", self.ctx.settings.clients_file)
                    running = _Pass.start(self.ctx, now)
                else:
                    # The factory read in flight may hang for a minute: the registry
                    # edit is applied now, devices from the last good list.
                    log.info("%s changed: applying it now (factory read in progress)",
                             self.ctx.settings.clients_file)
                    apply_local(self.ctx)
            elif running is None and now >= next_at:
                running = _Pass.start(self.ctx, now)
            if running is not None:
                running.wait(self.poll)
            else:
                self.sleep(max(0.0, min(self.poll, next_at - self.monotonic())))
        log.info("daemon stopped; interface %s and its peers stay up",
                 self.ctx.settings.interface)
        return 0


class _Pass:
    """One ``reconcile_once`` in a worker thread, so a hanging factory read never
    keeps the daemon from noticing a registry edit or a SIGTERM."""

    def __init__(self, ctx: ServerContext, started: float) -> None:
        self.started = started
        self.report: ReconcileReport | None = None
        self.thread = threading.Thread(target=self._run, args=(ctx,),
                                       name="fiovpn-reconcile", daemon=True)

    def _run(self, ctx: ServerContext) -> None:
        self.report = reconcile_once(ctx)

    @classmethod
    def start(cls, ctx: ServerContext, now: float) -> _Pass:
        run = cls(ctx, now)
        run.thread.start()
        return run

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def wait(self, seconds: float) -> None:
        self.thread.join(timeout=seconds)


# --------------------------------------------------------------------------- enable


TOML_KEYS = ("factory", "api_url", "api_token_file", "interface", "private_key", "subnet",
             "address", "port", "endpoint", "client_pool", "interval", "clients_file",
             "hosts_file", "state_dir", "allow_device_to_device")


def render_server_toml(settings: ServerSettings) -> str:
    return render_toml({name.replace("_", "-"): getattr(settings, name) for name in TOML_KEYS},
                       header="fiovpn server settings (keys are the long flag names of "
                              "`fiovpn server`)")


def fiovpn_command() -> list[str]:
    found = shutil.which("fiovpn")
    return [found] if found else [sys.executable, "-m", "fiovpn"]


def _systemd_arg(arg: str) -> str:
    """One ExecStart word: quoted when it holds whitespace or quotes; ``%`` and
    ``$`` escaped so systemd neither expands specifiers nor variables in it."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and not any(c.isspace() or c in "\"'\\;" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(settings: ServerSettings, config_path: Path) -> str:
    """A systemd unit for the daemon. No secret: the token stays in its 0600 file."""
    exec_start = " ".join(_systemd_arg(a) for a in [*fiovpn_command(), "server", "daemon",
                                                     "--config", str(config_path)])
    return (
        "[Unit]\n"
        f"Description=fiovpn WireGuard server for factory {settings.factory}\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={exec_start}\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "# Stopping or restarting the daemon leaves wireguard-go and every tunnel up.\n"
        "KillMode=process\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def unit_path(settings: ServerSettings) -> Path:
    return settings.unit_dir / f"fiovpn-{settings.factory}.service"


def config_path_for(config: Path | None, env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    if config is not None:
        return config
    if env.get(SERVER_CONFIG_ENV):
        return Path(env[SERVER_CONFIG_ENV])
    return Path("/etc/fiovpn/server.toml")


def _server_file(settings: ServerSettings, endpoint: str, key: Key, *, enabled: bool
                 ) -> ConfigFile:
    server = ServerConfigFile(endpoint, settings.network().server, key, enabled=enabled)
    return ConfigFile(WIREGUARD_SERVER_FILE, server.render(), True, (VPN_HANDLER,))


def enable(settings: ServerSettings, api: FactoryApi, *, endpoint: str,
           config_path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Publish this server in the factory and install its daemon.

    - server private key: generated if missing (0600);
    - the factory's ``wireguard-server`` file (exactly fioctl's keys);
    - ``config_path`` (the TOML the daemon reads) when it does not exist yet;
    - the systemd unit ``fiovpn-<factory>.service`` (no secret in it).
    """
    env = dict(os.environ) if env is None else env
    if not settings.factory:
        raise BadInput("no factory given: use --factory F (or env FIOVPN_FACTORY)",
                       code="usage")
    ep = parse_endpoint(endpoint, default_port=settings.port)
    if config_path.exists():
        _check_daemon_agrees(settings, config_path)
    private, created = ensure_key_file(settings.private_key)
    pub = public_key(private)
    cfile = _server_file(settings, ep, pub, enabled=True)
    api.patch_factory_config(f"fiovpn: enable WireGuard server {ep}", [cfile])

    wrote_config = False
    warnings: list[str] = []
    if config_path.exists() and env.get(TOKEN_ENV):
        daemon = load(ServerSettings, toml_path=config_path, toml_required=True, flags={},
                      env={})
        if daemon.api_token_file is None:
            warnings.append(
                f"the token came from ${TOKEN_ENV}, which the systemd daemon does not see, "
                f"and {config_path} sets no api-token-file: put the token in a 0600 file "
                f"and add `api-token-file = \"/etc/fiovpn/api-token\"` to {config_path}")
    unit = unit_path(settings)
    target = config_path
    try:
        if not config_path.exists():
            to_write = settings
            token = env.get(TOKEN_ENV)
            if settings.api_token_file is None and token:
                target = config_path.parent / "api-token"
                atomic_write(target, token.strip() + "\n", mode=0o600)
                to_write = _replace(settings, api_token_file=target)
            target = config_path
            atomic_write(config_path, render_server_toml(_replace(to_write, endpoint=ep)),
                         mode=0o600)
            wrote_config = True
        target = unit
        atomic_write(unit, render_unit(settings, config_path), mode=0o644)
    except OSError as exc:
        raise PermanentError(
            f"the factory now announces this server, but {target} cannot be written: "
            f"{exc.strerror or exc}", code="write_failed",
            hint="fix that, then run `fiovpn server enable` again") from None
    return {"factory": settings.factory, "endpoint": ep,
            "server_address": str(settings.network().server), "public_key": str(pub),
            "private_key_path": str(settings.private_key), "key_created": created,
            "config": str(config_path), "config_written": wrote_config, "unit": str(unit),
            "enabled": True, "warnings": warnings}


def _check_daemon_agrees(settings: ServerSettings, config_path: Path) -> None:
    """Refuse to publish a server address, port or key that the daemon (which
    reads only ``config_path``) would not use: devices could never connect."""
    daemon = load(ServerSettings, toml_path=config_path, toml_required=True, flags={},
                  env={})
    given: list[tuple[str, object, object]] = [
        ("address", settings.network().server, daemon.network().server),
        ("port", settings.port, daemon.port),
        ("private-key", settings.private_key.absolute(), daemon.private_key.absolute()),
    ]
    for flag, want, has in given:
        if want != has:
            value = str(want) if flag == "port" else json.dumps(str(want))
            raise BadInput(
                f"--{flag} {want} differs from what the daemon uses ({has}, from "
                f"{config_path}): the factory would announce a server the daemon does not "
                "run", code="config_mismatch",
                hint=f"set {flag} = {value} in {config_path} first, or drop "
                     f"--{flag}")


def disable(settings: ServerSettings, api: FactoryApi) -> dict[str, Any]:
    """Mark the factory's ``wireguard-server`` file ``enabled=0`` (devices turn
    their VPN off); the server's own interface is left as it is."""
    cfile = current_file(api.factory_config(), WIREGUARD_SERVER_FILE)
    if cfile is None:
        raise NotFound(f"the factory has no {WIREGUARD_SERVER_FILE} file: nothing to disable")
    server = ServerConfigFile.parse(cfile.value)
    new = ConfigFile(WIREGUARD_SERVER_FILE,
                     ServerConfigFile(server.endpoint, server.server_address, server.pubkey,
                                      enabled=False).render(),
                     True, (VPN_HANDLER,))
    api.patch_factory_config("fiovpn: disable WireGuard server", [new])
    return {"factory": settings.factory, "endpoint": server.endpoint,
            "server_address": str(server.server_address), "public_key": str(server.pubkey),
            "enabled": False}


def _replace(settings: ServerSettings, **changes: Any) -> ServerSettings:
    import dataclasses

    return dataclasses.replace(settings, **changes)


# --------------------------------------------------------------------------- status


def status(settings: ServerSettings, *, runner: Runner | None = None) -> dict[str, Any]:
    """The daemon's last status with live handshake and traffic figures.

    Shape: ``{"factory", "interface", "server_address", "public_key", "port",
    "daemon_running", "interface_up", "last_sync", "last_success", "last_error",
    "api_ok", "peers": [{"kind", "name", "ip", "public_key", "latest_handshake",
    "rx", "tx", "endpoint"}], "conflicts", "skipped", "registry_problems"}``.
    """
    state = StateCache(settings.state_dir)
    doc = state.load_status() or {}
    wg = WireGuard(runner or SubprocessRunner(), wireguard_go=settings.wireguard_go)
    dump: WgDump | None = None
    up = wg.interface_exists(settings.interface)
    error = None
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
        ip = _single_ip(cur)
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
        "daemon_running": isinstance(pid, int) and _alive(pid),
        "last_sync": doc.get("last_sync"),
        "last_success": doc.get("last_success"),
        "last_error": doc.get("last_error") or error,
        "api_ok": doc.get("api_ok"),
        "peers": peers,
        "conflicts": doc.get("conflicts", []),
        "skipped": doc.get("skipped", []),
        "registry_problems": doc.get("registry_problems", []),
    }


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
