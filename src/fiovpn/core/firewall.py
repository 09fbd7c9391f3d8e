"""The server's nftables table ``fiovpn`` (SPEC sections 2 and 11), rendered as text.

The table is described as its shape plus the elements of its sets
(``table_model``). The first table of a process, or a new shape, replaces the
whole table in one atomic ``nft -f`` transaction (``add table``; ``delete
table``; ``table … {…}``); a peer change is only element changes, applied as
``delete element``/``add element`` statements in one transaction
(``render_delta``). Either way a change never leaves a moment without policy.
Only traffic entering or leaving the VPN interface is judged; everything else
on the host passes untouched.

Policy:
- clients may reach the server and the devices they are allowed;
- devices may reach the server only for ping (and replies), never clients;
- device <-> device only with ``allow_device_to_device``;
- client <-> client denied;
- the daemon's web port (``--http``) only from this host and through the tunnel
  (so only clients: devices may only ping the server);
- client -> device is source-NATed to the server address, so a device whose
  only tunnel route is the server ``/32`` can answer.

Who reaches which device (section 11) costs the same per packet however large
the fleet: every packet from a client to a device (not only a connection's
first, so an ending grant or expiry also ends open sessions) takes one jump
into ``client_to_device``, where set lookups decide:
- ``open_clients``: clients without ``groups=`` reach every device;
- ``device_grants``: ``client . device`` pairs, each with a kernel timeout;
- ``device_group``: a verdict map from device IP to its group's chain
  ``grp_<group>``, holding that group's clients (``grp_<group>_clients``) and
  time-boxed grants (``grp_<group>_grants``, with timeouts).
A client with ``expires=`` carries the remaining time as the timeout of its
set elements, so it is refused at its expiry even while the daemon is down.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from fiovpn.core.peers import Peer, ip_text

REJECT = "reject with icmpx type admin-prohibited"
_PLAIN = re.compile(r"^[A-Za-z0-9_]{1,64}$")


@dataclass(frozen=True, slots=True)
class FirewallPolicy:
    table: str
    interface: str
    server: IPv4Address
    allow_device_to_device: bool = False
    http_port: int | None = None  # the daemon's web port: clients through the tunnel only
    # HA mode (SPEC 14): WireGuard's UDP port is answered only at the VIP, and what
    # the server sends from that port leaves from the VIP (never its own address).
    vip: IPv4Address | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True)
class AccessRules:
    """Who may reach which device, resolved to addresses (pure values).

    ``client_groups``: restricted clients (``groups=``) by IP; ``client_ends``:
    the expiry (seconds since the epoch) of clients that have one;
    ``group_grants``/``device_grants``: ``(client IP, group or device IP, end)``.
    Ends are absolute; ``now`` turns them into kernel timeouts at render time.
    """

    device_groups: Mapping[IPv4Address, str] = field(default_factory=dict)
    client_groups: Mapping[IPv4Address, tuple[str, ...]] = field(default_factory=dict)
    client_ends: Mapping[IPv4Address, int] = field(default_factory=dict)
    group_grants: tuple[tuple[IPv4Address, str, int], ...] = ()
    device_grants: tuple[tuple[IPv4Address, IPv4Address, int], ...] = ()

    def memo(self) -> tuple[object, ...]:
        """A hashable summary: equal memos render the same table (ends, not timeouts)."""
        return (frozenset(self.device_groups.items()), frozenset(self.client_groups.items()),
                frozenset(self.client_ends.items()), frozenset(self.group_grants),
                frozenset(self.device_grants))


def group_chain(group: str) -> str:
    """The chain of device group ``group``: ``grp_<group>`` when the name is plain
    (letters, digits, ``_``), else ``grpx_<hex of the name>`` (always unique)."""
    if _PLAIN.fullmatch(group):
        return f"grp_{group}"
    return "grpx_" + group.encode().hex()


def timeout_ms(end: float, now: float) -> int:
    return max(1, round((end - now) * 1000))


def element(key: str, end: float | None, now: float) -> str:
    return key if end is None else f"{key} timeout {timeout_ms(end, now)}ms"


Elements = dict[str, "tuple[int | None, str | None]"]  # key -> (end, map value)


@dataclass(frozen=True)
class TableModel:
    """The table as its shape plus the elements of its sets and maps.

    ``structure``: the ruleset text with a marker where each set's elements go;
    ``sets``: set or map name -> {element key: (end or None, map value or None)}.
    Two models with the same structure differ only in elements, so the change
    between them is a few ``add element`` / ``delete element`` statements.
    """

    table: str
    structure: str
    sets: Mapping[str, Elements]


def model_to_json(model: TableModel) -> dict[str, Any]:
    """``model`` as JSON values (elements without timeout or value as bare keys:
    50,000 device addresses are a list of strings)."""
    sets: dict[str, Any] = {}
    for name, elems in model.sets.items():
        keys = [k for k, item in elems.items() if item == (None, None)]
        items = [[k, end, value] for k, (end, value) in elems.items()
                 if end is not None or value is not None]
        sets[name] = {"keys": keys, "items": items}
    return {"table": model.table, "structure": model.structure, "sets": sets}


def model_from_json(data: Any) -> TableModel:
    """The model ``model_to_json`` wrote; ``ValueError`` when it is not one."""
    try:
        sets: dict[str, Elements] = {}
        for name, elems in data["sets"].items():
            out: Elements = dict.fromkeys(elems["keys"], (None, None))
            for key, end, value in elems["items"]:
                if not isinstance(key, str) or not (end is None or isinstance(end, int)) \
                        or not (value is None or isinstance(value, str)):
                    raise ValueError(f"bad element {key!r} in set {name}")
                out[key] = (end, value)
            if not all(isinstance(k, str) for k in out):
                raise ValueError(f"bad element in set {name}")
            sets[str(name)] = out
        table, structure = data["table"], data["structure"]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a firewall model: {exc}") from None
    if not isinstance(table, str) or not isinstance(structure, str):
        raise ValueError("not a firewall model: table or structure is not text")
    return TableModel(table, structure, sets)


def _marker(name: str) -> str:
    return f"\t\t@elements {name}@"


def _set(name: str, elems: Elements, sets: dict[str, Elements], *,
         type_: str = "ipv4_addr", timeout: bool = False,
         comment: str | None = None) -> list[str]:
    sets[name] = elems
    lines = [f"\tset {name} {{", f"\t\ttype {type_}"]
    if timeout:
        lines.append("\t\tflags timeout")
    if comment:
        lines.append(f'\t\tcomment "{comment}"')
    lines += [_marker(name), "\t}"]
    return lines


def _ips(ips: Iterable[IPv4Address], ends: Mapping[IPv4Address, int]) -> Elements:
    # int keys and remembered texts: IPv4Address hashes, compares and prints in Python
    unique = {int(ip): ip for ip in ips}
    if not ends:
        return {ip_text(unique[n]): (None, None) for n in sorted(unique)}
    return {ip_text(unique[n]): (ends.get(unique[n]), None) for n in sorted(unique)}


def _element_text(key: str, item: tuple[int | None, str | None], now: float) -> str:
    end, value = item
    text = key if value is None else f"{key} : {value}"
    return text if end is None else f"{text} timeout {timeout_ms(end, now)}ms"


def render_ruleset(policy: FirewallPolicy, peers: Iterable[Peer],
                   access: AccessRules | None = None, *, now: float = 0.0) -> str:
    """The ``nft -f`` input replacing table ``inet <table>`` with the policy for
    ``peers`` and ``access`` (``now``: seconds since the epoch, for timeouts)."""
    return render_full(table_model(policy, peers, access, now=now), now)


GENERATION_SET = "generation"  # an empty set whose comment names the table's making


def render_full(model: TableModel, now: float, generation: str | None = None) -> str:
    """The whole table, replaced in one transaction (``add``; ``delete``; the table).

    ``generation``: a token for this making of the table, kept in the comment of
    an empty set (read back by ``nft list set``, which stays quick however many
    elements the table holds): a later process knows the kernel's table is the
    one its saved model describes, not one deleted and made again since."""
    out: list[str] = [f"add table inet {model.table}\n",
                      f"delete table inet {model.table}\n"]
    for line in model.structure.splitlines():
        if generation is not None and line == f"table inet {model.table} {{":
            out.append(line + "\n")
            out.append(f"\tset {GENERATION_SET} {{\n\t\ttype ipv4_addr\n"
                       f'\t\tcomment "{generation}"\n\t}}\n')
        elif line.startswith("\t\t@elements "):
            elems = model.sets[line.strip()[len("@elements "):-1]]
            if elems:
                out.append("\t\telements = { " + ", ".join(
                    _element_text(k, v, now) for k, v in elems.items()) + " }\n")
        else:
            out.append(line + "\n")
    return "".join(out)


def render_delta(old: TableModel, new: TableModel, now: float) -> str | None:
    """The element changes turning ``old`` into ``new`` (one ``nft -f`` file, applied
    all or nothing); ``""`` when nothing changed; None when the shape changed (then
    the whole table is replaced). Elements of ``old`` whose timeout has already run
    out are gone from the kernel and are not deleted again."""
    if old.table != new.table or old.structure != new.structure:
        return None
    deletes: list[str] = []
    adds: list[str] = []
    for name, want in new.sets.items():
        have = old.sets.get(name, {})
        if want is have:
            continue
        gone = [k for k, item in have.items()
                if (k not in want or want[k] != item) and (item[0] is None or item[0] > now)]
        fresh = [_element_text(k, item, now) for k, item in want.items()
                 if have.get(k) != item]
        if gone:
            deletes.append(f"delete element inet {new.table} {name} {{ {', '.join(gone)} }}\n")
        if fresh:
            adds.append(f"add element inet {new.table} {name} {{ {', '.join(fresh)} }}\n")
    return "".join(deletes + adds)


def table_model(policy: FirewallPolicy, peers: Iterable[Peer],
                access: AccessRules | None = None, *, now: float = 0.0) -> TableModel:
    """The table for ``peers`` and ``access`` as shape + elements (pure)."""
    peers = list(peers)
    sets: dict[str, Elements] = {}
    access = access or AccessRules()
    iface = f'"{policy.interface}"'
    t = policy.table
    live_ends = {ip: end for ip, end in access.client_ends.items() if end > now}
    clients = [p.ip for p in peers if p.kind == "client"
               and not (p.ip in access.client_ends and p.ip not in live_ends)]
    client_set = set(clients)
    devices = [p.ip for p in peers if p.kind == "device"]
    open_clients = [ip for ip in clients if ip not in access.client_groups]

    members: dict[str, list[IPv4Address]] = defaultdict(list)
    if access.device_groups:  # a walk over every device only when groups exist
        for ip in sorted({int(ip): ip for ip in devices}.values(), key=int):
            group = access.device_groups.get(ip)
            if group:
                members[group].append(ip)
    device_set = set(devices) if access.device_grants else set()
    group_clients: dict[str, list[IPv4Address]] = defaultdict(list)
    for ip, groups in access.client_groups.items():
        if ip in client_set:
            for g in groups:
                if g in members:
                    group_clients[g].append(ip)
    group_grants: dict[str, list[tuple[IPv4Address, int]]] = defaultdict(list)
    for ip, g, end in access.group_grants:
        if g in members and end > now:
            group_grants[g].append((ip, end))
    device_grants = sorted({(c, d, e) for c, d, e in access.device_grants
                            if d in device_set and e > now},
                           key=lambda x: (int(x[0]), int(x[1])))

    d2d = ([f"\t\tiifname {iface} oifname {iface} ip saddr @device_ips ip daddr @device_ips "
            "accept comment \"device-to-device allowed\""]
           if policy.allow_device_to_device else [])
    group_sets: list[str] = []
    group_chains: list[str] = []
    vmap: Elements = {}
    for g in sorted(members):
        chain = group_chain(g)
        for ip in members[g]:
            vmap[ip_text(ip)] = (None, f"jump {chain}")
        group_sets += _set(f"{chain}_clients", _ips(group_clients[g], live_ends), sets,
                           timeout=True, comment=f"clients with groups={g}")
        group_sets += _set(f"{chain}_grants",
                           {str(ip): (end, None)
                            for ip, end in sorted(set(group_grants[g]),
                                                  key=lambda x: int(x[0]))},
                           sets, timeout=True, comment=f"time-boxed grants to group {g}")
        group_chains += [
            "",
            f"\tchain {chain} {{",
            f"\t\tcomment \"devices of group {g}\"",
            f"\t\tip saddr @{chain}_clients accept",
            f"\t\tip saddr @{chain}_grants accept",
            "\t}",
        ]
    # The web port answers this host and the tunnel (where only clients pass the
    # rules below), never the underlay.
    http = ([f"\t\ttcp dport {policy.http_port} iifname != {{ \"lo\", {iface} }} {REJECT} "
             "comment \"the dashboard and /metrics only through the tunnel\""]
            if policy.http_port else [])
    ha_in: list[str] = []
    ha_out: list[str] = []
    ha_raw: list[str] = []
    if policy.vip is not None and policy.port is not None:
        vip, port = policy.vip, policy.port
        ha_in = [f"\t\tudp dport {port} ip daddr != {vip} drop "
                 "comment \"HA: WireGuard answers only at the VIP\""]
        ha_out = [f"\t\tudp sport {port} ip saddr != {vip} snat ip to {vip} "
                  "comment \"HA: WireGuard speaks from the VIP\""]
        # WireGuard's UDP at the VIP is not connection-tracked: a peer's packet that
        # reaches a new active before its handshake would otherwise hold the tuple
        # our source-NATed handshake needs, and NAT would pick another port (the
        # peer then roams to VIP:<other port>). Untracked, answers to the NATed
        # handshake arrive at the VIP itself, and wireguard-go speaks from there.
        ha_raw = [
            "",
            "\tchain ha_prerouting {",
            "\t\ttype filter hook prerouting priority raw; policy accept;",
            f"\t\tudp dport {port} notrack comment \"HA: WireGuard untracked\"",
            "\t}",
            "",
            "\tchain ha_output {",
            "\t\ttype filter hook output priority raw; policy accept;",
            f"\t\tudp sport {port} ip saddr {vip} notrack comment \"HA: WireGuard untracked\"",
            "\t}",
        ]
    sets["device_group"] = vmap
    lines = [
        f"table inet {t} {{",
        *_set("client_ips", _ips(clients, live_ends), sets, timeout=True),
        *_set("device_ips", _ips(devices, {}), sets),
        *_set("open_clients", _ips(open_clients, live_ends), sets, timeout=True,
              comment="clients without groups= reach every device"),
        *_set("device_grants",
              {f"{c} . {d}": (e, None) for c, d, e in device_grants}, sets,
              type_="ipv4_addr . ipv4_addr", timeout=True,
              comment="time-boxed grants: client . device"),
        *group_sets,
        "\tmap device_group {",
        "\t\ttype ipv4_addr : verdict",
        _marker("device_group"),
        "\t}",
        "",
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy accept;",
        *http,
        *ha_in,
        f"\t\tiifname != {iface} accept",
        "\t\tct state established,related accept",
        "\t\tct state invalid drop",
        "\t\tip saddr @client_ips accept comment \"clients may reach the server\"",
        "\t\tip saddr @device_ips icmp type echo-request accept "
        "comment \"devices may ping the server\"",
        f"\t\t{REJECT}",
        "\t}",
        "",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        f"\t\tiifname != {iface} oifname != {iface} accept",
        f"\t\tiifname {iface} oifname {iface} ip saddr != @device_ips ip daddr @device_ips "
        "jump client_to_device comment \"every client packet to a device is judged\"",
        "\t\tct state established,related accept",
        "\t\tct state invalid drop",
        *d2d,
        f"\t\t{REJECT} comment \"devices never open connections to clients; "
        "client<->client and (by default) device<->device denied\"",
        "\t}",
        "",
        "\tchain client_to_device {",
        "\t\tip saddr @open_clients accept comment \"clients may reach devices\"",
        "\t\tip saddr . ip daddr @device_grants accept",
        "\t\tip daddr vmap @device_group",
        f"\t\t{REJECT} comment \"not this client's device group, or its time is up\"",
        "\t}",
        *group_chains,
        "",
        "\tchain postrouting {",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        *ha_out,
        f"\t\toifname {iface} ip saddr @client_ips ip daddr @device_ips "
        f"snat ip to {policy.server} comment \"devices answer the server /32\"",
        "\t}",
        *ha_raw,
        "}",
    ]
    return TableModel(t, "\n".join(lines) + "\n", sets)


def render_grant(table: str, client: IPv4Address, *, end: float, now: float,
                 group: str | None = None, device: IPv4Address | None = None) -> str:
    """The ``nft -f`` input adding one grant to the live table (no re-render)."""
    if (group is None) == (device is None):
        raise ValueError("a grant is to a group or to a device")
    if group is not None:
        return (f"add element inet {table} {group_chain(group)}_grants "
                f"{{ {element(str(client), end, now)} }}\n")
    return (f"add element inet {table} device_grants "
            f"{{ {element(f'{client} . {device}', end, now)} }}\n")


def render_revoke(table: str, client: IPv4Address, *, group: str | None = None,
                  device: IPv4Address | None = None) -> str:
    if group is not None:
        return f"delete element inet {table} {group_chain(group)}_grants {{ {client} }}\n"
    return f"delete element inet {table} device_grants {{ {client} . {device} }}\n"
