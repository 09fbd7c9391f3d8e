"""Device-to-device on a device, over SSH: on, off, and the device's true state.

``enable`` makes it last (see :mod:`fiovpn.core.d2d`): it installs the
NetworkManager dispatcher hook, widens the server peer in the keyfile (so an
``nmcli`` re-activation keeps it too) and on the live interface with ``wg set``.
It never runs ``nmcli connection up``: that re-creates the peers under the SSH
session carrying the change. ``disable`` removes the hook and puts back the
handler's narrow route, in the file and live. Both are idempotent: what is
already so is not written again.

Every step reads first and writes last, so a device that refuses (no VPN
connection, no sudo rights) is left as it was. Root-only steps run through
``sudo -n`` when the device user is not root.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import PurePosixPath
from typing import Any

from fiovpn.adapters.ssh import SshClient, sudoers_line
from fiovpn.core import d2d as core
from fiovpn.core import nmconnection
from fiovpn.errors import NotFound, PermanentError, RemoteCommandError
from fiovpn.settings import ClientSettings

VPN_ID = core.VPN_ID
WARNING = (
    "a device's VPN connection is rewritten with the server-only route by fioconfig's VPN "
    "handler at every reboot, on every device of the factory whenever the factory's "
    "wireguard-server file changes, and when the device's own wireguard-client file "
    f"changes; the {core.HOOK_NAME} dispatcher hook installed now widens it again each "
    "time NetworkManager brings factory-vpn0 up. A device without the hook (removed, or "
    "d2d enabled by an older fiovpn) reverts at those moments: check with "
    "`fiovpn devices d2d-status NAME`")


@dataclass(frozen=True, slots=True)
class DevicePaths:
    """Where the device keeps NetworkManager's files (settings ``device-keyfile-dir``
    and ``device-dispatcher-dir``)."""

    keyfile_dir: PurePosixPath
    dispatcher_dir: PurePosixPath

    @classmethod
    def from_settings(cls, settings: ClientSettings) -> DevicePaths:
        return cls(PurePosixPath(str(settings.device_keyfile_dir)),
                   PurePosixPath(str(settings.device_dispatcher_dir)))

    @property
    def keyfile(self) -> str:
        return str(self.keyfile_dir / f"{VPN_ID}.nmconnection")

    @property
    def hook(self) -> str:
        return str(self.dispatcher_dir / core.HOOK_NAME)


@dataclass
class Device:
    """One device reached over SSH, with what fiovpn needs to know of it."""

    name: str
    ip: IPv4Address
    ssh: SshClient
    paths: DevicePaths
    subnet: IPv4Network
    server_ip: IPv4Address

    def sudo_commands(self) -> list[list[str]]:
        """Every root command enable/disable-d2d runs (for the sudoers hint)."""
        k, h = self.paths.keyfile, self.paths.hook
        return [["cat", k], ["wg", "show", VPN_ID, "allowed-ips"],
                ["install", "-D", "-m", "755", "/dev/stdin", f"{h}.fiovpn.tmp"],
                ["mv", "-f", f"{h}.fiovpn.tmp", h], ["rm", "-f", h],
                ["install", "-m", "600", "/dev/stdin", f"{k}.fiovpn.tmp"],
                ["mv", "-f", f"{k}.fiovpn.tmp", k], ["nmcli", "connection", "load", k],
                ["wg", "set", VPN_ID, "peer", "*", "allowed-ips", "*"]]

    def root(self, command: list[str], *, input: str | None = None, check: bool = True,
             timeout: float = 60.0) -> Any:
        try:
            return self.ssh.run(command, input=input, check=check, sudo=True, timeout=timeout)
        except PermanentError as exc:
            if exc.code != "sudo_password":
                raise
            lines = "; ".join(sudoers_line(self.ssh.target.user, c)
                              for c in self.sudo_commands())
            raise PermanentError(
                f"{self.name}: user {self.ssh.target.user!r} may not run commands as root "
                "without a password (sudo -n refused); nothing was changed on the device",
                code="sudo_password",
                hint=f"allow them in the device's sudoers ({lines}), or use --user root"
            ) from None

    # --- reads -----------------------------------------------------------------------

    def read_keyfile(self) -> nmconnection.Keyfile:
        result = self.root(["cat", self.paths.keyfile], check=False, timeout=30)
        if result.returncode != 0:
            err = result.stderr.strip()
            if "No such file" in err:
                raise NotFound(f"{self.name} has no {self.paths.keyfile}: its VPN "
                               "connection is not set up", code="no_vpn_connection",
                               hint="is VPN enabled on the device (`fiovpn devices list`) and "
                                    "has fioconfig applied it?")
            raise RemoteCommandError(f"cannot read {self.paths.keyfile} on {self.name}: "
                                     f"{err or result.returncode}")
        return nmconnection.parse(result.stdout, source=f"{self.name}:{self.paths.keyfile}")

    def live_peers(self) -> dict[str, tuple[IPv4Network, ...]]:
        result = self.root(["wg", "show", VPN_ID, "allowed-ips"], check=False, timeout=30)
        if result.returncode != 0:
            err = result.stderr.strip()
            raise NotFound(f"{self.name} has no live {VPN_ID} interface "
                           f"(`wg show {VPN_ID}`: {err or result.returncode})",
                           code="no_vpn_connection",
                           hint="is VPN enabled on the device and its connection up?")
        return core.parse_allowed_ips(result.stdout)

    def hook_text(self) -> str | None:
        result = self.ssh.run(["cat", self.paths.hook], check=False, timeout=30)
        return result.stdout if result.returncode == 0 else None

    def status(self) -> core.D2dStatus:
        peers = self.live_peers()
        peer = core.server_peer(peers, self.server_ip, self.subnet)
        return core.D2dStatus(self.name, self.ip, peers.get(peer, ()) if peer else (),
                              self.subnet, core.hook_subnet(self.hook_text()))

    # --- writes ----------------------------------------------------------------------

    def install(self, path: str, text: str, mode: str) -> None:
        """Write ``path`` atomically, content through stdin (never argv)."""
        tmp = f"{path}.fiovpn.tmp"
        self.root(["install", "-D", "-m", mode, "/dev/stdin", tmp], input=text, timeout=30)
        self.root(["mv", "-f", tmp, path], timeout=30)

    def set_live(self, peer: str, nets: list[IPv4Network]) -> None:
        self.root(["wg", "set", VPN_ID, "peer", peer, "allowed-ips",
                   ",".join(str(n) for n in nets)], timeout=30)


def _live_peer(device: Device, peers: dict[str, tuple[IPv4Network, ...]],
               doc: nmconnection.Keyfile) -> str:
    """The server peer's public key on the live interface (the keyfile names it)."""
    group = nmconnection.server_peer(doc, device.subnet)
    pub = group.name[len(nmconnection.PEER_PREFIX):]
    if pub in peers:
        return pub
    found = core.server_peer(peers, device.server_ip, device.subnet)
    if found is None:
        raise PermanentError(f"{device.name}: the live {VPN_ID} interface has no peer for "
                             f"the server (peers: {', '.join(peers) or 'none'})",
                             code="no_server_peer",
                             hint="run `nmcli connection up factory-vpn0` on the device "
                                  "(from its console: it re-creates the tunnel)")
    return found


def enable(device: Device) -> dict[str, Any]:
    """Device-to-device on, lasting. Returns what changed and the state read back."""
    doc = device.read_keyfile()  # reads first: a refusing device is left untouched
    peers = device.live_peers()
    hook = device.hook_text()
    peer = _live_peer(device, peers, doc)
    changed = []
    wanted_hook = core.render_hook(device.subnet, device.server_ip)
    if hook != wanted_hook:
        device.install(device.paths.hook, wanted_hook, "755")
        changed.append("hook")
    new = nmconnection.widen_server_peer(doc, device.subnet)
    if new.render() != doc.render():
        device.install(device.paths.keyfile, new.render(), "600")
        # NetworkManager re-reads the file; an active connection is not re-activated
        device.root(["nmcli", "connection", "load", device.paths.keyfile], timeout=60)
        changed.append("keyfile")
    if not any(device.subnet.subnet_of(n) for n in peers.get(peer, ())):
        device.set_live(peer, [device.subnet])
        if device.subnet.prefixlen < core.ADDRESS_PREFIX:
            device.root(["ip", "route", "replace", str(device.subnet), "dev", VPN_ID])
        changed.append("interface")
    return _verified(device, True, changed)


def disable(device: Device) -> dict[str, Any]:
    """Device-to-device off: the hook removed, the handler's server-only route back."""
    doc = device.read_keyfile()
    peers = device.live_peers()
    hook = device.hook_text()
    peer = _live_peer(device, peers, doc)
    changed = []
    if hook is not None:
        device.root(["rm", "-f", device.paths.hook], timeout=30)
        changed.append("hook")
    new = nmconnection.restore_server_peer(doc, device.server_ip, device.subnet)
    if new.render() != doc.render():
        device.install(device.paths.keyfile, new.render(), "600")
        device.root(["nmcli", "connection", "load", device.paths.keyfile], timeout=60)
        changed.append("keyfile")
    narrow = [IPv4Network(f"{device.server_ip}/32")]
    if list(peers.get(peer, ())) != narrow:
        device.set_live(peer, narrow)
        if device.subnet.prefixlen < core.ADDRESS_PREFIX:
            device.root(["ip", "route", "del", str(device.subnet), "dev", VPN_ID],
                        check=False)
        changed.append("interface")
    return _verified(device, False, changed)


def _verified(device: Device, enable: bool, changed: list[str]) -> dict[str, Any]:
    status = device.status()
    if status.d2d != enable or status.persistent != enable:
        raise PermanentError(f"{device.name}: after the change {status.summary()}",
                             code="d2d_not_applied")
    return {"name": device.name, "vpn_ip": str(device.ip), "device_to_device": enable,
            "persistent": status.persistent, "changed": bool(changed),
            "changed_parts": changed, "allowed_ips": [str(n) for n in status.allowed_ips],
            "warning": WARNING if enable else None}

