"""``ADDR:PORT`` of the daemon's HTTP listener (``--http``), validated once."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from fiovpn.errors import BadInput


@dataclass(frozen=True, slots=True)
class Listen:
    address: IPv4Address
    port: int

    def __str__(self) -> str:
        return f"{self.address}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Listen:
        """``10.42.42.1:9100`` -> Listen; anything else is one clear ``BadInput``."""
        host, sep, port = text.strip().rpartition(":")
        problem = None
        if not sep or not host:
            problem = "expected ADDR:PORT"
        else:
            try:
                address = IPv4Address(host)
            except ValueError:
                problem = f"{host!r} is not an IPv4 address"
            else:
                if not port.isdigit() or not 0 < int(port) < 65536:
                    problem = f"port {port!r} is not 1-65535"
                else:
                    return cls(address, int(port))
        raise BadInput(f"invalid --http {text!r}: {problem} (e.g. 10.42.42.1:9100, the "
                       "server's VPN address, so only clients through the tunnel reach it)",
                       code="bad_http_listen")
