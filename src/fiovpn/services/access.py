"""Who may reach which device (SPEC section 11), as the server applies it.

- the device groups: each device's factory ``device-group``, learned from the
  paginated device list only while some client has ``groups=`` or a group
  grant exists (or nothing is cached yet), kept in
  ``<state dir>/device_groups.json`` so a restart or an API outage keeps them;
- ``access_rules``: registry + device groups + live grants -> the firewall's
  ``AccessRules`` (addresses, absolute ends);
- ``earliest_end``: when the daemon must wake next (a client's expiry);
- ``AccessGrants``: ``server access grant/revoke/list``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from fiovpn.adapters.factory_api import FactoryApi, WireguardIp
from fiovpn.adapters.fs import atomic_write
from fiovpn.core.firewall import AccessRules, render_grant, render_revoke
from fiovpn.core.grants import Grant, upsert
from fiovpn.core.keys import Key
from fiovpn.core.names import validate_name
from fiovpn.core.peers import Peer
from fiovpn.core.registry import ClientEntry, Registry
from fiovpn.core.timespec import format_timestamp, parse_duration
from fiovpn.errors import BadInput, FiovpnError, NotFound, PermanentError
from fiovpn.services.grants import GrantStore
from fiovpn.services.journal import DAEMON, Journal

log = logging.getLogger("fiovpn.server")

DEVICE_GROUPS_FILE = "device_groups.json"


# --------------------------------------------------------------------------- groups


@dataclass
class DeviceGroups:
    """Device name -> factory ``device-group`` (devices without one are left out)."""

    path: Path
    groups: dict[str, str] | None = None  # None: never learned
    saved_at: str | None = None

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> DeviceGroups:
        found = cls(state_dir / DEVICE_GROUPS_FILE)
        found.load()
        return found

    def load(self) -> dict[str, str] | None:
        try:
            data = json.loads(self.path.read_text())
            groups = data["groups"]
            if isinstance(groups, dict):
                self.groups = {str(k): str(v) for k, v in groups.items() if v}
                self.saved_at = str(data.get("saved_at"))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable device groups %s: %s", self.path, exc)
        return self.groups

    def learn(self, api: FactoryApi, now: float) -> bool:
        """Read the factory's device list (every page); True when the groups changed."""
        list_devices = getattr(api, "list_devices", None)
        if list_devices is None:
            raise PermanentError("this factory client cannot list devices",
                                 code="no_device_list")
        groups = {d.name: d.device_group for d in list_devices() if d.device_group}
        if groups == self.groups and self.path.exists():
            return False
        self.groups = groups
        self.saved_at = format_timestamp(now)
        atomic_write(self.path, json.dumps({"saved_at": self.saved_at, "groups": groups},
                                           separators=(",", ":")) + "\n", mode=0o600)
        return True

    def known(self) -> set[str]:
        return set((self.groups or {}).values())


def groups_in_use(entries: Iterable[ClientEntry], grants: Iterable[Grant]) -> bool:
    return any(e.groups is not None for e in entries) or any(g.group for g in grants)


def check_groups(groups: Iterable[str], known: DeviceGroups) -> None:
    """Refuse a group no device of the factory has (a typo would lock a client out)."""
    if known.groups is None:
        return  # never learned: the daemon has not needed them yet; cannot check
    have = known.known()
    for g in groups:
        if g not in have:
            raise BadInput(f"unknown device group {g!r}: no device of the factory is in it",
                           code="unknown_group",
                           hint="known groups: " + (", ".join(sorted(have)) or "none")
                                + " (from the factory's device list)")


# --------------------------------------------------------------------------- rules


def access_rules(peers: Iterable[Peer], entries: Iterable[ClientEntry],
                 device_groups: Mapping[str, str] | None, grants: Iterable[Grant],
                 now: float) -> AccessRules:
    """The firewall's view of section 11 for the peers being applied."""
    peers = list(peers)
    by_key = {p.public_key: p for p in peers if p.kind == "client"}
    device_ip = {p.name: p.ip for p in peers if p.kind == "device" and p.name}
    dev_groups: dict[IPv4Address, str] = {}
    for name, group in (device_groups or {}).items():
        ip = device_ip.get(name)
        if ip is not None:
            dev_groups[ip] = group
    client_groups: dict[IPv4Address, tuple[str, ...]] = {}
    client_ends: dict[IPv4Address, int] = {}
    for e in entries:
        peer = by_key.get(e.public_key)
        if peer is None:
            continue
        if e.groups is not None:
            client_groups[peer.ip] = e.groups
        if e.expires is not None:
            client_ends[peer.ip] = e.expires
    group_grants: list[tuple[IPv4Address, str, int]] = []
    device_grants: list[tuple[IPv4Address, IPv4Address, int]] = []
    for g in grants:
        client = by_key.get(g.client)
        if client is None or not g.live(now):
            continue
        if g.group is not None:
            group_grants.append((client.ip, g.group, g.end))
        elif g.device is not None and g.device in device_ip:
            device_grants.append((client.ip, device_ip[g.device], g.end))
    return AccessRules(dev_groups, client_groups, client_ends, tuple(group_grants),
                       tuple(device_grants))


def earliest_end(entries: Iterable[ClientEntry], now: float) -> int | None:
    """The next client expiry after ``now`` (grants end in the kernel by themselves)."""
    ends = [e.expires for e in entries if e.expires is not None and e.expires > now]
    return min(ends) if ends else None


# --------------------------------------------------------------------------- grants


@dataclass
class AccessGrants:
    """``server access grant/revoke/list``.

    ``registry`` and ``devices`` read the client registry and the last good
    device list; ``groups`` the learned device groups; ``apply`` puts one
    ``nft -f`` statement into the live table (returns False when it could
    not, e.g. no table yet) and ``reapply`` re-renders the whole table.
    """

    store: GrantStore
    journal: Journal
    registry: Callable[[], Registry]
    devices: Callable[[], list[WireguardIp] | None]
    groups: DeviceGroups
    table: str
    apply: Callable[[str], bool]
    reapply: Callable[[], object]
    actor: str = "daemon"
    clock: Callable[[], float] = field(default=time.time)

    def _client(self, name: str | None, public_key: str | None) -> ClientEntry:
        if (name is None) == (public_key is None):
            raise BadInput("give exactly one of the client's name (--name) or public key "
                           "(--public-key)", code="usage")
        reg = self.registry()
        if public_key is not None:
            found = reg.find(public_key=Key.parse(public_key, what="public key"))
            what = f"public key {public_key}"
        else:
            assert name is not None
            found = reg.find(name=validate_name(name, what="client name"))
            what = f"name {name!r}"
        if not found:
            raise NotFound(f"no client with {what} in the registry", code="no_client",
                           hint="see `fiovpn server clients list`")
        return found[0]

    def _target(self, group: str | None, device: str | None
                ) -> tuple[str | None, str | None, IPv4Address | None]:
        if (group is None) == (device is None):
            raise BadInput("give exactly one of --group G or --device D", code="usage")
        if group is not None:
            validate_name(group, what="device group")
            if self.groups.groups is None:
                raise BadInput(f"the server does not know the factory's device groups yet, "
                               f"so group {group!r} cannot be checked",
                               code="unknown_group",
                               hint="start the daemon (it reads the device list), or grant "
                                    "--device D")
            check_groups([group], self.groups)
            return group, None, None
        assert device is not None
        validate_name(device, what="device name")
        rows = self.devices() or []
        row = next((r for r in rows if r.name == device), None)
        if row is None:
            raise NotFound(f"unknown device {device!r}: not in the factory's device list",
                           code="not_found", hint="see `fiovpn devices list`")
        return None, device, row.ip

    def grant(self, *, name: str | None = None, public_key: str | None = None,
              group: str | None = None, device: str | None = None,
              duration: str) -> dict[str, Any]:
        seconds = parse_duration(duration, what="--for")
        client = self._client(name, public_key)
        group, device, device_ip = self._target(group, device)
        now = self.clock()
        # whole seconds, rounded up: a grant --for 5s lasts at least 5 s
        grant = Grant(client.public_key, client.name, group, device,
                      math.ceil(now) + seconds, int(now), self.actor)
        self.store.update(lambda gs: upsert(gs, grant), now=now)
        statement = render_grant(self.table, client.ip, end=grant.end, now=self.clock(),
                                 group=group, device=device_ip)
        if client.expired(now) or not self._apply(statement):
            self.reapply()
        self.journal.try_append(actor=self.actor, action="grant",
                                target=client.name or str(client.public_key),
                                detail={"group": group, "device": device,
                                        "for_s": seconds,
                                        "expires": format_timestamp(grant.end)})
        return grant.to_json()

    def _apply(self, statement: str) -> bool:
        try:
            return self.apply(statement)
        except FiovpnError as exc:
            log.info("grant not applied to the live table directly (%s): re-applying it", exc)
            return False

    def revoke(self, *, name: str | None = None, public_key: str | None = None,
               group: str | None = None, device: str | None = None) -> dict[str, Any]:
        client = self._client(name, public_key)
        if (group is None) == (device is None):
            raise BadInput("give exactly one of --group G or --device D", code="usage")
        # checked as a grant checks them: the name goes into the error and the journal
        if group is not None:
            validate_name(group, what="device group")
        else:
            validate_name(str(device), what="device name")
        now = self.clock()
        gone: list[Grant] = []

        def drop(grants: list[Grant]) -> list[Grant]:
            for g in grants:
                if g.client == client.public_key and g.target == (
                        ("group", group) if group is not None else ("device", device)):
                    gone.append(g)
            if not gone:
                # raised under the lock, before the store saves: a refused revoke
                # neither creates grants.json nor rewrites it
                what = f"group {group}" if group is not None else f"device {device}"
                raise NotFound(f"{client.name or client.public_key} has no live grant to "
                               f"{what}", code="no_grant",
                               hint="see `fiovpn server access list`")
            return [g for g in grants if g not in gone]
        self.store.update(drop, now=now)
        device_ip = None
        if device is not None:
            row = next((r for r in self.devices() or [] if r.name == device), None)
            device_ip = row.ip if row else None
        fast = group is not None or device_ip is not None
        if not fast or not self._apply(render_revoke(self.table, client.ip, group=group,
                                                     device=device_ip)):
            self.reapply()
        self.journal.try_append(actor=self.actor, action="revoke",
                                target=client.name or str(client.public_key),
                                detail={"group": group, "device": device})
        return gone[0].to_json(now)

    def list(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [g.to_json(now) for g in sorted(self.store.live(now), key=lambda g: g.end)]


# --------------------------------------------------------------------------- daemon


@dataclass
class AccessState:
    """The server's section-11 state next to a ``ServerContext``."""

    groups: DeviceGroups
    grants: GrantStore
    journal: Journal
    next_end: int | None = None  # the next client expiry: the daemon wakes for it
    expired_seen: set[Key] = field(default_factory=set)  # expiries already journaled

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> AccessState:
        return cls(DeviceGroups.in_state_dir(state_dir), GrantStore.in_state_dir(state_dir),
                   Journal.in_state_dir(state_dir))

    def live_grants(self, now: float) -> list[Grant]:
        try:
            return self.grants.live(now)
        except FiovpnError as exc:
            log.warning("%s: no grant applied", exc)
            return []

    def refresh_groups(self, api: FactoryApi, entries: Iterable[ClientEntry], now: float
                       ) -> str | None:
        """Learn the device groups when they are needed (or never learned); an
        error message when the device list could not be read (groups kept)."""
        if self.groups.groups is not None and not groups_in_use(entries,
                                                                self.live_grants(now)):
            return None
        try:
            if self.groups.learn(api, now):
                log.info("device groups learned from the factory: %d devices in %d groups",
                         len(self.groups.groups or {}), len(self.groups.known()))
        except FiovpnError as exc:
            return f"cannot read the factory's device list (device groups kept): {exc}"
        except OSError as exc:
            return f"cannot write {self.groups.path}: {exc}"
        return None

    def split_expired(self, entries: list[ClientEntry], now: float
                      ) -> tuple[list[ClientEntry], list[ClientEntry]]:
        """``(live, expired)`` clients; remembers the next expiry."""
        self.next_end = earliest_end(entries, now)
        live = [e for e in entries if not e.expired(now)]
        return live, [e for e in entries if e.expired(now)]

    def record(self, changes: Iterable[Any], expired: Iterable[ClientEntry], *,
               write: bool = True) -> None:
        """Journal each peer added or removed and each client newly expired (with
        ``write`` False only remember which expiries were seen)."""
        lines: list[dict[str, Any]] = []
        now_expired = {e.public_key for e in expired}
        for e in expired:
            if e.public_key not in self.expired_seen:
                lines.append({"action": "expire", "target": e.name or str(e.public_key),
                              "detail": {"ip": str(e.ip),
                                         "expires": format_timestamp(e.expires or 0)}})
        self.expired_seen = now_expired
        for c in changes:
            if c.action not in ("add", "remove"):
                continue
            lines.append({"action": f"peer_{c.action}", "target": c.label,
                          "detail": {"public_key": c.public_key.text, "reason": c.reason}})
        if lines and write:
            self.journal.append_many(DAEMON, lines)

