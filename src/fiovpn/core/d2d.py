"""Device-to-device on an LmP device, the pure part: the NetworkManager dispatcher
hook that makes it last, and reading the device's live ``wg show IFACE allowed-ips``.

Why a hook: fioconfig's VPN handler rewrites ``factory-vpn0.nmconnection`` from
scratch, with the server peer's ``allowed-ips`` = the server address alone, at
every boot (``fioconfig extract`` runs every handler) and on every device of
the factory whenever the factory's ``wireguard-server`` file changes (and on
one device when its own ``wireguard-client`` file changes). Each time it ends
with ``nmcli conn up``, so NetworkManager runs its dispatcher scripts with
``$1`` = the interface, ``$2`` = ``up`` and ``CONNECTION_ID`` set. The hook then
widens the server peer on the live interface with ``wg`` (LmP images with
WireGuard ship wireguard-tools). It is plain sh: nothing an LmP device lacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_network
from typing import Any

from fiovpn.errors import BadInput

VPN_ID = "factory-vpn0"
HOOK_NAME = "90-fiovpn-d2d"
HOOK_MARKER = "# fiovpn-d2d"
# The device's address without a prefix is a /24 (NetworkManager), so the kernel
# already routes a /24 VPN subnet into the tunnel; a larger one needs a route too.
ADDRESS_PREFIX = 24


def marker(subnet: IPv4Network, server_ip: IPv4Address) -> str:
    return f"{HOOK_MARKER} subnet={subnet} server={server_ip}"


def render_hook(subnet: IPv4Network, server_ip: IPv4Address, *, connection: str = VPN_ID
                ) -> str:
    """The dispatcher script ``90-fiovpn-d2d`` (root, 0755 on the device)."""
    route = (f'\tip route replace {subnet} dev "$iface"\n'
             if subnet.prefixlen < ADDRESS_PREFIX else "")
    return (
        "#!/bin/sh\n"
        "# Installed by `fiovpn devices enable-d2d`, removed by `fiovpn devices disable-d2d`.\n"
        "# NetworkManager runs this with $1 = interface, $2 = action. When the factory VPN\n"
        "# connection comes up (after every boot, and after fioconfig's VPN handler\n"
        "# rewrote it), route the whole VPN subnet through the server peer on the live\n"
        "# interface, so device-to-device lasts.\n"
        f"{marker(subnet, server_ip)}\n"
        'case "$2" in up|reapply) ;; *) exit 0 ;; esac\n'
        f'[ "$CONNECTION_ID" = "{connection}" ] || exit 0\n'
        'iface="$1"\n'
        'peers=$(wg show "$iface" peers) || exit 0\n'
        '[ -n "$peers" ] || exit 0\n'
        "set -- $peers\n"
        'if [ "$#" -eq 1 ]; then\n'
        f'\twg set "$iface" peer "$1" allowed-ips {subnet}\n'
        "else\n"
        '\twg show "$iface" allowed-ips | while read -r peer ips; do\n'
        '\t\tcase " $ips " in\n'
        f'\t\t*" {server_ip}/32 "*|*" {subnet} "*) '
        f'wg set "$iface" peer "$peer" allowed-ips {subnet} ;;\n'
        "\t\tesac\n"
        "\tdone\n"
        "fi\n"
        f"{route}"
    )


def hook_subnet(text: str | None) -> IPv4Network | None:
    """The subnet a hook installed on a device widens to (None: not fiovpn's hook)."""
    for line in (text or "").splitlines():
        if line.startswith(HOOK_MARKER + " "):
            for field in line.split()[2:]:
                key, _, value = field.partition("=")
                if key == "subnet":
                    try:
                        net = ip_network(value)
                    except ValueError:
                        return None
                    return net if isinstance(net, IPv4Network) else None
    return None


def parse_allowed_ips(text: str) -> dict[str, tuple[IPv4Network, ...]]:
    """``wg show IFACE allowed-ips``: ``<peer>\\t<net> <net>…`` (or ``(none)``) a line."""
    out: dict[str, tuple[IPv4Network, ...]] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        peer, *nets = line.split()
        items = []
        for item in nets:
            if item == "(none)":
                continue
            try:
                net = ip_network(item, strict=False)
            except ValueError:
                raise BadInput(f"`wg show allowed-ips` line {n}: {item!r} is not a network",
                               code="bad_wg_output") from None
            if isinstance(net, IPv4Network):
                items.append(net)
        out[peer] = tuple(items)
    return out


def server_peer(peers: dict[str, tuple[IPv4Network, ...]], server_ip: IPv4Address,
                subnet: IPv4Network) -> str | None:
    """The server's peer among the live peers: the only one, else the one routing the
    server address."""
    if len(peers) == 1:
        return next(iter(peers))
    found = [p for p, nets in peers.items() if any(server_ip in n for n in nets)]
    if len(found) == 1:
        return found[0]
    found = [p for p, nets in peers.items() if any(n.subnet_of(subnet) for n in nets)]
    return found[0] if len(found) == 1 else None


@dataclass(frozen=True, slots=True)
class D2dStatus:
    """What ``devices d2d-status`` reports, read from the device itself."""

    name: str
    vpn_ip: IPv4Address
    allowed_ips: tuple[IPv4Network, ...]  # the server peer's, on the live interface
    subnet: IPv4Network
    hook_subnet: IPv4Network | None  # the installed hook's subnet; None: no hook

    @property
    def d2d(self) -> bool:
        """The live interface routes the whole VPN subnet through the server."""
        return any(self.subnet.subnet_of(n) for n in self.allowed_ips)

    @property
    def persistent(self) -> bool:
        """The hook is installed (for this subnet): d2d comes back after every
        reboot and every rewrite by the factory handler."""
        return self.hook_subnet == self.subnet

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "d2d": self.d2d,
                "allowed_ips": [str(n) for n in self.allowed_ips],
                "persistent": self.persistent, "vpn_ip": str(self.vpn_ip)}

    def summary(self) -> str:
        ips = ", ".join(str(n) for n in self.allowed_ips) or "none"
        if self.d2d and self.persistent:
            return (f"device-to-device is on for {self.name} and lasts (the hook "
                    f"{HOOK_NAME} is installed); server peer allowed-ips {ips}")
        if self.d2d:
            return (f"device-to-device is on for {self.name} now, but NOT lasting: no "
                    f"{HOOK_NAME} hook, so the next reboot or factory VPN config change "
                    f"turns it off; server peer allowed-ips {ips}")
        if self.persistent:
            return (f"device-to-device is off for {self.name} although the {HOOK_NAME} hook "
                    f"is installed (server peer allowed-ips {ips}): the hook did not run "
                    "since the connection last came up")
        return f"device-to-device is off for {self.name}; server peer allowed-ips {ips}"
