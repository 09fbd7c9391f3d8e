"""The desired peers of the server: enabled devices from the factory plus
registry clients, each with exactly its own ``/32``.

Any IP or public key held by two peers is a conflict: the conflicting clients
are not applied, a device is kept (the first by name when two devices clash),
and the conflict is reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any, Literal, NamedTuple, Protocol

from fiovpn.core.addresses import VpnNetwork
from fiovpn.core.keys import Key
from fiovpn.core.registry import ClientEntry

PeerKind = Literal["device", "client"]
_TEXT: dict[int, str] = {}  # int(ip) -> "a.b.c.d"
_MEMO_MAX = 1 << 17


def ip_text(ip: IPv4Address) -> str:
    """``str(ip)``, remembered: ``IPv4Address.__str__`` is slow pure Python and a pass
    at 50,000 peers needs each address as text several times."""
    n = int(ip)
    text = _TEXT.get(n)
    if text is None:
        if len(_TEXT) >= _MEMO_MAX:
            _TEXT.clear()
        text = _TEXT[n] = str(ip)
    return text
DISABLED = "VPN disabled for this device"  # normal: reported in status, not logged


class DeviceRow(Protocol):
    """One row of the factory's ``wireguard-ips`` (``adapters.factory_api.WireguardIp``)."""

    @property
    def name(self) -> str: ...
    @property
    def ip(self) -> IPv4Address | None: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def pubkey(self) -> Key | None: ...


class Peer(NamedTuple):
    """A peer the server wants (immutable). A named tuple, not a frozen dataclass:
    a changed device list makes 50,000 of them, and a frozen dataclass's
    ``__init__`` costs ~4x a tuple's."""

    kind: PeerKind
    name: str | None
    public_key: Key
    ip: IPv4Address

    @property
    def allowed_ip(self) -> str:
        # str(IPv4Address) is slow pure Python; a pass asks for 50,000 of these
        # (the "/32" text is not kept: a memo of it would hold megabytes at 50,000)
        return f"{ip_text(self.ip)}/32"

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name!r}" if self.name else f"{self.kind} {self.ip}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "ip": ip_text(self.ip),
                "public_key": self.public_key.text}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Peer:
        kind = data["kind"]
        if kind not in ("device", "client"):
            raise ValueError(f"bad peer kind {kind!r}")
        return cls(kind, data.get("name"), Key(data["public_key"]), IPv4Address(data["ip"]))


@dataclass(frozen=True, slots=True)
class PeerConflict:
    """An IP or key claimed by several peers; ``kept`` is the one applied (if any)."""

    what: Literal["ip", "public_key"]
    value: str
    peers: tuple[Peer, ...]
    kept: Peer | None

    @property
    def message(self) -> str:
        who = ", ".join(p.label for p in self.peers)
        label = "IP" if self.what == "ip" else "public key"
        outcome = (f"kept {self.kept.label}, skipped the others" if self.kept
                   else "none of them applied")
        return f"{label} {self.value} is claimed by {who}: {outcome}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.what, "value": self.value,
                "peers": [p.to_json() for p in self.peers],
                "kept": self.kept.to_json() if self.kept else None,
                "message": self.message}


@dataclass(frozen=True, slots=True)
class SkippedPeer:
    kind: PeerKind
    name: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class DesiredPeers:
    peers: tuple[Peer, ...]
    conflicts: tuple[PeerConflict, ...] = ()
    skipped: tuple[SkippedPeer, ...] = field(default=())

    @property
    def devices(self) -> list[Peer]:
        return [p for p in self.peers if p.kind == "device"]


@dataclass(frozen=True, slots=True)
class _Hosts:
    """Host-address test of a subnet on plain ints (``ip in network`` is slow
    enough to show at 5,000 peers per poll)."""

    low: int
    high: int
    server: int

    @classmethod
    def of(cls, network: VpnNetwork) -> _Hosts:
        return cls(int(network.subnet.network_address), int(network.subnet.broadcast_address),
                   int(network.server))


def _check_device(row: DeviceRow, network: VpnNetwork, hosts: _Hosts) -> str | None:
    if not row.enabled:
        return DISABLED
    if row.pubkey is None:
        return "device has not published a WireGuard public key"
    if row.ip is None:
        return "device has no VPN address"
    return _address_problem(row.ip, network, hosts)


def _address_problem(ip: IPv4Address, network: VpnNetwork, hosts: _Hosts) -> str | None:
    """A peer address (a client's, or a device's) the VPN cannot route, or None."""
    n = int(ip)
    if not hosts.low < n < hosts.high:
        return f"address {ip} is outside the VPN subnet {network.subnet}"
    if n == hosts.server:
        return f"address {ip} is the server's own address"
    return None


def _by_name(row: DeviceRow) -> str:
    return row.name


def desired_peers(devices: Iterable[DeviceRow], clients: Iterable[ClientEntry],
                  network: VpnNetwork, *, server_key: Key | None = None) -> DesiredPeers:
    """Enabled devices + registry clients, conflicts resolved (pure)."""
    skipped: list[SkippedPeer] = []
    candidates: list[Peer] = []
    hosts = _Hosts.of(network)
    for row in sorted(devices, key=_by_name):
        reason = _check_device(row, network, hosts)
        if reason is not None:
            skipped.append(SkippedPeer("device", row.name, reason))
            continue
        assert row.pubkey is not None and row.ip is not None
        candidates.append(Peer("device", row.name, row.pubkey, row.ip))
    for entry in clients:
        reason = _address_problem(entry.ip, network, hosts)
        if reason is not None:
            skipped.append(SkippedPeer("client", entry.name, reason))
            continue
        candidates.append(Peer("client", entry.name, entry.public_key, entry.ip))
    if server_key is not None:
        for p in [p for p in candidates if p.public_key.text == server_key.text]:
            candidates.remove(p)
            skipped.append(SkippedPeer(p.kind, p.name, "uses the server's own public key"))

    # Plain ints and key texts as dict keys: IPv4Address and Key hash in Python.
    by_ip: dict[int, list[Peer]] = {}
    by_key: dict[str, list[Peer]] = {}
    for p in candidates:
        n = int(p.ip)
        same_ip = by_ip.get(n)
        if same_ip is None:
            by_ip[n] = [p]
        else:
            same_ip.append(p)
        text = p.public_key.text
        same_key = by_key.get(text)
        if same_key is None:
            by_key[text] = [p]
        else:
            same_key.append(p)
    dropped: set[int] = set()
    conflicts: list[PeerConflict] = []
    groups: list[tuple[Literal["ip", "public_key"], str, list[Peer]]] = [
        ("ip", str(group[0].ip), group) for group in by_ip.values() if len(group) > 1]
    groups += [("public_key", key, group) for key, group in by_key.items()
               if len(group) > 1]
    for what, value, group in groups:
        kept = next((p for p in group if p.kind == "device"), None)
        for p in group:
            if p is not kept:
                dropped.add(id(p))
        conflicts.append(PeerConflict(what, value, tuple(group), kept))
    # A device kept in one conflict may lose another (two devices on one key
    # and one IP each): only peers never dropped are applied.
    peers = tuple(p for p in candidates if id(p) not in dropped)
    conflicts = [c if c.kept is None or id(c.kept) not in dropped
                 else PeerConflict(c.what, c.value, c.peers, None) for c in conflicts]
    return DesiredPeers(peers, tuple(conflicts), tuple(skipped))
