"""The factory's ``wireguard-server`` and a device's ``wireguard-client`` config files.

Both are ``key=value`` lines. fioctl rejects keys it does not know, so the
renderers write exactly the keys it accepts and nothing else. Reading, fiovpn
is as lenient as fioctl (SPEC section 10): a line without ``=`` is skipped
(with a warning), and ``enabled`` is off only when it is ``0``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from ipaddress import IPv4Address

from fiovpn.core.addresses import parse_ip
from fiovpn.core.keys import Key
from fiovpn.errors import BadInput

WIREGUARD_SERVER_FILE = "wireguard-server"
WIREGUARD_CLIENT_FILE = "wireguard-client"
VPN_HANDLER = "/usr/share/fioconfig/handlers/factory-config-vpn"

log = logging.getLogger("fiovpn.factory_files")

_SERVER_KEYS = {"endpoint", "server_address", "pubkey", "enabled"}
_CLIENT_KEYS = {"address", "pubkey", "enabled"}


def parse_key_values(text: str, *, allowed: set[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep:  # fioctl skips such a line too
            log.warning("%s line %d: no '=' in %r; line skipped", what, n, raw)
            continue
        if not key:
            raise BadInput(f"{what} line {n}: expected key=value, got {raw!r}",
                           code="bad_config_file")
        if key not in allowed:
            raise BadInput(f"{what} line {n}: unknown key {key!r} "
                           f"(allowed: {', '.join(sorted(allowed))})", code="bad_config_file")
        out[key] = value.strip()
    return out


def _enabled(kv: dict[str, str], what: str) -> bool:
    """Off only when ``0``, as fioctl reads it (``enabled=no`` is on there too)."""
    value = kv.get("enabled", "1")
    if value not in ("0", "1"):
        log.warning("%s: enabled=%r is not 0 or 1; read as enabled, as fioctl does", what,
                    value)
    return value != "0"


@dataclass(frozen=True, slots=True)
class ServerConfigFile:
    """The factory's ``wireguard-server`` file."""

    endpoint: str  # host:port
    server_address: IPv4Address
    pubkey: Key
    enabled: bool = True

    @property
    def endpoint_host(self) -> str:
        return self.endpoint.rsplit(":", 1)[0]

    @property
    def endpoint_port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    @classmethod
    def parse(cls, text: str) -> ServerConfigFile:
        what = "wireguard-server file"
        kv = parse_key_values(text, allowed=_SERVER_KEYS, what=what)
        missing = [k for k in ("endpoint", "server_address", "pubkey") if k not in kv]
        if missing:
            raise BadInput(f"{what} is missing {', '.join(missing)}", code="bad_config_file")
        return cls(
            endpoint=parse_endpoint(kv["endpoint"]),
            server_address=parse_ip(kv["server_address"], what="server_address"),
            pubkey=Key.parse_public(kv["pubkey"], what="server pubkey"),
            enabled=_enabled(kv, what),
        )

    def render(self) -> str:
        text = (f"endpoint={self.endpoint}\nserver_address={self.server_address}\n"
                f"pubkey={self.pubkey}")
        return text if self.enabled else text + "\nenabled=0"


@dataclass(frozen=True, slots=True)
class ClientConfigFile:
    """A device's ``wireguard-client`` file.

    A device publishes its own ``pubkey`` (address empty) before VPN is enabled;
    enabling adds the address, disabling appends ``enabled=0`` and keeps it.
    """

    address: IPv4Address | None
    pubkey: Key | None
    enabled: bool = True

    @classmethod
    def parse(cls, text: str) -> ClientConfigFile:
        what = "wireguard-client file"
        kv = parse_key_values(text, allowed=_CLIENT_KEYS, what=what)
        address = kv.get("address", "")
        pubkey = kv.get("pubkey", "")
        return cls(
            address=parse_ip(address, what="address") if address else None,
            pubkey=Key.parse_public(pubkey, what="device pubkey") if pubkey else None,
            enabled=_enabled(kv, what),
        )

    def render(self) -> str:
        address = "" if self.address is None else str(self.address)
        pubkey = "" if self.pubkey is None else str(self.pubkey)
        text = f"address={address}\npubkey={pubkey}"
        return text if self.enabled else text + "\nenabled=0"


def parse_endpoint(value: str, default_port: int | None = None) -> str:
    """``HOST[:PORT]`` -> ``HOST:PORT`` (validated)."""
    value = value.strip()
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = value, ""
    if not port:
        if default_port is None:
            raise BadInput(f"invalid endpoint {value!r}: expected HOST:PORT", code="bad_endpoint")
        port = str(default_port)
    if not host or any(c.isspace() or c in "/;&|$`'\"<>\\" for c in host):
        raise BadInput(f"invalid endpoint {value!r}: bad host", code="bad_endpoint")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(f"invalid endpoint {value!r}: port must be 1-65535", code="bad_endpoint")
    return f"{host}:{int(port)}"
