"""The server's nftables table ``fiovpn`` (SPEC section 2 policy), rendered as text.

The whole table is replaced in one atomic ``nft -f`` transaction
(``add table``; ``delete table``; ``table … {…}``), so a peer change never
leaves a moment without policy. Only traffic entering or leaving the VPN
interface is judged; everything else on the host passes untouched.

Policy:
- clients may reach the server and every device;
- devices may reach the server only for ping (and replies), never clients;
- device <-> device only with ``allow_device_to_device``;
- client <-> client denied;
- client -> device is source-NATed to the server address, so a device whose
  only tunnel route is the server ``/32`` can answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from fiovpn.core.peers import Peer


@dataclass(frozen=True, slots=True)
class FirewallPolicy:
    table: str
    interface: str
    server: IPv4Address
    allow_device_to_device: bool = False


def _set(name: str, ips: Iterable[IPv4Address]) -> list[str]:
    elems = sorted(set(ips), key=int)  # int keys: 5,000 IPv4Address compares are slow
    lines = [f"\tset {name} {{", "\t\ttype ipv4_addr"]
    if elems:
        lines.append("\t\telements = { " + ", ".join(str(ip) for ip in elems) + " }")
    lines.append("\t}")
    return lines


def render_ruleset(policy: FirewallPolicy, peers: Iterable[Peer]) -> str:
    """The ``nft -f`` input replacing table ``inet <table>`` with the policy for ``peers``."""
    peers = list(peers)
    iface = f'"{policy.interface}"'
    t = policy.table
    reject = "reject with icmpx type admin-prohibited"
    d2d = ([f"\t\tiifname {iface} oifname {iface} ip saddr @device_ips ip daddr @device_ips "
            "accept comment \"device-to-device allowed\""]
           if policy.allow_device_to_device else [])
    lines = [
        f"add table inet {t}",
        f"delete table inet {t}",
        f"table inet {t} {{",
        *_set("client_ips", (p.ip for p in peers if p.kind == "client")),
        *_set("device_ips", (p.ip for p in peers if p.kind == "device")),
        "",
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy accept;",
        f"\t\tiifname != {iface} accept",
        "\t\tct state established,related accept",
        "\t\tct state invalid drop",
        "\t\tip saddr @client_ips accept comment \"clients may reach the server\"",
        "\t\tip saddr @device_ips icmp type echo-request accept "
        "comment \"devices may ping the server\"",
        f"\t\t{reject}",
        "\t}",
        "",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        f"\t\tiifname != {iface} oifname != {iface} accept",
        "\t\tct state established,related accept",
        "\t\tct state invalid drop",
        f"\t\tiifname {iface} oifname {iface} ip saddr @client_ips ip daddr @device_ips "
        "accept comment \"clients may reach devices\"",
        *d2d,
        f"\t\t{reject} comment \"devices never open connections to clients; "
        "client<->client and (by default) device<->device denied\"",
        "\t}",
        "",
        "\tchain postrouting {",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        f"\t\toifname {iface} ip saddr @client_ips ip daddr @device_ips "
        f"snat ip to {policy.server} comment \"devices answer the server /32\"",
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"
