"""A stand-in ``nmcli`` for lab devices (there is no NetworkManager in the lab).

It implements what the factory VPN handler and ``fiovpn devices enable-d2d``
use: ``nmcli connection reload|load FILE|up ID|down ID|show``. ``up`` reads the
connection's keyfile from /etc/NetworkManager/system-connections (the device's
own, in its mount namespace) and applies it to the device's wireguard-go
interface as NetworkManager would: private key, peers (endpoint, keepalive,
allowed-ips), the ipv4 address (no prefix = /32) and one route per allowed-ips
entry ("peer routes"). Peers that did not change keep their sessions.

Each device's ``bin/nmcli`` is a two-line script calling :func:`main` with
that device's state file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from ipaddress import IPv4Interface, IPv4Network, ip_network
from pathlib import Path

from fiovpn.core import nmconnection
from fiovpn.errors import BadInput

CONNECTIONS_DIR = Path("/etc/NetworkManager/system-connections")
_VERBS = ("connection", "connectio", "connecti", "connect", "connec", "conne", "conn", "con",
          "co", "c")


class NmError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _run(argv: Sequence[str], input: str | None = None) -> str:
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                          check=False, timeout=30)
    if proc.returncode != 0:
        raise NmError(f"`{' '.join(argv[:4])}` failed: {proc.stderr.strip()}", 4)
    return proc.stdout


def _connections(directory: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.nmconnection")):
        try:
            doc = nmconnection.parse(path.read_text(), source=str(path))
        except Exception:  # noqa: S112 - NetworkManager skips unreadable files too
            continue
        out[doc.get("connection", "id") or path.stem] = path
    return out


def _networks(value: str) -> list[IPv4Network]:
    nets: list[IPv4Network] = []
    for item in nmconnection.split_list(value.replace(",", ";")):
        try:
            net = ip_network(item, strict=False)
        except ValueError:
            raise NmError(f"invalid allowed-ips entry {item!r}", 4) from None
        if isinstance(net, IPv4Network):
            nets.append(net)
    return nets


def _address(value: str | None) -> IPv4Interface | None:
    if not value:
        return None
    addr = value.split(",")[0].strip()
    if "/" not in addr:
        addr += "/32"
    try:
        return IPv4Interface(addr)
    except ValueError:
        raise NmError(f"invalid ipv4 address1 {value!r}", 4) from None


def apply(path: Path) -> str:
    """Bring the keyfile's WireGuard connection up (or update it in place)."""
    doc = nmconnection.parse(path.read_text(), source=str(path))
    if doc.get("connection", "type") != "wireguard":
        raise NmError(f"{path}: only wireguard connections are supported in the lab", 4)
    iface = doc.get("connection", "interface-name")
    if not iface:
        raise NmError(f"{path}: connection.interface-name is missing", 4)
    if not Path("/sys/class/net", iface).exists():
        raise NmError(f"device {iface} not available", 10)
    private = doc.get("wireguard", "private-key")
    if private:
        _run(["wg", "set", iface, "private-key", "/dev/stdin"], input=private + "\n")
    wanted: dict[str, list[IPv4Network]] = {}
    for peer in doc.peers:
        pub = peer.name[len(nmconnection.PEER_PREFIX):]
        nets = _networks(peer.get("allowed-ips") or "")
        wanted[pub] = nets
        argv = ["wg", "set", iface, "peer", pub,
                "allowed-ips", ",".join(str(n) for n in nets)]
        if peer.get("endpoint"):
            argv += ["endpoint", str(peer.get("endpoint"))]
        argv += ["persistent-keepalive", peer.get("persistent-keepalive") or "off"]
        _run(argv)
    for pub in _run(["wg", "show", iface, "peers"]).split():
        if pub not in wanted:
            _run(["wg", "set", iface, "peer", pub, "remove"])
    address = _address(doc.get("ipv4", "address1"))
    current = [IPv4Interface(a["local"] + "/" + str(a["prefixlen"]))
               for info in json.loads(_run(["ip", "-j", "-4", "addr", "show", "dev", iface]))
               for a in info.get("addr_info", [])]
    for old in current:
        if old != address:
            _run(["ip", "addr", "del", str(old), "dev", iface])
    if address is not None and address not in current:
        _run(["ip", "addr", "add", str(address), "dev", iface])
    _run(["ip", "link", "set", iface, "up"])
    routes = {net for nets in wanted.values() for net in nets}
    existing = {r["dst"] for r in json.loads(_run(["ip", "-j", "-4", "route", "show", "dev",
                                                  iface, "proto", "static"]))}
    for net in routes:
        argv = ["ip", "route", "replace", str(net), "dev", iface, "proto", "static"]
        if address is not None:
            argv += ["src", str(address.ip)]
        _run(argv)
    for dst in existing:
        norm = dst if "/" in dst else f"{dst}/32"
        if ip_network(norm, strict=False) not in routes:
            _run(["ip", "route", "del", dst, "dev", iface, "proto", "static"])
    return iface


def take_down(iface: str) -> None:
    if not Path("/sys/class/net", iface).exists():
        return
    for pub in _run(["wg", "show", iface, "peers"]).split():
        _run(["wg", "set", iface, "peer", pub, "remove"])
    _run(["ip", "addr", "flush", "dev", iface])
    _run(["ip", "link", "set", iface, "down"])


def _load_state(state_file: Path) -> dict[str, str]:
    try:
        data = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _save_state(state_file: Path, active: dict[str, str]) -> None:
    tmp = state_file.with_name(state_file.name + ".tmp")
    tmp.write_text(json.dumps(active))
    tmp.replace(state_file)


def command(args: Sequence[str], *, state_file: Path,
            directory: Path = CONNECTIONS_DIR) -> str:
    """Run one nmcli command line; returns what it prints."""
    argv = [a for a in args if a not in ("-t", "--terse", "-w", "--wait")]
    if not argv or argv[0] not in _VERBS:
        raise NmError("lab nmcli supports only: nmcli connection "
                      "reload|load FILE|up ID|down ID|show", 2)
    sub, rest = (argv[1], argv[2:]) if len(argv) > 1 else ("show", [])
    active = _load_state(state_file)
    conns = _connections(directory)
    if sub == "reload" or sub == "load":
        # connections whose file went away are deactivated, as NetworkManager does
        for cid, iface in list(active.items()):
            if cid not in conns:
                take_down(iface)
                del active[cid]
        _save_state(state_file, active)
        return ""
    if sub == "up" or sub == "down":
        name = rest[-1] if rest else ""
        if name not in conns:
            if sub == "down" and name in active:
                take_down(active.pop(name))
                _save_state(state_file, active)
                return ""
            raise NmError(f"Error: unknown connection '{name}'.", 10)
        if sub == "down":
            if name in active:
                take_down(active.pop(name))
                _save_state(state_file, active)
            return ""
        active[name] = apply(conns[name])
        _save_state(state_file, active)
        return "Connection successfully activated\n"
    if sub == "show":
        lines = ["NAME  TYPE  DEVICE"]
        for cid in conns:
            lines.append(f"{cid}  wireguard  {active.get(cid, '--')}")
        return "\n".join(lines) + "\n"
    raise NmError(f"lab nmcli: unsupported `connection {sub}`", 2)


def main(argv: Sequence[str] | None = None, *, state_file: str) -> int:
    try:
        out = command(sys.argv[1:] if argv is None else argv, state_file=Path(state_file))
    except NmError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.code
    except BadInput as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 4
    sys.stdout.write(out)
    return 0
