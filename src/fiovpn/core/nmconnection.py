"""NetworkManager keyfiles (``*.nmconnection``): parse, edit, render, keeping the rest.

A keyfile is a GLib key file: ``[group]`` headers, ``key=value`` lines, ``#``
comment lines. The document keeps every line as written, so an edit changes
only the line it touches and ``render(parse(text)) == text``.

On a device, fioconfig's ``factory-config-vpn`` handler writes
``factory-vpn0.nmconnection`` with one ``[wireguard-peer.<server pubkey>]``
group whose ``allowed-ips`` is the server's address alone. Device-to-device
traffic needs that widened to the VPN subnet (:func:`widen_server_peer`);
:func:`restore_server_peer` puts back what the handler wrote.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_network

from fiovpn.errors import BadInput

PEER_PREFIX = "wireguard-peer."


@dataclass(frozen=True, slots=True)
class Line:
    raw: str
    key: str | None = None  # None: blank or comment line
    value: str = ""


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    header: str
    lines: tuple[Line, ...] = ()

    def get(self, key: str) -> str | None:
        for line in self.lines:
            if line.key == key:
                return line.value
        return None

    def keys(self) -> list[str]:
        return [ln.key for ln in self.lines if ln.key is not None]

    def with_value(self, key: str, value: str | None) -> Group:
        """Set ``key`` in place (or after the group's last key), or drop it (None)."""
        if value is not None and ("\n" in value or "\r" in value):
            raise BadInput(f"invalid value for {key}: no newlines", code="bad_keyfile")
        out: list[Line] = []
        done = False
        for line in self.lines:
            if line.key == key:
                if value is not None and not done:
                    out.append(Line(f"{key}={value}", key, value))
                done = True
                continue
            out.append(line)
        if value is not None and not done:
            last = max((i for i, ln in enumerate(out) if ln.key is not None), default=-1)
            out.insert(last + 1, Line(f"{key}={value}", key, value))
        return dataclasses.replace(self, lines=tuple(out))


@dataclass(frozen=True, slots=True)
class Keyfile:
    preamble: tuple[Line, ...] = ()
    groups: tuple[Group, ...] = ()

    def group(self, name: str) -> Group | None:
        for g in self.groups:
            if g.name == name:
                return g
        return None

    def get(self, group: str, key: str) -> str | None:
        g = self.group(group)
        return g.get(key) if g else None

    def with_group(self, group: Group) -> Keyfile:
        """Replace the group of that name, or append it."""
        groups = list(self.groups)
        for i, g in enumerate(groups):
            if g.name == group.name:
                groups[i] = group
                return dataclasses.replace(self, groups=tuple(groups))
        return dataclasses.replace(self, groups=(*groups, group))

    def with_value(self, group: str, key: str, value: str | None) -> Keyfile:
        g = self.group(group) or Group(group, f"[{group}]")
        return self.with_group(g.with_value(key, value))

    @property
    def peers(self) -> tuple[Group, ...]:
        return tuple(g for g in self.groups if g.name.startswith(PEER_PREFIX))

    def render(self) -> str:
        lines = [ln.raw for ln in self.preamble]
        for g in self.groups:
            lines.append(g.header)
            lines.extend(ln.raw for ln in g.lines)
        return "".join(f"{ln}\n" for ln in lines)


def parse(text: str, *, source: str = "keyfile") -> Keyfile:
    """Parse a keyfile; a line that is neither a group, a key nor a comment is an error."""
    preamble: list[Line] = []
    groups: list[Group] = []
    current: tuple[str, str] | None = None
    body: list[Line] = []
    seen: set[str] = set()

    def close() -> None:
        if current is not None:
            groups.append(Group(current[0], current[1], tuple(body)))

    for n, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            (body if current else preamble).append(Line(raw))
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            name = stripped[1:-1]
            if not name or name in seen:
                raise BadInput(f"{source} line {n}: empty or repeated group [{name}]",
                               code="bad_keyfile")
            seen.add(name)
            close()
            current, body = (name, raw), []
            continue
        key, sep, value = raw.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BadInput(f"{source} line {n}: expected key=value, got {stripped!r}",
                           code="bad_keyfile")
        if current is None:
            raise BadInput(f"{source} line {n}: {key!r} comes before any [group]",
                           code="bad_keyfile")
        body.append(Line(raw, key, value.lstrip()))
    close()
    return Keyfile(tuple(preamble), tuple(groups))


# --- the factory VPN connection -------------------------------------------------------


def split_list(value: str) -> list[str]:
    """A keyfile list (``a;b;``) as items."""
    return [item.strip() for item in value.split(";") if item.strip()]


def _networks(value: str) -> list[IPv4Network]:
    out = []
    for item in split_list(value):
        try:
            net = ip_network(item, strict=False)
        except ValueError:
            raise BadInput(f"allowed-ips item {item!r} is not an IP network",
                           code="bad_keyfile") from None
        if isinstance(net, IPv4Network):
            out.append(net)
    return out


def server_peer(doc: Keyfile, subnet: IPv4Network) -> Group:
    """The ``[wireguard-peer.*]`` group of the server: the one peer whose allowed-ips
    lie inside the VPN subnet (the factory handler writes exactly one)."""
    candidates = [g for g in doc.peers
                  if any(net.subnet_of(subnet) for net in _networks(g.get("allowed-ips") or ""))]
    if not candidates and len(doc.peers) == 1:
        candidates = list(doc.peers)
    if len(candidates) != 1:
        found = ", ".join(g.name for g in doc.peers) or "none"
        raise BadInput(f"cannot tell the server peer in the VPN connection "
                       f"(wireguard-peer groups: {found}); expected exactly one peer "
                       f"routing into {subnet}", code="bad_keyfile")
    return candidates[0]


def peer_allowed_ips(doc: Keyfile, subnet: IPv4Network) -> list[IPv4Network]:
    return _networks(server_peer(doc, subnet).get("allowed-ips") or "")


def is_widened(doc: Keyfile, subnet: IPv4Network) -> bool:
    """True when the server peer routes the whole VPN subnet (device-to-device on)."""
    return any(subnet.subnet_of(net) for net in peer_allowed_ips(doc, subnet))


def widen_server_peer(doc: Keyfile, subnet: IPv4Network) -> Keyfile:
    """Route the whole VPN subnet through the server peer. Already widened: unchanged."""
    peer = server_peer(doc, subnet)
    if is_widened(doc, subnet):
        return doc
    return doc.with_group(peer.with_value("allowed-ips", f"{subnet};"))


def restore_server_peer(doc: Keyfile, server_ip: IPv4Address,
                        subnet: IPv4Network | None = None) -> Keyfile:
    """Route only the server's own address through it, as the factory handler writes it
    (``allowed-ips=<server ip>``). Already so: unchanged."""
    net = subnet if subnet is not None else IPv4Network(f"{server_ip}/24", strict=False)
    peer = server_peer(doc, net)
    current = _networks(peer.get("allowed-ips") or "")
    if current == [IPv4Network(f"{server_ip}/32")]:
        return doc
    return doc.with_group(peer.with_value("allowed-ips", str(server_ip)))
