"""Where a running daemon says that it runs, so every CLI finds it.

The control socket lives in the daemon's state directory; a daemon given
``--state-dir`` (or ``--interface``, ``--clients-file``) only on its command line
is not found there by a CLI that reads ``server.toml``. So each daemon also
writes ``<run-dir>/daemon-*.json`` (``run-dir``: default ``/run/fiovpn``, a
setting with no flag, so both sides agree on it): its pid, its network
namespace and its effective settings, and holds an exclusive ``flock`` on that
file while it lives (a ``kill -9`` releases it: no pid guessing).

A CLI looks there for a live daemon that owns any part of the live state its
own settings name: the same state directory or clients file, or, in the same
network namespace, the same interface or nft table. It asks that daemon over
the socket in *its* state directory. With none, the CLI applies itself while
holding ``<run-dir>/daemons.lock`` shared; a daemon announces only while
holding it exclusively, so no daemon starts writing in the middle of a CLI's
apply. A daemon's entry stays after it stops (marked by the free lock): a CLI
then still knows which state directory the last daemon recorded its settings
in. A new daemon clearing up removes stopped entries that clash with it.

Outside ``services/server`` (whose package loads the daemon, the reconcile and
the factory client): ``server health``, which keepalived runs every couple of
seconds, finds the daemon with this module alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fiovpn.errors import BadInput, FiovpnError, PermanentError, TemporaryError
from fiovpn.settings import ServerSettings, settings_from_record, settings_record

LOCK_FILE = "daemons.lock"
ENTRY_PREFIX = "daemon-"
ENTRY_SUFFIX = ".json"
LOCK_TIMEOUT = 30.0  # a CLI's apply without a daemon takes well under a second


def _log() -> Any:
    import logging  # here: `server health` (every 2 s) loads it only to say something

    return logging.getLogger("fiovpn.server")


def netns_id(name: str | None = None) -> str:
    """A network namespace's identity (device and inode of its ns file): this
    process's, or the named one (``ip netns``) its runner writes the interface in.
    Interface names and nft tables are per namespace, files are not."""
    try:
        st = os.stat(f"/run/netns/{name}" if name else "/proc/self/ns/net")
    except OSError:
        return f"unknown:{name or ''}"
    return f"{st.st_dev}:{st.st_ino}"


def _same_path(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


@dataclass(frozen=True)
class Announced:
    """One daemon's entry in the run directory."""

    path: Path
    pid: int
    netns: str
    started_at: str
    settings: ServerSettings
    running: bool

    @property
    def socket(self) -> Path:
        from fiovpn.services.server.control import socket_path  # here: health needs none

        return socket_path(self.settings.state_dir)

    def shares(self, settings: ServerSettings, netns: str) -> list[str]:
        """What of ``settings``' live state this daemon owns too (empty: nothing)."""
        mine = self.settings
        out = []
        if _same_path(mine.state_dir, settings.state_dir):
            out.append(f"state directory {mine.state_dir}")
        if _same_path(mine.clients_file, settings.clients_file):
            out.append(f"clients file {mine.clients_file}")
        if self.netns == netns:
            if mine.interface == settings.interface:
                out.append(f"interface {mine.interface}")
            if mine.nft_table == settings.nft_table:
                out.append(f"nft table {mine.nft_table}")
        return out

    def describe(self) -> str:
        s = self.settings
        return (f"pid {self.pid} (state dir {s.state_dir}, interface {s.interface}, "
                f"clients file {s.clients_file})")


@dataclass
class RunDir:
    """``<run-dir>``: the running daemons' entries and the lock that orders a
    daemon's start against a CLI applying without one."""

    path: Path
    timeout: float = LOCK_TIMEOUT

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_FILE

    def _open_lock(self) -> int:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                os.chmod(self.path, 0o700)
            return os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise PermanentError(f"cannot use the run directory {self.path}: {exc.strerror}",
                                 code="run_dir_failed",
                                 hint="run this as root (sudo), or set run-dir in the "
                                      "settings file") from None

    @contextlib.contextmanager
    def _locked(self, mode: int, what: str) -> Iterator[None]:
        fd = self._open_lock()
        try:
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise TemporaryError(
                            f"{self.lock_path} stayed locked for {self.timeout:.0f} s "
                            f"({what})", code="run_dir_locked",
                            hint="another fiovpn server command or daemon start is in "
                                 "progress; retry in a moment") from None
                    time.sleep(0.02)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def no_daemon_starts(self) -> Iterator[None]:
        """Held (shared) by a CLI applying a change itself: no daemon announces, and
        so none starts writing live state, until it ends."""
        with self._locked(fcntl.LOCK_SH, "a daemon is starting"):
            yield

    def entries(self) -> list[Announced]:
        """Every daemon entry here, running or stopped (unreadable ones skipped)."""
        try:
            names = sorted(os.listdir(self.path))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise PermanentError(f"cannot read the run directory {self.path}: "
                                 f"{exc.strerror}", code="run_dir_failed",
                                 hint="run this as root (sudo)") from None
        out = []
        for name in names:
            if name.startswith(ENTRY_PREFIX) and name.endswith(ENTRY_SUFFIX):
                entry = _read_entry(self.path / name)
                if entry is not None:
                    out.append(entry)
        return out

    def find(self, settings: ServerSettings) -> tuple[Announced | None, Announced | None]:
        """(the running daemon owning any of ``settings``' live state, the last
        stopped one that did). Two running ones that both do: refused, naming both.
        Call it holding ``no_daemon_starts`` (an entry being written is not read)."""
        here = netns_id()
        running: list[Announced] = []
        stopped: list[Announced] = []
        for entry in self.entries():
            if entry.shares(settings, here):
                (running if entry.running else stopped).append(entry)
        if len(running) > 1:
            raise PermanentError(
                "more than one fiovpn server daemon runs with these settings' live state: "
                + "; ".join(e.describe() for e in running), code="daemons_ambiguous",
                hint="stop all but one (systemctl stop fiovpn-<factory>)")
        last = max(stopped, key=lambda e: e.started_at, default=None)
        return (running[0] if running else None), last

    @contextlib.contextmanager
    def announce(self, settings: ServerSettings, *, started_at: str,
                 netns: str | None = None) -> Iterator[Announced]:
        """The daemon's entry, written and held for as long as the ``with`` lasts
        (``netns``: the named namespace its interface is in, when not its own).
        Refused when another running daemon owns any of the same live state."""
        here = netns_id(netns)
        with self._locked(fcntl.LOCK_EX, "a fiovpn command is applying a change"):
            for entry in self.entries():
                shared = entry.shares(settings, here)
                if not shared:
                    continue
                if entry.running:
                    raise PermanentError(
                        f"another fiovpn server daemon ({entry.describe()}) already runs "
                        f"with the same {', '.join(shared)}", code="daemon_running",
                        hint="stop it first (systemctl stop fiovpn-<factory>); "
                             "`fiovpn server status` shows what it does")
                with contextlib.suppress(FileNotFoundError):
                    entry.path.unlink()  # a stopped daemon this one takes over from
            import tempfile  # here: `server health` (every 2 s) reads entries only

            fd, name = tempfile.mkstemp(prefix=ENTRY_PREFIX, suffix=ENTRY_SUFFIX,
                                        dir=self.path)
            path = Path(name)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                record = {"pid": os.getpid(), "netns": here, "started_at": started_at,
                          "settings": settings_record(settings)}
                os.write(fd, (json.dumps(record, indent=1) + "\n").encode())
            except BaseException:
                os.close(fd)
                path.unlink(missing_ok=True)
                raise
        try:
            yield Announced(path, os.getpid(), here, started_at, settings, running=True)
        finally:
            # the entry stays (its lock free): a CLI still finds where this daemon
            # recorded its settings
            os.close(fd)


def _read_entry(path: Path) -> Announced | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            running = False
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            running = True
        with os.fdopen(os.dup(fd), "rb") as fh:
            raw = fh.read(1 << 20)
    finally:
        os.close(fd)
    try:
        data: Any = json.loads(raw)
        settings = settings_from_record(data["settings"], source=str(path))
        return Announced(path, int(data["pid"]), str(data["netns"]),
                         str(data.get("started_at") or ""), settings, running)
    except (ValueError, KeyError, TypeError, BadInput) as exc:
        _log().warning("ignoring unreadable daemon entry %s: %s", path, exc)
        return None


def find_daemon(settings: ServerSettings) -> tuple[Announced | None, Announced | None]:
    """``RunDir.find`` for a command that only reads: (None, None) when this user
    cannot read the run directory (not root) or two running daemons match (a
    command that changes something refuses that; one that reads uses its own)."""
    run = RunDir(settings.run_dir)
    if not run.path.exists():
        return None, None
    try:
        with run.no_daemon_starts():
            return run.find(settings)
    except FiovpnError as exc:
        _log().debug("not looking for a daemon in %s: %s", run.path, exc)
        return None, None


def running_daemon(settings: ServerSettings) -> Announced | None:
    """The running daemon that owns any of ``settings``' live state (``find_daemon``)."""
    return find_daemon(settings)[0]
