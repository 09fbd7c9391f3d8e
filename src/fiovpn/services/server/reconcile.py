"""One reconcile: read the factory's ``wireguard-ips`` (or, when the API fails,
the last good list from the state cache), the client registry, and the
interface (``wg show dump``); plan the minimal delta and apply it with
``wg set``, then the firewall table and the hosts block.

Peers that did not change keep their sessions. Only a successful API answer
may remove a device peer."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar, cast

from fiovpn.adapters.factory_api import WireguardIp
from fiovpn.adapters.fs import file_signature
from fiovpn.core.addresses import VpnNetwork
from fiovpn.core.firewall import (
    GENERATION_SET,
    FirewallPolicy,
    TableModel,
    render_delta,
    render_full,
    table_model,
)
from fiovpn.core.ha import STANDBY
from fiovpn.core.keys import Key
from fiovpn.core.peers import DISABLED, DesiredPeers, Peer, SkippedPeer, desired_peers
from fiovpn.core.plan import PeerChange, plan
from fiovpn.core.registry import ClientEntry
from fiovpn.core.wgdump import WgDump
from fiovpn.errors import FiovpnError, TemporaryError
from fiovpn.services.access import access_rules
from fiovpn.services.ha import current_role
from fiovpn.services.registry import read_registry
from fiovpn.services.server.context import ServerContext
from fiovpn.services.server.hostsfile import update_hosts_file
from fiovpn.services.server.report import ReconcileReport, iso
from fiovpn.services.server.status import status_document

log = logging.getLogger("fiovpn.server")

T = TypeVar("T")
# Above this many peer changes (more than one `wg set` process) the peers are set
# while the firewall and the hosts file are brought up to date.
BACKGROUND_APPLY = 1000


class _Background(Generic[T]):
    """``fn()`` in a worker thread, its result (or exception) taken by ``result()``.

    For the ``wg`` processes of a pass: wireguard-go answers on one core while this
    thread does the Python part of the pass on the other (the waiting thread holds
    no GIL)."""

    def __init__(self, fn: Callable[[], T], name: str) -> None:
        self._fn = fn
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return cast(T, self._value)


def _fetch_devices(ctx: ServerContext, report: ReconcileReport) -> list[WireguardIp] | None:
    if ctx.api is None:
        report.devices_source = "cache"
        return ctx.state.load_devices()
    try:
        rows = ctx.api.wireguard_ips()
    except FiovpnError as exc:
        report.api_error = f"factory API failed: {exc}"
        report.api_exception = exc
        if isinstance(exc, TemporaryError):
            report.retry_after = exc.delay
        cached = ctx.state.load_devices()
        report.devices_source = "cache" if cached is not None else "interface"
        return cached
    report.api_ok = True
    ctx.last_api_success = report.at
    return rows


def _keep_devices(ctx: ServerContext, report: ReconcileReport, rows: list[WireguardIp]
                  ) -> None:
    """A good factory answer becomes the last good device list (the state cache)."""
    if rows != ctx.last_rows:
        try:
            ctx.state.save_devices(rows, report.at)
            ctx.last_rows = rows
        except OSError as exc:
            report.errors.append(f"cannot write the state cache in {ctx.state.directory}: "
                                 f"{exc}")



class _Known(Mapping[Key, Peer]):
    """The peers earlier passes wanted (names for removal logs, devices kept while
    the API fails): this process's memo, else read from the last status file only
    when first asked (a ``--once`` pass without removals never reads it)."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.loaded: dict[Key, Peer] | None = ctx.known

    def _data(self) -> dict[Key, Peer]:
        if self.loaded is None:
            self.loaded = self.ctx.state.known_peers()
        return self.loaded

    def __getitem__(self, key: Key) -> Peer:
        return self._data()[key]

    def __iter__(self) -> Iterator[Key]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())


def _protected(dump: WgDump, desired: DesiredPeers, known: Mapping[Key, Peer],
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
        ip = cur.single_ip
        if prev is not None and prev.kind == "device":
            kept.append(prev)
        elif ip is not None and network.is_host(ip):
            kept.append(Peer("device", None, cur.public_key, ip))
    return kept




def reconcile_once(ctx: ServerContext, *, use_api: bool = True,
                   cause: str | None = None) -> ReconcileReport:
    """One pass: read factory + registry + interface, apply the delta, write status.

    Never raises for API or apply failures: they land in the report (and in
    ``status.json``) so the daemon can carry on. ``use_api=False`` reconciles
    from the state cache only (used to apply a registry edit at once). ``cause``
    (who asked, why) goes into the log line of every change.
    """
    started = time.perf_counter()
    report = ReconcileReport(at=iso(ctx.clock()), cause=cause)
    if use_api:
        rows = _fetch_devices(ctx, report)
        if report.api_ok and ctx.api is not None:
            _learn_groups(ctx, report)
    else:
        report.used_api = False
        rows = ctx.state.load_devices()
        report.devices_source = "cache" if rows is not None else "interface"
    # The factory read above may take a minute when the API hangs; what follows is
    # local and quick, and one pass at a time may do it (the daemon applies a
    # registry edit from another thread while a factory read is in flight).
    with ctx.apply_lock:
        _reconcile_local(ctx, report, rows)
    if ctx.on_pass is not None:
        ctx.on_pass(report, time.perf_counter() - started)
    return report


def _learn_groups(ctx: ServerContext, report: ReconcileReport) -> None:
    """Each device's ``device-group``, read when some client or grant needs it."""
    assert ctx.api is not None
    try:
        entries = read_registry(ctx.settings.clients_file).entries
    except FiovpnError:
        return  # the local pass reports an unreadable registry
    error = ctx.access.refresh_groups(ctx.api, entries, ctx.clock())
    if error is not None:
        report.errors.append(error)


def _apply_firewall(ctx: ServerContext, report: ReconcileReport, model: TableModel) -> None:
    """Bring the nft table to ``model``: by set-element deltas when only elements
    changed since it was last applied (one transaction: all or nothing; the table,
    its chains and conntrack stay), else by replacing the whole table atomically
    (the first time, a changed shape, or a delta the kernel refused).

    What was last applied is this process's memo, else the model an earlier
    process (a ``--once`` pass, a restarted daemon) saved, when the kernel's table
    is still the one it went to (its generation token: not deleted and made again
    since)."""
    s = ctx.settings
    now = ctx.clock()
    if not ctx.saved_model_checked:
        ctx.saved_model_checked = True
        saved = ctx.state.load_firewall()
        if saved is not None and ctx.last_model is None \
                and ctx.nft.table_generation(s.nft_table, GENERATION_SET) == saved[1]:
            ctx.last_model, ctx.last_model_generation = saved
    delta = render_delta(ctx.last_model, model, now) if ctx.last_model is not None else None
    if delta == "":
        ctx.last_model = model
        return
    # gone until the new table is in place: a crash in between leaves no model that
    # may differ from the kernel's table (the next process replaces it whole)
    ctx.state.drop_firewall()
    if delta is not None:
        try:
            ctx.nft.apply(delta)
        except FiovpnError as exc:
            log.warning("firewall delta refused (%s): replacing the whole table", exc)
        else:
            _applied(ctx, report, model, ctx.last_model_generation)
            log.info("firewall table %s: %d element statement(s) applied%s", s.nft_table,
                     delta.count("\n"), f" ({report.cause})" if report.cause else "")
            return
    generation = secrets.token_hex(8)
    ctx.nft.apply(render_full(model, now, generation))
    _applied(ctx, report, model, generation)
    sizes = {name: len(elems) for name, elems in model.sets.items()}
    log.info("firewall table %s applied (%d clients, %d devices%s)%s", s.nft_table,
             sizes.get("client_ips", 0), sizes.get("device_ips", 0),
             ", device-to-device allowed" if s.allow_device_to_device else "",
             f" ({report.cause})" if report.cause else "")


def _applied(ctx: ServerContext, report: ReconcileReport, model: TableModel,
             generation: str | None) -> None:
    """``model`` is in the kernel's table made with ``generation``: remembered, and
    saved for the next process when that token is known."""
    ctx.last_model, ctx.last_model_generation = model, generation
    report.firewall_applied = True
    if generation is not None:
        try:
            ctx.state.save_firewall(model, generation)
        except OSError as exc:  # the next process replaces the table whole
            log.warning("cannot write %s: %s", ctx.state.firewall_path, exc)


def _reconcile_local(ctx: ServerContext, report: ReconcileReport,
                     rows: list[WireguardIp] | None) -> ReconcileReport:
    s = ctx.settings
    authoritative = report.api_ok
    # The interface is read (a `wg show dump` of 50,000 peers: wireguard-go's work
    # on the other core) while the desired peers are worked out here. Only the
    # process runs in the worker: what Python allocates stays in this thread.
    reading = _Background(lambda: ctx.wg.dump_text(s.interface), "fiovpn-wg-dump")
    if authoritative and rows is not None:
        _keep_devices(ctx, report, rows)

    try:
        sig = file_signature(s.clients_file)
        registry = read_registry(s.clients_file)
    except FiovpnError as exc:
        # Without the registry every client would look removed: change nothing.
        report.errors.append(f"{exc}: no peer changed")
        held = ctx.known if ctx.known is not None else ctx.state.known_peers()
        dump_now = None
        with contextlib.suppress(FiovpnError):
            dump_now = ctx.wg.parse_dump(s.interface, reading.result())
        _finish(ctx, report, dump_now, list(held.values()))
        return report
    entries, report.registry_held = ctx.registry_guard.entries(registry, sig)
    if not report.registry_held:
        report.registry_problems = registry.problems
    now = ctx.clock()
    entries, expired = ctx.access.split_expired(list(entries), now)
    # The factory list and the registry rarely change between passes: the same
    # inputs give the same desired peers (the rows compare by identity first).
    memo_in = (rows or [], entries, ctx.server_key, ctx.network)
    if ctx.last_desired is not None and ctx.last_desired[0] == memo_in:
        desired = ctx.last_desired[1]
    else:
        desired = desired_peers(memo_in[0], entries, ctx.network, server_key=ctx.server_key)
        ctx.last_desired = (memo_in, desired)
    if expired:
        desired = dataclasses.replace(desired, skipped=(*desired.skipped, *(
            SkippedPeer("client", e.name, f"expired at {iso(e.expires or 0)}")
            for e in expired)))
    report.desired = desired

    known = _Known(ctx)
    peers = list(desired.peers)
    # After a good factory answer the peers do not depend on the interface: while
    # wg is still reading it (50,000 peers), the firewall and the hosts file are
    # brought to them meanwhile. (An interface read at once, e.g. the empty one
    # of a first sync, leaves them to run alongside a large `wg set` instead.)
    early = authoritative and not reading.done()
    if early:
        same = _same_peers(ctx, peers)
        peers, same_peers = same or peers, same is not None
        _firewall_and_hosts(ctx, report, peers, entries, now, rows, same_peers)
    try:
        dump = ctx.wg.parse_dump(s.interface, reading.result())
    except FiovpnError as exc:
        report.errors.append(f"cannot read interface {s.interface}: {exc}")
        _finish(ctx, report, None, list(desired.peers))
        return report

    if not authoritative:
        peers += _protected(dump, desired, known, ctx.network)
    if not early:
        same = _same_peers(ctx, peers)
        peers, same_peers = same or peers, same is not None
    # The same peers against the same dump object (an idle interface) as a pass
    # that found nothing to change: nothing to change again.
    idle = same_peers and ctx.last_clean is dump
    changes = [] if idle else plan(peers, dump.peers, known, actual_by_text=dump.by_text())
    applying: _Background[None] | None = None
    if len(changes) > BACKGROUND_APPLY and not early:
        # many `wg set` processes (a first sync): the firewall and the hosts file
        # are brought up to date meanwhile
        applying = _Background(lambda: ctx.wg.apply(s.interface, changes), "fiovpn-wg-set")
    else:
        dump = _apply_peers(ctx, report, changes, dump, None)
    report.peers = peers
    if not same_peers or ctx.known is None:
        # After an authoritative pass the interface holds exactly ``peers``: the
        # last status file is only read when something needs an older name.
        base = known.loaded if known.loaded is not None else {}
        ctx.known = {**base, **{p.public_key: p for p in peers}}
    if not early:
        _firewall_and_hosts(ctx, report, peers, entries, now, rows, same_peers)
    if applying is not None:
        dump = _apply_peers(ctx, report, changes, dump, applying)
    # HA: the active journals what both servers do; the standby's journal is the
    # active's copy (a line of its own would make the copies differ)
    ctx.access.record(report.changes, expired, write=current_role(s) != STANDBY)
    ctx.last_peers = peers
    ctx.last_clean = dump if not changes and not report.errors else None
    _finish(ctx, report, dump, peers)
    return report


def _same_peers(ctx: ServerContext, peers: list[Peer]) -> list[Peer] | None:
    """The last pass's list when ``peers`` equals it (the usual idle poll: the same
    Peer objects, compared by identity first), else None.

    Asked once a pass: what is derived from the peers (the hosts block, the status
    order) is remembered against that list object, so a pass that goes on with it
    finds those memos by identity, without comparing 50,000 peers again."""
    last = ctx.last_peers
    return last if last is not None and peers == last else None


def _firewall_and_hosts(ctx: ServerContext, report: ReconcileReport, peers: list[Peer],
                        entries: list[ClientEntry], now: float,
                        rows: list[WireguardIp] | None, same_peers: bool) -> None:
    """The nft table (then forwarding) and the hosts block for ``peers``."""
    s = ctx.settings
    listen = s.http_listen()
    policy = FirewallPolicy(s.nft_table, s.interface, ctx.network.server,
                            s.allow_device_to_device,
                            http_port=listen.port if listen else None,
                            vip=s.vip, port=s.port)
    rules = access_rules(peers, entries, ctx.access.groups.groups,
                         ctx.access.live_grants(now), now)
    # New peers give a new model; when only their keys changed, its delta is empty
    # and nothing is applied. A failed apply is retried on the next pass.
    fw_key = (policy, rules.memo())
    if not same_peers or fw_key != ctx.last_firewall:
        try:
            _apply_firewall(ctx, report, table_model(policy, peers, rules, now=ctx.clock()))
            ctx.last_firewall = fw_key
        except FiovpnError as exc:
            report.errors.append(f"applying the firewall failed: {exc}")
            ctx.last_firewall = None
    if ctx.last_firewall is not None and not ctx.forwarding_on:
        # Only with the policy table in place: forwarding without it would pass
        # device->client and client<->client traffic unfiltered (fail closed).
        try:
            if ctx.nft.enable_forwarding():
                log.info("IPv4 forwarding switched on in this network namespace")
            ctx.forwarding_on = True
        except FiovpnError as exc:
            report.errors.append(str(exc))
    if s.factory and (report.api_ok or rows is not None):
        try:
            report.hosts_changed = update_hosts_file(ctx, s.hosts_file, s.factory, peers)
        except OSError as exc:
            report.errors.append(f"cannot update {s.hosts_file}: {exc}")


def _apply_peers(ctx: ServerContext, report: ReconcileReport, changes: list[PeerChange],
                 dump: WgDump, applying: _Background[None] | None) -> WgDump:
    """Apply ``changes`` (or wait for ``applying``, which does): the report gets
    them when they all went through, else the error and a fresh dump."""
    try:
        if applying is None:
            ctx.wg.apply(ctx.settings.interface, changes)
        else:
            applying.result()
    except FiovpnError as exc:
        report.errors.append(f"applying {len(changes)} peer change(s) failed: {exc}")
        with contextlib.suppress(FiovpnError):
            return ctx.wg.show_dump(ctx.settings.interface)
        return dump
    report.changes = changes
    for change in changes:
        log.info("%s%s", change.describe(), f" ({report.cause})" if report.cause else "")
    return dump


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
    ctx.last_status = report.status
    # read before this pass's changes: not what the interface holds now
    ctx.last_dump = None if report.changes else dump
    ctx.last_dump_at = time.monotonic()
    try:
        ctx.state.save_status(report.status)
    except OSError as exc:
        log.error("cannot write %s: %s", ctx.state.status_path, exc)



def apply_local(ctx: ServerContext, *, cause: str | None = None) -> ReconcileReport | None:
    """Apply the registry to the live interface now, devices from the state cache
    (no API call). Does nothing when the interface does not exist."""
    if not ctx.wg.interface_exists(ctx.settings.interface):
        return None
    # Keep the firewall in sync too: this process has not applied it yet.
    return reconcile_once(ctx, use_api=False, cause=cause)

