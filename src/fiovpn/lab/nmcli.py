"""A stand-in ``nmcli`` for lab devices (NetworkManager cannot drive wireguard-go).

It behaves like NetworkManager 1.56 where fiovpn and the factory VPN handler
depend on it:

- NetworkManager works from *loaded profiles*, not from the files: an edit on
  disk counts only after ``connection reload`` or ``connection load FILE``.
  A profile that is loaded (or reloaded) while not active is activated
  (autoconnect); loading the profile of an active connection changes nothing
  live. A profile whose file went away is deactivated.
- ``connection up ID`` on an active connection re-activates it: the peers are
  re-created (their sessions and counters start over) and the address
  re-added. ``device reapply IFACE`` applies the loaded profile in place
  (peers that stay keep their sessions).
- keyfile values: ``ipv4.address1`` without a prefix is a ``/24``;
  ``allowed-ips`` is a ``;`` list and an entry that does not parse (a comma
  list, a typo) is dropped silently, exit code 0. Each allowed-ips entry gets a
  route ("peer routes").
- after ``up``/``down``/``reapply`` the executables in
  ``/etc/NetworkManager/dispatcher.d`` (owned by root, not group/world
  writable) run with ``$1`` = interface, ``$2`` = action and
  ``CONNECTION_ID`` in the environment. Real NetworkManager runs them a moment
  later from its dispatcher service; the stand-in runs them before returning.
- ``lab-boot`` (not an nmcli command) is NetworkManager starting at boot: it
  loads every keyfile and activates them.

Each device's ``bin/nmcli`` is a small script calling :func:`main` with that
device's state file (NetworkManager's memory: emptied by a reboot).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network, ip_network
from pathlib import Path
from typing import Any

from fiovpn.core import nmconnection
from fiovpn.errors import BadInput

CONNECTIONS_DIR = Path("/etc/NetworkManager/system-connections")
DISPATCHER_DIR = Path("/etc/NetworkManager/dispatcher.d")
PEER_ROUTE_METRIC = 50  # beside the kernel's prefix route of the /24 address
_CONNECTION = ("connection", "connectio", "connecti", "connect", "connec", "conne", "conn",
               "con", "co", "c")
_DEVICE = ("device", "devic", "devi", "dev", "de", "d")


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


# --- keyfile values, read as NetworkManager reads them -----------------------------


def allowed_ips(value: str | None) -> list[IPv4Network]:
    """A ``;`` list; entries NetworkManager cannot parse (a comma list, a space inside
    an entry, a typo) are dropped without a word."""
    out: list[IPv4Network] = []
    for item in (value or "").split(";"):
        if not item:
            continue
        try:
            net = ip_network(item, strict=False)
        except ValueError:
            continue
        if isinstance(net, IPv4Network):
            out.append(net)
    return out


def address(value: str | None) -> IPv4Interface | None:
    """``address1=IP[/PREFIX][,GATEWAY]``; no prefix means /24."""
    if not value:
        return None
    addr = value.split(",")[0].strip()
    if "/" not in addr:
        addr += "/24"
    try:
        return IPv4Interface(addr)
    except ValueError:
        raise NmError(f"invalid ipv4.address1 {value!r}", 4) from None


@dataclass(frozen=True)
class Profile:
    id: str
    path: str
    text: str

    @property
    def doc(self) -> nmconnection.Keyfile:
        return nmconnection.parse(self.text, source=self.path)

    @property
    def interface(self) -> str:
        return self.doc.get("connection", "interface-name") or self.id

    @property
    def autoconnect(self) -> bool:
        return (self.doc.get("connection", "autoconnect") or "true").lower() not in (
            "false", "no", "0")


def read_profile(path: Path) -> Profile | None:
    try:
        text = path.read_text()
        doc = nmconnection.parse(text, source=str(path))
    except (OSError, BadInput):
        return None  # NetworkManager skips a file it cannot read
    return Profile(doc.get("connection", "id") or path.stem, str(path), text)


# --- the live interface --------------------------------------------------------------


def _peers(doc: nmconnection.Keyfile) -> dict[str, tuple[list[IPv4Network], str | None, str]]:
    out = {}
    for peer in doc.peers:
        pub = peer.name[len(nmconnection.PEER_PREFIX):]
        out[pub] = (allowed_ips(peer.get("allowed-ips")), peer.get("endpoint"),
                    peer.get("persistent-keepalive") or "off")
    return out


def apply(profile: Profile, *, recreate: bool) -> str:
    """Put the profile on its interface. ``recreate``: as activation does (every peer
    removed and added again); else in place, as ``device reapply`` does."""
    doc = profile.doc
    if doc.get("connection", "type") != "wireguard":
        raise NmError(f"{profile.path}: only wireguard connections exist in the lab", 4)
    iface = profile.interface
    if not Path("/sys/class/net", iface).exists():
        raise NmError(f"device {iface} not available", 10)
    private = doc.get("wireguard", "private-key")
    if private:
        _run(["wg", "set", iface, "private-key", "/dev/stdin"], input=private + "\n")
    wanted = _peers(doc)
    for pub in _run(["wg", "show", iface, "peers"]).split():
        if recreate or pub not in wanted:
            _run(["wg", "set", iface, "peer", pub, "remove"])
    for pub, (nets, endpoint, keepalive) in wanted.items():
        argv = ["wg", "set", iface, "peer", pub, "allowed-ips", ",".join(map(str, nets))]
        if endpoint:
            argv += ["endpoint", endpoint]
        argv += ["persistent-keepalive", keepalive]
        _run(argv)
    addr = address(doc.get("ipv4", "address1"))
    current = [IPv4Interface(f"{a['local']}/{a['prefixlen']}")
               for info in json.loads(_run(["ip", "-j", "-4", "addr", "show", "dev", iface]))
               for a in info.get("addr_info", [])]
    for old in current:
        if recreate or old != addr:
            _run(["ip", "addr", "del", str(old), "dev", iface])
    if addr is not None and (recreate or addr not in current):
        _run(["ip", "addr", "add", str(addr), "dev", iface])
    _run(["ip", "link", "set", iface, "up"])
    routes = {net for nets, _, _ in wanted.values() for net in nets}
    existing = {r["dst"] for r in json.loads(_run(
        ["ip", "-j", "-4", "route", "show", "dev", iface, "proto", "static"]))}
    for net in routes:
        argv = ["ip", "route", "replace", str(net), "dev", iface, "proto", "static",
                "metric", str(PEER_ROUTE_METRIC)]
        if addr is not None:
            argv += ["src", str(addr.ip)]
        _run(argv)
    for dst in existing:
        norm = dst if "/" in dst else f"{dst}/32"
        if ip_network(norm, strict=False) not in routes:
            _run(["ip", "route", "del", dst, "dev", iface, "proto", "static",
                  "metric", str(PEER_ROUTE_METRIC)])
    return iface


def take_down(iface: str) -> None:
    if not Path("/sys/class/net", iface).exists():
        return
    for pub in _run(["wg", "show", iface, "peers"]).split():
        _run(["wg", "set", iface, "peer", pub, "remove"])
    _run(["ip", "addr", "flush", "dev", iface])
    _run(["ip", "link", "set", iface, "down"])


# --- NetworkManager's memory and the dispatcher ------------------------------------------


@dataclass
class State:
    profiles: dict[str, Profile]
    active: dict[str, str]  # connection id -> interface

    @classmethod
    def load(cls, path: Path) -> State:
        try:
            data: Any = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        profiles = {str(k): Profile(str(k), str(v["path"]), str(v["text"]))
                    for k, v in dict(data.get("profiles") or {}).items()}
        return cls(profiles, {str(k): str(v) for k, v in dict(data.get("active") or {}).items()})

    def save(self, path: Path) -> None:
        data = {"profiles": {k: {"path": p.path, "text": p.text}
                             for k, p in self.profiles.items()},
                "active": self.active}
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        tmp.replace(path)


def dispatch(dispatcher_dir: Path, iface: str, action: str, connection_id: str) -> None:
    """Run the dispatcher scripts as NetworkManager does: sorted by name, only regular
    executables owned by root and not writable by group or others."""
    if not dispatcher_dir.is_dir():
        return
    env = {**os.environ, "CONNECTION_ID": connection_id, "DEVICE_IFACE": iface,
           "NM_DISPATCHER_ACTION": action}
    for script in sorted(dispatcher_dir.iterdir()):
        try:
            st = script.stat()
        except OSError:
            continue
        if (not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022
                or not st.st_mode & 0o100):
            continue
        proc = subprocess.run([str(script), iface, action], env=env, capture_output=True,
                              text=True, check=False, timeout=30)
        if proc.returncode != 0:  # NetworkManager logs it and goes on
            print(f"dispatcher script {script.name} failed ({proc.returncode}): "
                  f"{proc.stderr.strip()}", file=sys.stderr)


class NetworkManager:
    def __init__(self, state_file: Path, directory: Path = CONNECTIONS_DIR,
                 dispatcher_dir: Path = DISPATCHER_DIR) -> None:
        self.state_file = state_file
        self.directory = directory
        self.dispatcher_dir = dispatcher_dir
        self.state = State.load(state_file)

    def save(self) -> None:
        self.state.save(self.state_file)

    def activate(self, profile: Profile) -> None:
        cid = profile.id
        if cid in self.state.active:  # re-activation: the old one goes down first
            dispatch(self.dispatcher_dir, self.state.active[cid], "down", cid)
        iface = apply(profile, recreate=True)
        self.state.active[cid] = iface
        self.save()
        dispatch(self.dispatcher_dir, iface, "up", cid)

    def deactivate(self, cid: str) -> None:
        iface = self.state.active.pop(cid, None)
        if iface is None:
            return
        take_down(iface)
        self.save()
        dispatch(self.dispatcher_dir, iface, "down", cid)

    def _set_profile(self, profile: Profile) -> None:
        self.state.profiles[profile.id] = profile
        self.save()
        if profile.id not in self.state.active and profile.autoconnect:
            self.activate(profile)

    def _drop_profile(self, cid: str) -> None:
        self.state.profiles.pop(cid, None)
        self.save()
        self.deactivate(cid)

    def reload(self) -> None:
        on_disk = {}
        if self.directory.is_dir():
            for path in sorted(self.directory.glob("*.nmconnection")):
                profile = read_profile(path)
                if profile is not None:
                    on_disk[profile.id] = profile
        for cid in list(self.state.profiles):
            if cid not in on_disk:
                self._drop_profile(cid)
        for profile in on_disk.values():
            known = self.state.profiles.get(profile.id)
            if known is None or known.text != profile.text or profile.id not in self.state.active:
                self._set_profile(profile)

    def load(self, files: Sequence[str]) -> None:
        if not files:
            raise NmError("Error: filename expected.", 2)
        for name in files:
            path = Path(name)
            profile = read_profile(path)
            if profile is None:
                gone = [cid for cid, p in self.state.profiles.items() if p.path == str(path)]
                if not gone:
                    raise NmError(f"Error: failed to load connection: {name}", 4)
                for cid in gone:
                    self._drop_profile(cid)
                continue
            self._set_profile(profile)

    def up(self, cid: str) -> str:
        profile = self.state.profiles.get(cid)
        if profile is None:
            raise NmError(f"Error: unknown connection '{cid}'.", 10)
        self.activate(profile)
        return "Connection successfully activated\n"

    def down(self, cid: str) -> None:
        if cid not in self.state.active:
            raise NmError(f"Error: '{cid}' is not an active connection.", 10)
        self.deactivate(cid)

    def reapply(self, iface: str) -> str:
        for cid, active_iface in self.state.active.items():
            if active_iface == iface:
                apply(self.state.profiles[cid], recreate=False)
                dispatch(self.dispatcher_dir, iface, "reapply", cid)
                return f"Connection successfully reapplied to device '{iface}'.\n"
        raise NmError(f"Error: Device '{iface}' is not activated.", 10)

    def show(self) -> str:
        lines = ["NAME  TYPE  DEVICE"]
        for cid in self.state.profiles:
            lines.append(f"{cid}  wireguard  {self.state.active.get(cid, '--')}")
        return "\n".join(lines) + "\n"

    def boot(self) -> None:
        """NetworkManager starting: nothing in memory, every keyfile loaded and
        activated."""
        self.state = State({}, {})
        self.save()
        self.reload()


def command(args: Sequence[str], *, state_file: Path, directory: Path = CONNECTIONS_DIR,
            dispatcher_dir: Path = DISPATCHER_DIR) -> str:
    """Run one nmcli command line; returns what it prints."""
    argv = [a for a in args if a not in ("-t", "--terse", "-w", "--wait")]
    nm = NetworkManager(state_file, directory, dispatcher_dir)
    if argv == ["lab-boot"]:
        nm.boot()
        return ""
    if len(argv) >= 3 and argv[0] in _DEVICE and argv[1] == "reapply":
        return nm.reapply(argv[2])
    if not argv or argv[0] not in _CONNECTION:
        raise NmError("lab nmcli supports only: nmcli connection reload|load FILE|up ID|"
                      "down ID|show, nmcli device reapply IFACE", 2)
    sub, rest = (argv[1], argv[2:]) if len(argv) > 1 else ("show", [])
    if sub == "reload":
        nm.reload()
        return ""
    if sub == "load":
        nm.load(rest)
        return ""
    if sub in ("up", "down"):
        name = rest[-1] if rest else ""
        if sub == "up":
            return nm.up(name)
        nm.down(name)
        return f"Connection '{name}' successfully deactivated\n"
    if sub == "show":
        return nm.show()
    raise NmError(f"lab nmcli: unsupported `connection {sub}`", 2)


def main(argv: Sequence[str] | None = None, *, state_file: str) -> int:
    try:
        out = command(sys.argv[1:] if argv is None else argv, state_file=Path(state_file))
    except NmError as exc:
        message = str(exc)
        print(message if message.startswith("Error") else f"Error: {message}",
              file=sys.stderr)
        return exc.code
    sys.stdout.write(out)
    return 0
