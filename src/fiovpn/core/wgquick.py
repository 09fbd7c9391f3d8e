"""wg-quick config files: parse, edit and render without losing what a person wrote.

The document keeps every line (comments, blank lines, unknown keys, key order
and spelling) so ``render(parse(text)) == text`` for any file wg-quick reads,
and an edit touches only the line it changes. Values of the keys fiovpn knows
are validated when parsed; :class:`ClientConfig` is the typed view.

wg-quick itself treats keys case-insensitively and strips ``#`` comments
anywhere on a line; this parser does the same.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_interface, ip_network

from fiovpn.core.keys import Key
from fiovpn.errors import BadInput

INTERFACE = "Interface"
PEER = "Peer"
SERVER_ADDRESS_MARK = "fiovpn:server-address"
_SECTION = re.compile(r"^\s*\[\s*([A-Za-z]+)\s*\]\s*(#.*)?$")
_CONFIG_NAME = re.compile(r"^[A-Za-z0-9_=+.-]{1,15}$")

# Canonical spelling of the keys wg-quick understands, by section.
_KEYS: dict[str, tuple[str, ...]] = {
    INTERFACE: ("PrivateKey", "Address", "ListenPort", "DNS", "MTU", "Table", "FwMark",
                "PreUp", "PostUp", "PreDown", "PostDown", "SaveConfig"),
    PEER: ("PublicKey", "PresharedKey", "Endpoint", "AllowedIPs", "PersistentKeepalive"),
}


@dataclass(frozen=True, slots=True)
class Line:
    """One line of the file. ``key`` is None for blank and comment-only lines."""

    raw: str
    key: str | None = None
    value: str = ""


@dataclass(frozen=True, slots=True)
class Section:
    name: str  # canonical: "Interface" or "Peer"
    header: str  # the header line as written
    lines: tuple[Line, ...] = ()

    def get(self, key: str) -> str | None:
        """The value of the first ``key`` line (case-insensitive), or None."""
        low = key.lower()
        for line in self.lines:
            if line.key is not None and line.key.lower() == low:
                return line.value
        return None

    def comment_value(self, mark: str) -> str | None:
        """The value of a ``# mark = value`` comment line, or None."""
        for line in self.lines:
            text = line.raw.strip()
            if line.key is None and text.startswith("#"):
                k, sep, v = text.lstrip("#").partition("=")
                if sep and k.strip() == mark:
                    return v.strip()
        return None

    def with_value(self, key: str, value: str | None) -> Section:
        """Set ``key`` (replacing the first line of it, dropping repeats), or remove
        it when ``value`` is None. A new key goes after the section's last key line."""
        canonical = _canonical(self.name, key)
        _check_value(self.name, canonical, value)
        low = key.lower()
        out: list[Line] = []
        done = False
        for line in self.lines:
            if line.key is not None and line.key.lower() == low:
                if value is not None and not done:
                    out.append(Line(f"{line.key} = {value}", line.key, value))
                done = True
                continue
            out.append(line)
        if value is not None and not done:
            last = max((i for i, ln in enumerate(out) if ln.key is not None), default=-1)
            out.insert(last + 1, Line(f"{canonical} = {value}", canonical, value))
        return dataclasses.replace(self, lines=tuple(out))

    def with_comment(self, mark: str, value: str) -> Section:
        """Set a ``# mark = value`` comment line (wg-quick ignores it)."""
        text = f"# {mark} = {value}"
        out: list[Line] = []
        done = False
        for line in self.lines:
            stripped = line.raw.strip()
            if line.key is None and stripped.startswith("#"):
                k, sep, _v = stripped.lstrip("#").partition("=")
                if sep and k.strip() == mark:
                    if not done:
                        out.append(Line(text))
                    done = True
                    continue
            out.append(line)
        if not done:
            last = max((i for i, ln in enumerate(out) if ln.key is not None), default=-1)
            out.insert(last + 1, Line(text))
        return dataclasses.replace(self, lines=tuple(out))


@dataclass(frozen=True, slots=True)
class WgQuickConfig:
    """A whole wg-quick file: lines before the first section, then the sections."""

    preamble: tuple[Line, ...] = ()
    sections: tuple[Section, ...] = ()

    @property
    def interface(self) -> Section:
        for s in self.sections:
            if s.name == INTERFACE:
                return s
        raise BadInput("the config has no [Interface] section", code="bad_config")

    @property
    def peers(self) -> tuple[Section, ...]:
        return tuple(s for s in self.sections if s.name == PEER)

    def replace_section(self, index: int, section: Section) -> WgQuickConfig:
        secs = list(self.sections)
        secs[index] = section
        return dataclasses.replace(self, sections=tuple(secs))

    def with_interface(self, key: str, value: str | None) -> WgQuickConfig:
        for i, s in enumerate(self.sections):
            if s.name == INTERFACE:
                return self.replace_section(i, s.with_value(key, value))
        raise BadInput("the config has no [Interface] section", code="bad_config")

    def with_peer(self, index: int, key: str, value: str | None) -> WgQuickConfig:
        """Set ``key`` on the ``index``-th [Peer] section."""
        seen = -1
        for i, s in enumerate(self.sections):
            if s.name == PEER:
                seen += 1
                if seen == index:
                    return self.replace_section(i, s.with_value(key, value))
        raise BadInput(f"the config has no peer #{index + 1}", code="bad_config")

    def with_section(self, section: Section) -> WgQuickConfig:
        return dataclasses.replace(self, sections=(*self.sections, section))

    def render(self) -> str:
        lines = [ln.raw for ln in self.preamble]
        for s in self.sections:
            lines.append(s.header)
            lines.extend(ln.raw for ln in s.lines)
        return "".join(f"{ln}\n" for ln in lines)


def parse(text: str, *, source: str = "config") -> WgQuickConfig:
    """Parse a wg-quick file; a bad line is a ``BadInput`` naming its line number."""
    preamble: list[Line] = []
    sections: list[Section] = []
    current: tuple[str, str] | None = None
    body: list[Line] = []

    def close() -> None:
        if current is not None:
            sections.append(Section(current[0], current[1], tuple(body)))

    for n, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.split("#", 1)[0].strip()
        header = _SECTION.match(raw)
        if header:
            name = header.group(1)
            canonical = next((s for s in _KEYS if s.lower() == name.lower()), None)
            if canonical is None:
                raise BadInput(f"{source} line {n}: unknown section [{name}] "
                               "(expected [Interface] or [Peer])", code="bad_config")
            close()
            current, body = (canonical, raw), []
            continue
        if not stripped:
            (body if current else preamble).append(Line(raw))
            continue
        key, sep, value = stripped.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            secret = any(k.lower() in stripped.lower() for k in SECRET_KEYS)
            shown = "a line that is not shown (it may hold a key)" if secret else \
                repr(raw.strip())
            raise BadInput(f"{source} line {n}: expected `Key = Value`, got {shown}",
                           code="bad_config")
        if current is None:
            raise BadInput(f"{source} line {n}: `{key}` comes before any [Interface] "
                           "or [Peer] section", code="bad_config")
        try:
            _check_value(current[0], _canonical(current[0], key), value)
        except BadInput as exc:
            raise BadInput(f"{source} line {n}: {exc.message}", code=exc.code,
                           hint=exc.hint) from None
        body.append(Line(raw, key, value))
    close()
    doc = WgQuickConfig(tuple(preamble), tuple(sections))
    if sum(1 for s in sections if s.name == INTERFACE) != 1:
        raise BadInput(f"{source}: expected exactly one [Interface] section", code="bad_config")
    return doc


def _canonical(section: str, key: str) -> str:
    for known in _KEYS[section]:
        if known.lower() == key.lower():
            return known
    return key


SECRET_KEYS = ("PrivateKey", "PresharedKey")


def parse_secret_key(value: str, *, what: str) -> Key:
    """``Key.parse`` for a secret: a damaged private key is still mostly a secret, and
    error messages reach terminals, logs and AI assistants, so its value is not shown."""
    try:
        return Key.parse(value, what=what)
    except BadInput as exc:
        reason = exc.message.rpartition(": ")[2]
        raise BadInput(f"invalid WireGuard {what} ({reason}); its value is not shown",
                       code=exc.code, hint=exc.hint) from None


def _check_value(section: str, key: str, value: str | None) -> None:
    """Validate the value of a key fiovpn knows; unknown keys pass through."""
    if value is None:
        return
    if "\n" in value or "#" in value:
        shown = "(value not shown)" if key in SECRET_KEYS else repr(value)
        raise BadInput(f"invalid {key} {shown}: no newlines or '#'", code="bad_config")
    if key in SECRET_KEYS:
        parse_secret_key(value, what=key)
    elif key == "PublicKey":
        Key.parse_public(value, what=key)
    elif key == "Address":
        for item in _split(value):
            parse_interface(item, what="Address")
    elif key == "AllowedIPs":
        for item in _split(value):
            parse_network(item, what="AllowedIPs")
    elif key == "Endpoint":
        from fiovpn.core.factory_files import parse_endpoint  # its regexes: only here

        parse_endpoint(value)
    elif key in ("ListenPort", "MTU", "PersistentKeepalive"):
        upper = {"ListenPort": 65535, "MTU": 65535, "PersistentKeepalive": 65535}[key]
        if value == "off" and key == "PersistentKeepalive":
            return
        if not value.isdigit() or int(value) > upper:
            raise BadInput(f"invalid {key} {value!r}: expected a number 0-{upper}",
                           code="bad_config")


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_interface(value: str, *, what: str = "address") -> IPv4Interface:
    """``10.42.42.200/32`` (a bare IP means /32)."""
    try:
        iface = ip_interface(value.strip() if "/" in value else f"{value.strip()}/32")
    except ValueError:
        raise BadInput(f"invalid {what} {value!r}: expected an IPv4 address like "
                       "10.42.42.200/32", code="bad_ip") from None
    if not isinstance(iface, IPv4Interface):
        raise BadInput(f"invalid {what} {value!r}: only IPv4 is supported", code="bad_ip")
    return iface


def parse_network(value: str, *, what: str = "network") -> IPv4Network:
    try:
        net = ip_network(value.strip(), strict=False)
    except ValueError:
        raise BadInput(f"invalid {what} {value!r}: expected a network like 10.42.42.0/24",
                       code="bad_ip") from None
    if not isinstance(net, IPv4Network):
        raise BadInput(f"invalid {what} {value!r}: only IPv4 is supported", code="bad_ip")
    return net


def interface_name(config_path_name: str) -> str:
    """The interface wg-quick creates for a config file: its name without ``.conf``."""
    if not config_path_name.endswith(".conf"):
        raise BadInput(f"client config {config_path_name!r} must end in .conf "
                       "(wg-quick names the interface after the file)", code="bad_config")
    name = config_path_name[: -len(".conf")]
    if not _CONFIG_NAME.fullmatch(name):
        raise BadInput(f"client config name {name!r} cannot be an interface name: "
                       "1-15 characters of letters, digits, '_=+.-'", code="bad_config")
    return name


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """The typed view of a client config: the key, address and the server peer."""

    private_key: Key | None
    addresses: tuple[IPv4Interface, ...]
    server_public_key: Key | None
    endpoint: str | None
    allowed_ips: tuple[IPv4Network, ...]
    keepalive: int | None
    server_address: IPv4Address | None  # from the fiovpn comment in [Peer], if any

    @property
    def address(self) -> IPv4Address | None:
        return self.addresses[0].ip if self.addresses else None


def client_view(doc: WgQuickConfig) -> ClientConfig:
    iface = doc.interface
    peers = doc.peers
    peer = peers[0] if peers else None
    priv = iface.get("PrivateKey")
    addr = iface.get("Address")
    pub = peer.get("PublicKey") if peer else None
    allowed = peer.get("AllowedIPs") if peer else None
    keep = peer.get("PersistentKeepalive") if peer else None
    mark = peer.comment_value(SERVER_ADDRESS_MARK) if peer else None
    server_address = None
    if mark:
        try:
            server_address = parse_interface(mark).ip
        except BadInput:
            server_address = None
    return ClientConfig(
        private_key=parse_secret_key(priv, what="PrivateKey") if priv else None,
        addresses=tuple(parse_interface(a) for a in _split(addr or "")),
        server_public_key=Key.parse_public(pub, what="PublicKey") if pub else None,
        endpoint=peer.get("Endpoint") if peer else None,
        allowed_ips=tuple(parse_network(a) for a in _split(allowed or "")),
        keepalive=int(keep) if keep and keep.isdigit() else None,
        server_address=server_address,
    )


def new_client_config(*, private_key: Key, address: IPv4Interface | None,
                      server_public_key: Key, endpoint: str, allowed_ips: IPv4Network,
                      server_address: IPv4Address, keepalive: int = 25) -> WgQuickConfig:
    """A fresh client config: one [Interface], one [Peer] for the server."""
    iface = Section(INTERFACE, f"[{INTERFACE}]")
    iface = iface.with_value("PrivateKey", str(private_key))
    if address is not None:
        iface = iface.with_value("Address", str(address))
    peer = Section(PEER, f"[{PEER}]")
    peer = (peer.with_value("PublicKey", str(server_public_key))
            .with_value("Endpoint", endpoint)
            .with_value("AllowedIPs", str(allowed_ips))
            .with_value("PersistentKeepalive", str(keepalive))
            .with_comment(SERVER_ADDRESS_MARK, str(server_address)))
    iface = dataclasses.replace(iface, lines=(*iface.lines, Line("")))
    preamble = (Line("# Foundries VPN client config, written by `fiovpn client init`."),)
    return WgQuickConfig(preamble, (iface, peer))


def iter_keys(doc: WgQuickConfig) -> Iterator[tuple[str, str, str]]:
    """(section, key, value) for every key line, in file order."""
    for s in doc.sections:
        for line in s.lines:
            if line.key is not None:
                yield s.name, line.key, line.value
