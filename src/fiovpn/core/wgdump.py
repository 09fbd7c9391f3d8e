"""Parse ``wg show <interface> dump``: one interface line, then one line per peer.

Fields are tab-separated; ``(none)`` marks an empty value. The interface line
holds the private key, which is never kept: only whether one is set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import NamedTuple

from fiovpn.core.keys import Key, public_key
from fiovpn.errors import BadInput

NONE = "(none)"


@dataclass(frozen=True, slots=True)
class InterfaceDump:
    public_key: Key | None
    listen_port: int | None
    fwmark: int | None
    has_private_key: bool


class PeerDump(NamedTuple):
    """One peer line (immutable: a dump object is reused while the interface is
    idle). A named tuple, not a frozen dataclass: 50,000 are made per changed
    dump, and a frozen dataclass's ``__init__`` costs ~4x a tuple's."""

    public_key: Key
    endpoint: str | None
    allowed_ips: tuple[str, ...]
    latest_handshake: int  # unix seconds, 0 = never
    rx: int
    tx: int
    persistent_keepalive: int | None
    has_preshared_key: bool = False

    @property
    def single_ip(self) -> IPv4Address | None:
        """The one address this peer may use, when its allowed IPs are one /32."""
        if len(self.allowed_ips) == 1 and self.allowed_ips[0].endswith("/32"):
            try:
                return IPv4Address(self.allowed_ips[0][:-3])
            except ValueError:
                return None
        return None


@dataclass(frozen=True, slots=True)
class WgDump:
    interface: InterfaceDump
    peers: tuple[PeerDump, ...]
    _by_text: dict[str, PeerDump] | None = field(default=None, init=False, repr=False,
                                                 compare=False)

    def by_text(self) -> dict[str, PeerDump]:
        """The peers by public key text, made once per dump (the plan and the status
        rows both look every desired peer up in it)."""
        index = self._by_text
        if index is None:
            index = {p.public_key.text: p for p in self.peers}
            object.__setattr__(self, "_by_text", index)
        return index

    def peer(self, key: Key) -> PeerDump | None:
        for p in self.peers:
            if p.public_key == key:
                return p
        return None

    def by_key(self) -> dict[Key, PeerDump]:
        return {p.public_key: p for p in self.peers}


def _opt(value: str) -> str | None:
    return None if value == NONE else value


def _int(value: str, what: str, n: int) -> int:
    try:
        return int(value)
    except ValueError:
        raise BadInput(f"wg dump line {n}: {what} {value!r} is not a number",
                       code="bad_wg_dump") from None


def _key(value: str, what: str, n: int) -> Key:
    try:
        return Key(value)
    except ValueError:
        raise BadInput(f"wg dump line {n}: invalid {what} {value!r}", code="bad_wg_dump") from None


def _off(value: str, what: str, n: int) -> int | None:
    return None if value in ("off", "0", NONE) else _int(value, what, n)


def parse_dump(text: str) -> WgDump:
    """Parse the output of ``wg show <if> dump`` (a single interface)."""
    return parse_lines(text.split("\n"))


def parse_lines(all_lines: list[str]) -> WgDump:
    """``parse_dump`` of the output already split at newlines."""
    lines = [ln for ln in all_lines if ln and not ln.isspace()]
    if not lines:
        raise BadInput("wg dump is empty: is the interface up?", code="bad_wg_dump")
    head = lines[0].split("\t")
    if len(head) != 4:
        raise BadInput(f"wg dump line 1: expected 4 fields, got {len(head)}", code="bad_wg_dump")
    priv = _opt(head[0])
    pub: Key | None = None
    if _opt(head[1]) is not None:
        pub = _key(head[1], "public key", 1)
    elif priv is not None:
        try:
            pub = public_key(Key(priv))
        except ValueError:  # never echo private key material
            raise BadInput("wg dump line 1: invalid private key", code="bad_wg_dump") from None
    port = _int(head[2], "listen port", 1)
    iface = InterfaceDump(
        public_key=pub,
        listen_port=port or None,
        fwmark=_off(head[3], "fwmark", 1),
        has_private_key=priv is not None,
    )
    peers = []
    shared = Key.shared
    new = tuple.__new__  # PeerDump(...) without its Python-level __new__
    for n, line in enumerate(lines[1:], start=2):
        f = line.split("\t")
        if len(f) != 8:
            raise BadInput(f"wg dump line {n}: expected 8 fields, got {len(f)}",
                           code="bad_wg_dump")
        # The hot loop at 50,000 peers: the usual values first, the checks after.
        key_text, psk, endpoint, allowed, handshake, rx, tx, keepalive = f
        try:
            key = shared(key_text)
        except ValueError:
            raise BadInput(f"wg dump line {n}: invalid peer public key {key_text!r}",
                           code="bad_wg_dump") from None
        try:
            numbers = int(handshake), int(rx), int(tx)
        except ValueError:
            numbers = (_int(handshake, "latest handshake", n), _int(rx, "rx bytes", n),
                       _int(tx, "tx bytes", n))
        peers.append(new(PeerDump, (
            key,
            None if endpoint == NONE else endpoint,
            (allowed,) if "," not in allowed and allowed != NONE and allowed
            else tuple(a for a in allowed.split(",") if a) if allowed != NONE else (),
            numbers[0], numbers[1], numbers[2],
            None if keepalive in ("off", "0", NONE) else _int(keepalive,
                                                             "persistent keepalive", n),
            psk != NONE,
        )))
    return WgDump(iface, tuple(peers))
