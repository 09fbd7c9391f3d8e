"""``<state dir>/grants.json``: the time-boxed grants with their absolute end.

0600, written atomically under an exclusive lock. An ended grant is dropped
on the next write and never handed to the firewall again; the daemon
re-applies the live ones with their remaining time after a restart.

API (for the daemon, the CLI and replication):
- ``GrantStore(path).load() -> list[Grant]`` (all, ended ones included);
- ``GrantStore.live(now) -> list[Grant]``;
- ``GrantStore.update(fn)``: ``fn(grants) -> grants`` under the lock; returns
  the new list (ended grants pruned).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fiovpn.adapters.fs import atomic_write, locked
from fiovpn.core.grants import Grant
from fiovpn.errors import PermanentError

log = logging.getLogger("fiovpn.server")

GRANTS_FILE = "grants.json"


@dataclass
class GrantStore:
    path: Path

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> GrantStore:
        return cls(state_dir / GRANTS_FILE)

    def load(self) -> list[Grant]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise PermanentError(f"cannot read the grants file {self.path}: {exc}",
                                 code="grants_unreadable",
                                 hint="fix or remove it; `fiovpn server access list` "
                                      "reads it") from None
        out: list[Grant] = []
        for n, item in enumerate(data.get("grants", []) if isinstance(data, dict) else []):
            try:
                out.append(Grant.from_record(item))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("%s: skipping grant %d: %s", self.path, n + 1, exc)
        return out

    def live(self, now: float) -> list[Grant]:
        return [g for g in self.load() if g.live(now)]

    def save(self, grants: list[Grant]) -> None:
        doc = {"version": 1, "grants": [g.to_record() for g in grants]}
        atomic_write(self.path, json.dumps(doc, indent=1) + "\n", mode=0o600)

    def update(self, change: Callable[[list[Grant]], list[Grant]], *, now: float
               ) -> list[Grant]:
        with locked(self.path):
            grants = change([g for g in self.load() if g.live(now)])
            self.save(grants)
        return grants
