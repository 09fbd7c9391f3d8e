"""HA: the registry's digest without reading the registry on every copy.

Every ``ha-sync-interval`` (2 s) the active compares its registry's digest with
the one the standby last took, and sends the registry only when they differ.
Reading and hashing a registry of thousands of clients for that every 2 s is
wasted while it does not change: ``RegistryDigest`` keeps the digest with the
file's identity (inode, size, mtime, ctime) and reads and hashes the file again
only when that identity changed. Every way the registry changes moves it: an
atomic replace (``ClientRegistry``, the HA copy) is a new inode, an edit in
place a new ctime (which no one can set back).

The standby answers every copy with its registry's digest, from a new process
each time (``ha-receive`` over SSH): it keeps the identity and digest it last
had (``mark``) in its HA state file and trusts it (``seed``) while the file is
as it was then, so it reads its registry only after a change too.

A change within the filesystem's timestamp granularity of the last read could
keep the identity, so an identity younger than ``RACY_NS`` is not trusted: the
next copy reads the file again (as git does with its index). A changed registry
is always sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fiovpn.adapters.fs import file_signature
from fiovpn.core.ha import registry_digest

RACY_NS = 2_000_000_000  # an identity this young may hide a change made in its tick

Signature = tuple[int, int, int, int]


def registry_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return ""


@dataclass
class RegistryDigest:
    """One registry file's digest, read again only when the file changed."""

    path: Path
    clock_ns: Callable[[], int] = time.time_ns
    reads: int = 0  # how often this object read the file (for tests, logs)
    _known: tuple[Signature, str] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def digest(self) -> str:
        """The registry's digest now: remembered while the file is as it was."""
        with self._lock:
            sig = file_signature(self.path)
            if sig is not None and self._known is not None and self._known[0] == sig:
                return self._known[1]
            return self._read(sig)[1]

    def mark(self) -> list[Any] | None:
        """The identity and digest remembered, to keep for a later process."""
        with self._lock:
            return None if self._known is None else [*self._known[0], self._known[1]]

    def seed(self, mark: Any) -> None:
        """Trust ``mark`` (an earlier process's ``mark()``) while the file still has
        its identity; anything else is ignored."""
        if not (isinstance(mark, list) and len(mark) == 5 and isinstance(mark[4], str)
                and all(isinstance(v, int) and not isinstance(v, bool) for v in mark[:4])):
            return
        with self._lock:
            if self._known is None:
                self._known = ((mark[0], mark[1], mark[2], mark[3]), mark[4])

    def read(self) -> tuple[str, str]:
        """The registry's text, read now, and its digest (remembered for ``digest``)."""
        with self._lock:
            return self._read(file_signature(self.path))

    def _read(self, sig: Signature | None) -> tuple[str, str]:
        # ``sig`` was taken before the read: a change after it is a new identity
        # next time, never a new text remembered under the old identity
        text = registry_text(self.path)
        self.reads += 1
        digest = registry_digest(text)
        settled = sig is not None and self.clock_ns() - max(sig[2], sig[3]) > RACY_NS
        self._known = (sig, digest) if settled and sig is not None else None
        return text, digest


_digests: dict[Path, RegistryDigest] = {}
_digests_lock = threading.Lock()


def registry_digest_of(path: Path) -> RegistryDigest:
    """This process's ``RegistryDigest`` of ``path`` (the daemon's lives as long as it)."""
    with _digests_lock:
        found = _digests.get(path)
        if found is None:
            found = _digests[path] = RegistryDigest(path)
        return found
