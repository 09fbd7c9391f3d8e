"""Time-boxed grants (SPEC section 11): a client may reach a device group or one
device until an absolute end time. Pure values; ``services/grants.py`` keeps
them in ``<state dir>/grants.json`` and the firewall carries them as set
elements with a kernel timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fiovpn.core.keys import Key
from fiovpn.core.timespec import format_timestamp


@dataclass(frozen=True, slots=True)
class Grant:
    client: Key  # the client's public key (its name may change, its key does not)
    client_name: str | None
    group: str | None  # exactly one of group and device
    device: str | None
    end: int  # seconds since the epoch
    created: int = 0
    actor: str = ""

    @property
    def target(self) -> tuple[str, str]:
        return ("group", self.group) if self.group is not None else ("device", self.device or "")

    def same_target(self, other: Grant) -> bool:
        return self.client == other.client and self.target == other.target

    def live(self, now: float) -> bool:
        return self.end > now

    def remaining(self, now: float) -> int:
        return max(0, int(self.end - now))

    def describe(self) -> str:
        kind, value = self.target
        who = self.client_name or str(self.client)
        return f"{who} -> {kind} {value} until {format_timestamp(self.end)}"

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        """The SPEC shape ``{"client","group","device","expires"[,"remaining_s"]}``."""
        data: dict[str, Any] = {"client": self.client_name or str(self.client),
                                "public_key": str(self.client), "group": self.group,
                                "device": self.device, "expires": format_timestamp(self.end)}
        if now is not None:
            data["remaining_s"] = self.remaining(now)
        return data

    def to_record(self) -> dict[str, Any]:
        return {"client": str(self.client), "client_name": self.client_name,
                "group": self.group, "device": self.device, "end": self.end,
                "created": self.created, "actor": self.actor}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Grant:
        group, device = data.get("group"), data.get("device")
        if (group is None) == (device is None):
            raise ValueError("a grant names exactly one of group and device")
        end = data["end"]
        if not isinstance(end, int) or isinstance(end, bool):
            raise ValueError(f"bad end {end!r}")
        return cls(Key(str(data["client"])), data.get("client_name"),
                   str(group) if group is not None else None,
                   str(device) if device is not None else None, end,
                   int(data.get("created", 0)), str(data.get("actor", "")))


def upsert(grants: list[Grant], grant: Grant) -> list[Grant]:
    """``grants`` with ``grant`` replacing any grant of the same client and target."""
    return [g for g in grants if not g.same_target(grant)] + [grant]


def live(grants: list[Grant], now: float) -> list[Grant]:
    return [g for g in grants if g.live(now)]
