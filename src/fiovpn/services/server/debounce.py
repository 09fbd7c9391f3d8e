"""Is a registry read to be believed? A registry rewritten in place (an editor,
``> file``, a script) is empty or cut short for a moment; applied as read, every
client would lose its peer (sessions and counters reset) and get it back a poll
later. A read that looks like that must be seen unchanged ``settle`` seconds
apart before the clients it drops are removed. A well-formed edit applies at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from fiovpn.core.registry import ClientEntry, Registry

log = logging.getLogger("fiovpn.server")

SETTLE = 0.5
Signature = tuple[int, int, int, int] | None


def looks_cut_short(registry: Registry) -> bool:
    """Empty (no client at all), not ending in a newline, or a bad last line."""
    if not registry.entries:
        return True
    if registry.lines and not registry.trailing_newline:
        return True
    return bool(registry.lines) and registry.lines[-1].problem is not None


@dataclass
class RegistryGuard:
    settle: float = SETTLE
    clock: Callable[[], float] = time.monotonic
    applied: list[ClientEntry] | None = None  # the entries the last pass used
    trusted: Signature = None  # a registry this process wrote itself (an op)
    pending: tuple[Signature, float] | None = None  # a doubtful read: (file, first seen)

    def entries(self, registry: Registry, sig: Signature) -> tuple[list[ClientEntry], bool]:
        """The entries to apply now, and whether the read is being held back."""
        new = registry.entries
        prev = self.applied
        dropped = prev is not None and bool({e.public_key for e in prev}
                                            - {e.public_key for e in new})
        if not dropped or sig == self.trusted or not looks_cut_short(registry):
            self.pending = None
            self.applied = list(new)
            return new, False
        now = self.clock()
        if self.pending is not None and self.pending[0] == sig:
            if now - self.pending[1] >= self.settle:
                log.info("the client registry has stayed %s for %.1f s: applying it",
                         "empty" if not new else "short", now - self.pending[1])
                self.pending = None
                self.applied = list(new)
                return new, False
        else:
            if self.pending is None:
                log.info("the client registry looks %s (being rewritten?): keeping its "
                         "clients until it is unchanged for %.1f s",
                         "empty" if not new else "cut short", self.settle)
            self.pending = (sig, now)
        assert prev is not None
        return list(prev), True

    def due(self) -> bool:
        """A held-back read is ready to be checked again."""
        return self.pending is not None and self.clock() - self.pending[1] >= self.settle
