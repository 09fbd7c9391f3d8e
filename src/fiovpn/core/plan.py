"""The plan: desired peers against what the interface holds -> the minimal delta.

Pure. Peers that match keep untouched (their sessions and endpoints survive);
only added, removed and changed peers appear, each with a human reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fiovpn.core.keys import Key
from fiovpn.core.peers import Peer
from fiovpn.core.wgdump import PeerDump

Action = Literal["remove", "update", "add"]


@dataclass(frozen=True, slots=True)
class PeerChange:
    action: Action
    public_key: Key
    old: tuple[str, ...] | None  # allowed IPs on the interface before
    new: Peer | None
    reason: str
    label: str  # who this is, for the log ("device 'foo'", "client 10.42.42.200")

    def describe(self) -> str:
        verb = {"add": "added", "remove": "removed", "update": "updated"}[self.action]
        before = ",".join(self.old) if self.old else "-"
        after = self.new.allowed_ip if self.new else "-"
        ips = after if self.action == "add" else (
            before if self.action == "remove" else f"{before} -> {after}")
        return f"peer {verb}: {self.label} {ips} key {self.public_key}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "public_key": str(self.public_key),
                "old_allowed_ips": list(self.old) if self.old is not None else None,
                "new": self.new.to_json() if self.new else None, "reason": self.reason}


def plan(desired: Iterable[Peer], actual: Iterable[PeerDump],
         known: Mapping[Key, Peer] | None = None, *,
         actual_by_text: Mapping[str, PeerDump] | None = None) -> list[PeerChange]:
    """Changes that turn ``actual`` into ``desired``: removes first (so a
    freed IP can move), then updates, then adds. ``known`` (the previous
    desired peers) only names peers in the reasons of removals."""
    if known is None:  # not `known or {}`: asking a lazy mapping's length loads it
        known = {}
    # Key texts as dict keys (a Key hashes in Python): 50,000 peers per pass.
    want = {p.public_key.text: p for p in desired}
    have = actual_by_text if actual_by_text is not None else {
        p.public_key.text: p for p in actual}
    removes: list[PeerChange] = []
    updates: list[PeerChange] = []
    adds: list[PeerChange] = []
    for text, cur in have.items():
        new = want.get(text)
        if new is None:
            prev = known.get(cur.public_key)
            if prev is not None:
                label = prev.label
                reason = ("no longer an enabled device in the factory" if prev.kind == "device"
                          else "no longer in the client registry")
            else:
                label = "unknown peer"
                reason = "not an enabled device or a registry client"
            removes.append(PeerChange("remove", cur.public_key, cur.allowed_ips, None, reason,
                                      label))
        elif len(cur.allowed_ips) != 1 or cur.allowed_ips[0] != new.allowed_ip:
            before = ",".join(cur.allowed_ips) or "none"
            updates.append(PeerChange("update", new.public_key, cur.allowed_ips, new,
                                      f"allowed IPs were {before}, want {new.allowed_ip}",
                                      new.label))
    if len(want) != len(have) or updates or removes:
        for text, new in want.items():
            if text not in have:
                reason = ("enabled device in the factory" if new.kind == "device"
                          else "client in the registry")
                adds.append(PeerChange("add", new.public_key, None, new, reason, new.label))
    order = sorted  # stable, readable logs: by label within each action
    return [*order(removes, key=lambda c: c.label), *order(updates, key=lambda c: c.label),
            *order(adds, key=lambda c: c.label)]
