"""The daemon loop around ``reconcile_once``."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from fiovpn.adapters.fs import file_signature, loose_secret_file
from fiovpn.core.keys import public_key
from fiovpn.errors import FiovpnError
from fiovpn.services import ha as ha_service
from fiovpn.services.admins import AdminKeys, this_program
from fiovpn.services.ha import HaNode
from fiovpn.services.keys import ensure_key_file
from fiovpn.services.server.announce import Announced, RunDir
from fiovpn.services.server.context import ServerContext
from fiovpn.services.server.control import ControlServer
from fiovpn.services.server.interface import check_server_file, ensure_interface
from fiovpn.services.server.ops import dispatch
from fiovpn.services.server.reconcile import apply_local, reconcile_once
from fiovpn.services.server.report import ReconcileReport, iso
from fiovpn.services.server.status import device_list_age_s, status
from fiovpn.settings import settings_record

if TYPE_CHECKING:
    from fiovpn.ops.serve import Web

log = logging.getLogger("fiovpn.server")


BACKOFF_START = 5.0
FILE_POLL = 0.5  # seconds between clients-file checks: edits apply within ~1 s
HA_POLL = 0.1  # seconds between VIP checks in HA mode (a file read, no process)


# A pass at 50,000 peers allocates a few hundred thousand objects that mostly
# die by reference count; with the default thresholds the cyclic collector
# walks every long-lived object many times per pass (a third of a pass and more).
GC_THRESHOLDS = (50_000, 20, 10)
# glibc's mallopt parameters
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024


def tune_process() -> None:
    """Process-wide settings for a daemon holding 50,000 peers, made once at its
    start (never by a reconcile: the CLI, tests and the MCP server run those too).

    - fewer cyclic collections (garbage without cycles is freed at once anyway);
    - one malloc arena: the dump-reading, web and worker threads would each grow
      an arena of their own that is never given back;
    - blocks of 128 KiB and more (a pass's 8 MB dump text, the status JSON, a
      scrape's body) from mmap, returned to the system when freed; without a
      fixed threshold glibc raises it after the first such free and serves them
      from the heap, which then stays as large as the largest pass.
    """
    if gc.get_threshold()[0] < GC_THRESHOLDS[0]:
        gc.set_threshold(*GC_THRESHOLDS)
    with contextlib.suppress(OSError, AttributeError):  # not glibc: its defaults
        libc = ctypes.CDLL(None)
        libc.mallopt(M_ARENA_MAX, 1)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def freeze_gc() -> None:
    """After the first pass: what lives on (device list, peers, memos) is kept out
    of every later collection's walk; it is still freed when no longer used."""
    gc.collect()
    gc.freeze()


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
    web: Web | None = None
    # the settings its command line and environment set (``server_overrides``),
    # recorded with the effective ones; None: not known (a library caller)
    overrides: dict[str, Any] | None = None

    def _bind_web(self) -> Web | None:
        """The HTTP listener of ``--http`` (bound now, serving after the first
        pass has put the firewall in place); None when the setting is off."""
        listen = self.ctx.settings.http_listen()
        if listen is None:
            return None
        from fiovpn.ops.serve import build_web  # uvicorn and starlette only when asked

        ctx = self.ctx
        # the dashboard and /api/status show the last pass (its dump too), as a
        # scrape does: no `wg show dump` of their own
        web = build_web(listen, status_fn=lambda: _status_now(ctx),
                        state_dir=ctx.settings.state_dir, interval=ctx.settings.interval,
                        api=ctx.api, snapshot_fn=lambda: _snapshot(ctx))

        def observe(report: ReconcileReport, seconds: float) -> None:
            web.metrics.observe_pass(seconds, report.api_exception)
        ctx.on_pass = observe
        return web

    def _serve_web(self) -> None:
        if self.web is not None and self.web.http.thread is None:
            self.web.http.serve()

    def start(self) -> None:
        s = self.ctx.settings
        private, created = ensure_key_file(s.private_key)
        if created:
            log.info("generated server private key %s (0600)", s.private_key)
        self.ctx.server_key = public_key(private)
        if s.api_token_file is not None:
            loose = loose_secret_file(s.api_token_file, "the factory API token")
            if loose is not None:
                log.warning("%s", loose)
        self.ctx.daemon = True
        check_server_file(self.ctx, private)
        ensure_interface(self.ctx, private)
        if s.vip is not None:
            node = HaNode(s, self.ctx.wg, link=ha_service.peer_link(s),
                          apply_lock=self.ctx.apply_lock,
                          admin_keys=self.ctx.admin_keys
                          or AdminKeys(s.authorized_keys, this_program()))
            self.ctx.ha = node
            self.poll = min(self.poll, HA_POLL)
            # Catch up before the first reconcile: a returning server takes the
            # active's registry first, and health fails until this is done.
            node.catch_up()
            node.tick(starting=True)

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
        return file_signature(self.ctx.settings.clients_file)

    def _serve_control(self) -> ControlServer:
        """Record the effective settings, then answer the CLI on the control socket:
        from here on this process is the only writer of interface, firewall, hosts."""
        ctx = self.ctx
        ctx.daemon = True
        ctx.state.save_effective(settings_record(ctx.settings), pid=os.getpid(),
                                 started_at=iso(ctx.clock()), overrides=self.overrides)
        server = ControlServer(ctx.settings.state_dir, lambda req: dispatch(ctx, req))
        server.start()
        return server

    def _announce(self) -> contextlib.AbstractContextManager[Announced]:
        """Say in ``run-dir`` that this daemon runs, before it writes anything: a CLI
        reading other settings (no ``--state-dir`` of ours) still finds it, and a
        second daemon owning the same interface, table or registry is refused."""
        s = self.ctx.settings
        # a runner into a named namespace (benchmarks): the interface is there
        netns = getattr(self.ctx.wg.runner, "netns", None)
        return RunDir(s.run_dir).announce(s, started_at=iso(self.ctx.clock()),
                                          netns=netns if isinstance(netns, str) else None)

    def _grants_signature(self) -> tuple[int, int, int, int] | None:
        return file_signature(self.ctx.access.grants.path)

    def _expiry_due(self) -> bool:
        """A client's ``expires=`` has come: it leaves the interface now, not at
        the next poll."""
        end = self.ctx.access.next_end
        return end is not None and self.ctx.clock() >= end

    def run(self, *, once: bool = False) -> int:
        """Run until stopped (exit code 0), or one pass with ``once`` (0 ok, 1 failed)."""
        tune_process()
        installed = False
        if not once:
            with contextlib.suppress(ValueError):  # only possible in the main thread
                signal.signal(signal.SIGTERM, self.stop)
                signal.signal(signal.SIGINT, self.stop)
                installed = True
        try:
            with self.ctx.state.daemon_lock(), self._announce():
                control = self._serve_control()
                try:
                    self.start()
                    self.web = None if once else self._bind_web()
                    try:
                        return self._loop(once)
                    finally:
                        if self.web is not None:
                            self.web.http.stop()
                finally:
                    control.close()
        except _Stopped:
            log.info("daemon stopped; interface %s and its peers stay up",
                     self.ctx.settings.interface)
            return 0
        finally:
            if installed:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)

    def _log_api_failure(self, report: ReconcileReport, failures: int,
                         delay: float | None) -> None:
        """A refused token is logged at error level on every pass: a daemon that can
        no longer read the factory must not go quietly stale."""
        code = report.api_error_code
        age = device_list_age_s(self.ctx.last_api_success
                                or (self.ctx.last_status or {}).get("last_success"))
        stale = "never read" if age is None else f"{age} s old"
        retry = "" if delay is None else f", retrying in {delay:.0f} s"
        if code == "auth_failed":
            log.error("%s [auth_failed]: peers kept, device list %s%s", report.api_error,
                      stale, retry)
        else:
            level = logging.ERROR if failures >= 3 or delay is None else logging.INFO
            log.log(level, "factory API unavailable (%d in a row) [%s]: peers kept, device "
                    "list %s%s", failures, code, stale, retry)

    def _loop(self, once: bool) -> int:
        if once:
            report = reconcile_once(self.ctx)
            self.passes += 1
            if report.api_error is not None:
                self._log_api_failure(report, 1, None)
            return 0 if report.ok else 1
        interval = self.ctx.settings.interval
        failures = 0
        next_at = 0.0
        seen = self._signature()
        grants_seen = self._grants_signature()
        running: _Pass | None = None
        while not self.stopping:
            if self.ctx.ha is not None:
                self.ctx.ha.tick()
            if running is not None and running.done:
                done, started = running.report, running.started
                running = None
                self.passes += 1
                if self.passes == 1:
                    freeze_gc()
                self._serve_web()
                if done is not None and done.api_error is not None:
                    failures += 1
                    delay = done.retry_after or min(
                        interval, min(BACKOFF_START, interval) * 2 ** (failures - 1))
                    if done.api_error_code == "auth_failed":
                        delay = interval  # retrying sooner cannot make the token valid
                    self._log_api_failure(done, failures, delay)
                else:
                    failures = 0
                    delay = interval
                next_at = started + delay
            now = self.monotonic()
            sig = self._signature()
            if sig != seen and sig == self.ctx.trusted_registry:
                seen = sig  # written and applied by an op of this process
            elif sig != seen:
                seen = sig
                if running is None:
                    log.info("%s changed: reconciling now", self.ctx.settings.clients_file)
                    running = _Pass.start(self.ctx, now, cause="the clients file changed")
                else:
                    # The factory read in flight may hang for a minute: the registry
                    # edit is applied now, devices from the last good list.
                    log.info("%s changed: applying it now (factory read in progress)",
                             self.ctx.settings.clients_file)
                    apply_local(self.ctx, cause="the clients file changed")
            elif self.ctx.registry_guard.due():
                apply_local(self.ctx, cause="the clients file settled")
            elif running is None and now >= next_at:
                running = _Pass.start(self.ctx, now)
            elif self._expiry_due():
                self.ctx.access.next_end = None  # the pass sets the next one
                apply_local(self.ctx, cause="a client's expiry has come")
            elif self._grants_signature() != grants_seen:
                grants_seen = self._grants_signature()
                if grants_seen != self.ctx.trusted_grants:  # else: an op applied it
                    apply_local(self.ctx, cause="the grants file changed")
            if running is not None:
                running.wait(self.poll)
            else:
                self.sleep(max(0.0, min(self.poll, next_at - self.monotonic())))
        log.info("daemon stopped; interface %s and its peers stay up",
                 self.ctx.settings.interface)
        return 0


# How old a read of the interface the daemon's page and /api/status may show
# (handshakes, rx/tx): the page polls every second or so, and a read of 50,000 peers
# takes a few hundred ms, so one read serves the polls of this long.
STATUS_DUMP_MAX_AGE = 2.0


def _status_now(ctx: ServerContext) -> dict[str, Any]:
    """``server status --json`` from the last pass's document, with the interface as
    read at most ``STATUS_DUMP_MAX_AGE`` ago: the last pass's dump when that pass
    changed no peer and is that recent, else a read of the page's own, kept for the
    next polls (a pass that ends meanwhile makes it old)."""
    doc = ctx.last_status
    if doc is None:
        return status(ctx.settings, runner=ctx.wg.runner)
    now = time.monotonic()
    dump = ctx.last_dump if now - ctx.last_dump_at <= STATUS_DUMP_MAX_AGE else None
    web = ctx.web_dump
    if dump is None and web is not None and web[0] >= ctx.last_dump_at \
            and now - web[0] <= STATUS_DUMP_MAX_AGE:
        dump = web[1]
    if dump is None:
        try:
            dump = ctx.wg.show_dump(ctx.settings.interface)
        except FiovpnError:
            dump = None  # status() looks at the interface itself and says what it finds
        else:
            ctx.web_dump = (now, dump)
    return status(ctx.settings, runner=ctx.wg.runner, document=doc, dump=dump)


def _snapshot(ctx: ServerContext) -> dict[str, Any]:
    """The last pass's status document, its device-list age counted to now."""
    doc = ctx.last_status
    if doc is None:
        return status(ctx.settings)
    # the HA role as it is now, not at the last pass (a standby raises no
    # "no handshake" alarm from the moment it is one)
    return {**doc, **(ctx.ha.status_fields() if ctx.ha is not None else {}),
            "device_list_age_s": device_list_age_s(doc.get("last_success"))}


class _Pass:
    """One ``reconcile_once`` in a worker thread, so a hanging factory read never
    keeps the daemon from noticing a registry edit or a SIGTERM."""

    def __init__(self, ctx: ServerContext, started: float, cause: str | None) -> None:
        self.started = started
        self.cause = cause
        self.report: ReconcileReport | None = None
        self.thread = threading.Thread(target=self._run, args=(ctx,),
                                       name="fiovpn-reconcile", daemon=True)

    def _run(self, ctx: ServerContext) -> None:
        self.report = reconcile_once(ctx, cause=self.cause)

    @classmethod
    def start(cls, ctx: ServerContext, now: float, *, cause: str | None = None) -> _Pass:
        run = cls(ctx, now, cause)
        run.thread.start()
        return run

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def wait(self, seconds: float) -> None:
        self.thread.join(timeout=seconds)
