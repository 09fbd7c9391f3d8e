"""Processes of the lab: commands run inside a role's namespaces, tracked
long-running children, and waits that always end.

A role's commands run behind an *enter prefix*: ``ip netns exec NS`` for a
plain network namespace, ``nsenter -t PID -m -n --`` for a device that also has
its own mount namespace (held by a sleeping process).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

from fiovpn.errors import PermanentError, TemporaryError

T = TypeVar("T")


class LabError(PermanentError):
    """The lab could not be built, used or removed."""

    code = "lab"


class LabTimeout(TemporaryError):
    """A wait of the lab ran past its deadline."""

    code = "lab_timeout"


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str,
             interval: float = 0.1, detail: Callable[[], str] | None = None) -> T:
    """Call ``check`` until it returns something other than None/False, or fail
    after ``timeout`` seconds naming ``what`` (and ``detail()``, e.g. a log tail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            extra = ""
            if detail is not None:
                with contextlib.suppress(Exception):
                    extra = f": {detail()}"
            raise LabTimeout(f"timed out after {timeout:g}s waiting for {what}{extra}")
        time.sleep(interval)


def start_time(pid: int) -> int | None:
    """The kernel start time of ``pid`` (field 22 of /proc/PID/stat), None when gone.
    Recorded with a pid so a later cleanup never signals a recycled pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may hold spaces; fields after the last ')' are plain.
    rest = stat.rsplit(")", 1)[1].split()
    return int(rest[19])


def alive(pid: int, started: int | None = None) -> bool:
    st = start_time(pid)
    if st is None:
        return False
    if started is not None and st != started:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def reap(pid: int) -> None:
    """Collect ``pid`` if it is our (possibly adopted) child; ignore it otherwise."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def kill_pid(pid: int, started: int | None = None, *, grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; only if still the same process."""
    if not alive(pid, started):
        reap(pid)
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            reap(pid)
            if not alive(pid, started):
                return
            time.sleep(0.05)


def become_subreaper() -> None:
    """Adopt orphans of our children (e.g. wireguard-go daemonized by wg-quick), so
    teardown can reap them instead of leaving zombies under a PID 1 that never does."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_child_subreaper = 36
        libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def reap_adopted(names: tuple[str, ...] = ("wireguard-go",)) -> None:
    """Reap exited processes we adopted as subreaper (only those named, e.g. the
    wireguard-go that wg-quick daemonized): never another test's own child."""
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1: stat.rfind(")")]
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z" and int(fields[1]) == me and comm in names:
            reap(int(proc.name))


@dataclass
class Child:
    """A long-running process of the lab (sshd, wireguard-go, the daemon, ...)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path | None
    started: int | None = None
    _log_fh: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        if self.log is None:
            return ""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def release(self) -> None:
        """Close our handle on the log; the process runs on (a kept lab)."""
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def stop(self, sig: int = signal.SIGTERM, *, grace: float = 5.0) -> int:
        """Signal the child's whole process group, wait; SIGKILL after ``grace``."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=grace)
        # anything left in its process group (a forked helper) goes too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.release()
        return self.popen.returncode


def spawn(name: str, argv: Sequence[str], *, env: Mapping[str, str],
          log: Path | None) -> Child:
    """Start ``argv`` in its own session (so its group can be signalled as one and
    a terminal's Ctrl-C does not hit it), output appended to ``log``."""
    fh: IO[bytes] | None = None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        fh = open(log, "ab")  # noqa: SIM115 - closed by Child.stop
    popen = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL,
                             stdout=fh if fh else subprocess.DEVNULL,
                             stderr=subprocess.STDOUT if fh else subprocess.DEVNULL,
                             env=dict(env), start_new_session=True)
    return Child(name, popen, log, start_time(popen.pid), fh)
