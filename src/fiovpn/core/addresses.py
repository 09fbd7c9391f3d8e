"""The VPN address plan: subnet, server address, client pool, IP choice, conflicts.

Device IPs follow fioctl: the first free address after the server address,
skipping ``.0`` addresses and anything in use by devices or inside the client
pool. Client IPs come from the client pool only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network

from fiovpn.errors import BadInput, Conflict

DEFAULT_SUBNET = "10.42.42.0/24"
POOL_SIZE = 55  # .200-.254 on a /24


def parse_ip(value: str, *, what: str = "IP address") -> IPv4Address:
    try:
        addr = ip_address(value.strip())
    except ValueError:
        raise BadInput(f"invalid {what} {value!r}: expected an IPv4 address like 10.42.42.7",
                       code="bad_ip") from None
    if not isinstance(addr, IPv4Address):
        raise BadInput(f"invalid {what} {value!r}: only IPv4 is supported", code="bad_ip")
    return addr


def parse_subnet(value: str) -> IPv4Network:
    try:
        net = ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise BadInput(f"invalid subnet {value!r}: {exc}", code="bad_subnet") from None
    if not isinstance(net, IPv4Network):
        raise BadInput(f"invalid subnet {value!r}: only IPv4 is supported", code="bad_subnet")
    if net.prefixlen > 30:
        raise BadInput(f"subnet {value} is too small for a VPN", code="bad_subnet")
    return net


@dataclass(frozen=True, slots=True)
class ClientPool:
    first: IPv4Address
    last: IPv4Address

    def __contains__(self, ip: object) -> bool:
        return isinstance(ip, IPv4Address) and self.first <= ip <= self.last

    def __iter__(self) -> Iterator[IPv4Address]:
        for n in range(int(self.first), int(self.last) + 1):
            yield IPv4Address(n)

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"

    @property
    def size(self) -> int:
        return int(self.last) - int(self.first) + 1


def default_pool(subnet: IPv4Network) -> ClientPool:
    """The top of the subnet: ``.200-.254`` for a /24 (55 addresses below broadcast).

    A small subnet keeps at most a quarter of its hosts for clients, so devices
    (which start after the server address) always have room."""
    last = subnet.broadcast_address - 1
    hosts = subnet.num_addresses - 2
    size = max(1, min(POOL_SIZE, hosts // 4))
    return ClientPool(IPv4Address(int(last) - (size - 1)), last)


def parse_pool(value: str, subnet: IPv4Network) -> ClientPool:
    try:
        first_s, last_s = value.split("-", 1)
    except ValueError:
        raise BadInput(f"invalid client pool {value!r}: expected FIRST-LAST, "
                       "e.g. 10.42.42.200-10.42.42.254", code="bad_pool") from None
    first = parse_ip(first_s, what="client pool start")
    last = parse_ip(last_s, what="client pool end")
    if first > last:
        raise BadInput(f"invalid client pool {value!r}: start is after end", code="bad_pool")
    for ip in (first, last):
        if ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address):
            raise BadInput(f"client pool {value} is not inside the subnet {subnet}",
                           code="bad_pool")
    return ClientPool(first, last)


@dataclass(frozen=True, slots=True)
class VpnNetwork:
    """The subnet, the server's address in it, and the client pool."""

    subnet: IPv4Network
    server: IPv4Address
    pool: ClientPool

    @classmethod
    def build(cls, subnet: str = DEFAULT_SUBNET, server: str | None = None,
              pool: str | None = None) -> VpnNetwork:
        net = parse_subnet(subnet)
        srv = parse_ip(server, what="server address") if server else net.network_address + 1
        if srv not in net or srv in (net.network_address, net.broadcast_address):
            raise BadInput(f"server address {srv} is not a host address of {net}",
                           code="bad_ip")
        cpool = parse_pool(pool, net) if pool else default_pool(net)
        if srv in cpool:
            raise BadInput(f"server address {srv} lies inside the client pool {cpool}",
                           code="bad_pool")
        return cls(net, srv, cpool)

    def is_host(self, ip: IPv4Address) -> bool:
        return ip in self.subnet and ip not in (self.subnet.network_address,
                                                self.subnet.broadcast_address)

    def next_device_ip(self, used: Iterable[IPv4Address]) -> IPv4Address:
        """fioctl's choice: first free address after the server, skipping ``.0``,
        used addresses and the client pool."""
        taken = set(used)
        for n in range(int(self.server) + 1, int(self.subnet.broadcast_address)):
            ip = IPv4Address(n)
            if n & 0xFF == 0 or ip in taken or ip in self.pool:
                continue
            return ip
        raise Conflict(f"no free device address left in {self.subnet} "
                       f"(client pool {self.pool} is reserved)", code="subnet_full")

    def next_client_ip(self, used: Iterable[IPv4Address]) -> IPv4Address:
        taken = set(used)
        for ip in self.pool:
            if ip not in taken and int(ip) & 0xFF not in (0, 255):
                return ip
        raise Conflict(f"the client pool {self.pool} is full: remove a client or "
                       "widen --client-pool", code="pool_full")

    def check_client_ip(self, ip: IPv4Address, used: Iterable[IPv4Address]) -> IPv4Address:
        """Refuse a client IP outside the subnet, outside the pool, or taken."""
        if not self.is_host(ip):
            raise BadInput(f"{ip} is not a host address of the VPN subnet {self.subnet}",
                           code="bad_ip")
        if ip == self.server:
            raise Conflict(f"{ip} is the server's own address", code="ip_taken")
        if ip not in self.pool:
            raise BadInput(f"{ip} is outside the client pool {self.pool} (device space); "
                           "use --ip auto or an address from the pool", code="bad_ip")
        if ip in set(used):
            raise Conflict(f"{ip} is already taken by another peer", code="ip_taken")
        return ip

    def check_device_ip(self, ip: IPv4Address) -> IPv4Address:
        if not self.is_host(ip) or ip == self.server:
            raise BadInput(f"{ip} is not a usable device address in {self.subnet}",
                           code="bad_ip")
        return ip
