"""``StatusView``: what the metrics, the dashboard and ``status --watch`` may see.

The one small interface between the daemon and everything that shows it:
the ``server status --json`` document (cached for a moment, so ten browsers
and a Prometheus scraping at once cost one ``wg show dump``), the live grants
and the recent journal from the state directory, and which devices the
factory sees online (refreshed in the background, never on a scrape's time).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fiovpn.adapters.factory_api import FactoryApi
from fiovpn.core.presence import factory_online
from fiovpn.errors import FiovpnError
from fiovpn.services.grants import GRANTS_FILE, GrantStore
from fiovpn.services.journal import JOURNAL_FILE

log = logging.getLogger("fiovpn.server")

JOURNAL_TAIL_BYTES = 256 * 1024  # the recent journal is read from the end of the file

StatusFn = Callable[[], dict[str, Any]]


@dataclass
class Presence:
    """Names of the devices the factory lists as online, refreshed in a background
    thread at most every ``ttl`` seconds; ``online()`` never waits for the API
    (None until the first answer)."""

    api: FactoryApi
    ttl: float = 60.0
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    _names: frozenset[str] | None = field(default=None, init=False)
    _fetched: float = field(default=-1e18, init=False)
    _busy: bool = field(default=False, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def refresh(self) -> None:
        """One factory read, now (the background thread runs this)."""
        try:
            devices = self.api.list_devices()
        except FiovpnError as exc:
            log.debug("device presence not refreshed: %s", exc)
            return
        finally:
            with self._lock:
                self._busy = False
                self._fetched = self.monotonic()
        now = self.clock()
        names = frozenset(d.name for d in devices if factory_online(d.status, d.last_seen, now))
        with self._lock:
            self._names = names

    def online(self) -> frozenset[str] | None:
        with self._lock:
            due = not self._busy and self.monotonic() - self._fetched >= self.ttl
            if due:
                self._busy = True
            names = self._names
        if due:
            threading.Thread(target=self.refresh, name="fiovpn-presence", daemon=True).start()
        return names


@dataclass
class StatusView:
    """The daemon's state as the ``ops`` modules see it (read-only)."""

    status_fn: StatusFn
    state_dir: Path
    interval: float = 60.0
    presence: Presence | None = None
    ttl: float = 1.0  # seconds a status document is reused
    # The daemon's last pass as it saw it (peers with that pass's handshakes and
    # traffic, no fresh `wg show dump`): what a scrape reads. None: ``status()``.
    snapshot_fn: StatusFn | None = None
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    _cached: tuple[float, dict[str, Any]] | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def status(self) -> dict[str, Any]:
        """The ``server status --json`` document (at most ``ttl`` seconds old)."""
        with self._lock:
            now = self.monotonic()
            if self._cached is not None and now - self._cached[0] < self.ttl:
                return self._cached[1]
            doc = self.status_fn()
            self._cached = (self.monotonic(), doc)
            return doc

    def snapshot(self) -> dict[str, Any]:
        """The daemon's last pass (at most one poll interval old), else ``status()``.

        A ``wg show dump`` of 50,000 peers alone takes longer than a scrape may;
        the daemon has just made one."""
        if self.snapshot_fn is None:
            return self.status()
        return self.snapshot_fn()

    def online_devices(self) -> frozenset[str] | None:
        return self.presence.online() if self.presence is not None else None

    def grants(self) -> list[dict[str, Any]]:
        """Live grants from ``grants.json`` with ``remaining_s``, soonest end first."""
        return live_grants(self.state_dir / GRANTS_FILE, self.clock())

    def journal(self, limit: int = 50) -> list[dict[str, Any]]:
        """The last ``limit`` journal entries, newest first."""
        return journal_tail(self.state_dir / JOURNAL_FILE, limit)


def live_grants(path: Path, now: float) -> list[dict[str, Any]]:
    """Grants not yet ended, as ``server access list --json`` shows them
    (``{"client","public_key","group","device","expires","remaining_s"}``),
    soonest end first. An unreadable file shows no grant (the daemon and
    ``server access list`` report it)."""
    try:
        grants = GrantStore(path).live(now)
    except FiovpnError:
        return []
    return [g.to_json(now) for g in sorted(grants, key=lambda g: g.end)]


def journal_tail(path: Path, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` well-formed lines of a JSON-lines journal, newest first."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - JOURNAL_TAIL_BYTES))
            raw = fh.read()
    except OSError:
        return []
    lines = raw.split(b"\n")
    if len(raw) < size:
        lines = lines[1:]  # the first line is cut
    out: list[dict[str, Any]] = []
    for line in reversed(lines):
        if len(out) >= limit:
            break
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                out.append(entry)
    return out
