"""The keepalived configuration ``fiovpn server ha-template`` prints (pure).

keepalived (VRRP) moves the VIP; fiovpn only tells it whether this server can
serve (``track_script`` running ``fiovpn server health``) and hears about role
changes (``notify`` running ``fiovpn server ha-notify``). Unicast VRRP between
the two servers' own addresses (no multicast needed on the link), ``state
BACKUP`` on both and ``nopreempt`` by default: a server that comes back does
not take the VIP back (each move costs the VPN a second or two).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface

from fiovpn.core.names import validate_interface
from fiovpn.errors import BadInput


@dataclass(frozen=True)
class KeepalivedTemplate:
    instance: str  # vrrp_instance name, also the vrrp_script's prefix
    interface: str  # the link that holds the VIP
    vip: IPv4Interface  # address/prefix on that link
    src_ip: IPv4Address  # this server's own address (unicast_src_ip)
    peer_ip: IPv4Address  # the other server's address (unicast_peer)
    router_id: int = 51  # virtual_router_id, 1-255, unique on the link
    priority: int = 200  # high: a clean stop hands over after a short skew time
    preempt: bool = False
    advert_int: int = 1
    health_command: Sequence[str] = ("fiovpn", "server", "health")
    notify_command: Sequence[str] = ("fiovpn", "server", "ha-notify")
    check_interval: int = 2
    fall: int = 3
    rise: int = 2

    def validate(self) -> KeepalivedTemplate:
        validate_interface(self.interface)
        if not self.instance or not all(c.isalnum() or c in "_-" for c in self.instance):
            raise BadInput(f"invalid instance name {self.instance!r}: letters, digits, _ and -",
                           code="bad_ha_template")
        if not 1 <= self.router_id <= 255:
            raise BadInput(f"invalid router id {self.router_id}: expected 1-255",
                           code="bad_ha_template")
        if not 1 <= self.priority <= 254:
            raise BadInput(f"invalid priority {self.priority}: expected 1-254",
                           code="bad_ha_template")
        if self.src_ip == self.peer_ip:
            raise BadInput("this server's address and the peer's are the same",
                           code="bad_ha_template")
        if self.vip.ip in (self.src_ip, self.peer_ip):
            raise BadInput(f"the VIP {self.vip.ip} must be a third address, not one of the "
                           "servers' own", code="bad_ha_template")
        return self


def _script(argv: Sequence[str]) -> str:
    """keepalived splits a script line on spaces and honours double quotes only."""
    for arg in argv:
        if '"' in arg or "\\" in arg:
            raise BadInput(f"cannot put {arg!r} in a keepalived script line",
                           code="bad_ha_template")
    return " ".join(f"'{a}'" if a != shlex.quote(a) else a for a in argv)


def render_keepalived(t: KeepalivedTemplate) -> str:
    t.validate()
    check = f"{t.instance}_health"
    lines = [
        "# keepalived configuration for a fiovpn server pair (fiovpn server ha-template).",
        "# Same file on both servers, with src/peer addresses swapped.",
        "global_defs {",
        f"    router_id {t.instance}",
        "    script_user root",
        "    enable_script_security",
        "}",
        "",
        f"vrrp_script {check} {{",
        f"    script \"{_script(t.health_command)}\"",
        f"    interval {t.check_interval}",
        f"    timeout {max(10, t.check_interval * 10)}",
        f"    fall {t.fall}",
        f"    rise {t.rise}",
        "}",
        "",
        f"vrrp_instance {t.instance} {{",
        "    state BACKUP",
        f"    interface {t.interface}",
        f"    virtual_router_id {t.router_id}",
        f"    priority {t.priority}",
        f"    advert_int {t.advert_int}",
        *([] if t.preempt else ["    nopreempt"]),
        f"    unicast_src_ip {t.src_ip}",
        "    unicast_peer {",
        f"        {t.peer_ip}",
        "    }",
        "    virtual_ipaddress {",
        f"        {t.vip.with_prefixlen} dev {t.interface}",
        "    }",
        "    track_script {",
        f"        {check}",
        "    }",
        f"    notify \"{_script(t.notify_command)}\"",
        "}",
    ]
    return "\n".join(lines) + "\n"
