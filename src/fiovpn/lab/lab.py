"""``Lab``: builds the namespaces, roles and processes, and removes all of them.

    with Lab.create(devices=2, engineers=1) as lab:
        lab.server.enable()
        lab.server.start_daemon()
        lab.apply_factory_config()
        ...

Topology: a bridge in the lab's ``<prefix>n`` namespace; every role namespace
has a veth to it on 198.18.0.0/24 (server .1, factory .2, devices .10+,
engineers .100+). Names are ``<prefix>...`` with ``prefix = fv + 4 hex``,
unique per run and at most 15 characters.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from fiovpn.adapters.runner import install_command, require_tool
from fiovpn.core.addresses import VpnNetwork
from fiovpn.core.names import validate_interface, validate_name
from fiovpn.errors import MissingTool, PermanentError
from fiovpn.lab import ha as lab_ha
from fiovpn.lab import net, record
from fiovpn.lab.proc import (
    Child,
    LabError,
    become_subreaper,
    reap_adopted,
    spawn,
    start_time,
    wait_for,
)
from fiovpn.lab.roles import (
    SYSTEM_PATH,
    Device,
    Engineer,
    Factory,
    Role,
    Server,
    host_key_line,
    sshd_config,
)

# Every program the lab (and so the demo) runs, in the order they are reported missing.
LAB_TOOLS = ("ip", "ss", "wg", "wg-quick", "wireguard-go", "nft", "sshd", "ssh", "ssh-keygen",
             "ping", "unshare", "nsenter", "setsid", "hostname")


@dataclass(frozen=True)
class DeviceSpec:
    """A device of the lab: its factory name, whether VPN is enabled for it (an
    address assigned fioctl-style in its wireguard-client file), and its factory
    device group and tag (``device-group`` / ``tag`` in the device list)."""

    name: str
    vpn: bool = True
    group: str = "lab"
    tag: str = ""


def preflight(purpose: str = "the namespace lab", *,
              euid: Callable[[], int] = os.geteuid,
              which: Callable[[str], str | None] = shutil.which,
              tun: Path = Path("/dev/net/tun")) -> None:
    """Clear errors before anything is built: root, every program the lab runs (one
    install command naming the Debian packages of all that is missing), the tun device."""
    if euid() != 0:
        raise PermanentError(
            f"{purpose} needs root: it builds network namespaces and WireGuard interfaces "
            "(nothing outside them is touched); run it with sudo", code="not_root")
    missing = [tool for tool in LAB_TOOLS if which(tool) is None]
    if missing:
        raise MissingTool(f"{purpose} needs {', '.join(missing)}: run "
                          f"`{install_command(missing)}`", code="missing_tool")
    if not tun.exists():
        raise PermanentError(
            f"{tun} is missing: wireguard-go needs the tun device (in a container, "
            "start it with --device /dev/net/tun)", code="no_tun")


def fiovpn_executable() -> str:
    """The absolute path of the `fiovpn` entry point of this Python (for namespaces,
    sshd sessions and `--server-command`)."""
    sibling = Path(sys.executable).parent / "fiovpn"
    if sibling.exists():
        return str(sibling)
    found = shutil.which("fiovpn")
    if found is None:
        raise LabError("the `fiovpn` command is not installed: run `pip install -e .`")
    return found


def sandbox_available() -> bool:
    """Whether this fiovpn has the `sandbox serve` command (the sandbox factory)."""
    proc = subprocess.run([fiovpn_executable(), "sandbox", "serve", "--help"],
                          capture_output=True, text=True, check=False, timeout=60)
    return proc.returncode == 0


class Lab:
    """A whole fleet in network namespaces: factory, server, devices, engineers."""

    def __init__(self, *, prefix: str, directory: Path, record_dir: Path, keep: bool,
                 factory_name: str) -> None:
        self.prefix = prefix
        self.dir = directory
        self.record_dir = record_dir
        self.keep = keep
        self.factory_name = factory_name
        self.hub_ns = f"{prefix}n"
        self.bridge = f"{prefix}br"
        self.namespaces: list[str] = []
        self.children: list[Child] = []
        self.fiovpn_path = fiovpn_executable()
        self.server_command = self.fiovpn_path
        self.known_hosts = directory / "known_hosts"
        self.factory: Factory | None = None
        self.server: Server
        self.server2: Server | None = None  # HA labs: server B
        self.devices: list[Device] = []
        self.engineers: list[Engineer] = []
        self.setup_seconds = 0.0
        self._closed = False

    # --- lifecycle -------------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def create(cls, *, devices: int | Sequence[str | DeviceSpec] = 2, engineers: int = 1,
               admins: int | None = None, factory: bool = True, keep: bool = False,
               factory_name: str = "lab", record_dir: Path | None = None,
               base_dir: Path | None = None,
               server_settings: Mapping[str, Any] | None = None,
               ha: bool = False) -> Iterator[Lab]:
        """Build a lab; remove it (every process, namespace, file) on exit unless
        ``keep``. ``devices``: a count (device1..N, all VPN-enabled) or names/specs.
        ``admins``: how many of the engineers (the first ones) may SSH to the server
        (default: all). ``factory=False``: no sandbox (server/devices configured by hand).
        ``server_settings``: extra/overriding keys of the server TOML. ``ha``: two
        servers behind a VIP moved by keepalived (``lab.server``, ``lab.server2``;
        see ``fiovpn.lab.ha``)."""
        lab = cls.build(devices=devices, engineers=engineers, admins=admins, factory=factory,
                        keep=keep, factory_name=factory_name, record_dir=record_dir,
                        base_dir=base_dir, server_settings=server_settings, ha=ha)
        try:
            yield lab
        finally:
            if keep:
                lab.save_record()
                lab.release()
            else:
                lab.close()

    @classmethod
    def build(cls, *, devices: int | Sequence[str | DeviceSpec] = 2, engineers: int = 1,
              admins: int | None = None, factory: bool = True, keep: bool = False,
              factory_name: str = "lab", record_dir: Path | None = None,
              base_dir: Path | None = None,
              server_settings: Mapping[str, Any] | None = None, ha: bool = False) -> Lab:
        """Like :meth:`create` without the context manager: call ``close()`` yourself."""
        preflight()
        validate_name(factory_name, what="factory name")
        specs = _device_specs(devices)
        if not 0 < len(specs) + engineers <= 80:
            raise LabError("a lab holds 1-80 devices and engineers together")
        prefix = _free_prefix()
        directory = Path(tempfile.mkdtemp(prefix=f"fiovpn-lab-{prefix}-", dir=base_dir))
        lab = cls(prefix=prefix, directory=directory, record_dir=record.lab_dir(record_dir),
                  keep=keep, factory_name=factory_name)
        started = time.monotonic()
        try:
            become_subreaper()
            lab._build(specs, engineers, admins, factory, dict(server_settings or {}), ha)
        except BaseException as exc:
            try:
                lab.close()
            except Exception as cleanup:
                exc.add_note(f"and the cleanup failed too: {cleanup}")
            raise
        lab.setup_seconds = time.monotonic() - started
        return lab

    def _build(self, specs: list[DeviceSpec], n_engineers: int, admins: int | None,
               with_factory: bool, server_settings: dict[str, Any], ha: bool = False) -> None:
        p = self.prefix
        self.save_record()  # from now on `fiovpn lab down` can clean up even after a crash
        self._add_ns(self.hub_ns)
        net.add_bridge(self.hub_ns, self.bridge)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir

        if with_factory:
            self._add_role_ns(f"{p}f", "198.18.0.2")
            self.factory = Factory(self, f"{p}f", "198.18.0.2", factory=self.factory_name,
                                   token=secrets.token_hex(16))
        self._add_role_ns(f"{p}s", "198.18.0.1")
        # sshd binds the VPN address before the daemon has created it
        net.sysctl(f"{p}s", "net.ipv4.ip_nonlocal_bind", "1")
        a_settings = dict(server_settings)
        if ha:
            a_settings = {**lab_ha.ha_settings(self, peer_ip=lab_ha.SERVER_B_IP,
                                               home=self.dir / "server"), **server_settings}
        self.server = Server(self, f"{p}s", "198.18.0.1", interface=validate_interface(
            f"{p}srv"), settings=a_settings, endpoint_ip=lab_ha.VIP if ha else None)
        if ha:
            lab_ha.require_keepalived()
            self._add_role_ns(f"{p}s2", lab_ha.SERVER_B_IP)
            net.sysctl(f"{p}s2", "net.ipv4.ip_nonlocal_bind", "1")
            b_settings = {**lab_ha.ha_settings(self, peer_ip=self.server.underlay_ip,
                                               home=self.dir / "server2"), **server_settings}
            self.server2 = Server(self, f"{p}s2", lab_ha.SERVER_B_IP,
                                  interface=validate_interface(f"{p}srv2"),
                                  settings=b_settings, name="server2",
                                  endpoint_ip=lab_ha.VIP)
            for srv in self.servers:
                self.ssh_keygen(srv.home / "ha_id_ed25519", comment=f"{srv.name}@{p}")

        network = VpnNetwork.build(Server.subnet, Server.vpn_ip)
        used: list[IPv4Address] = []
        for i, spec in enumerate(specs, start=1):
            ns, underlay = f"{p}d{i}", f"198.18.0.{9 + i}"
            self._add_role_ns(ns, underlay)
            vpn_ip = None
            if spec.vpn:
                vpn_ip = network.next_device_ip(used)
                used.append(vpn_ip)
            device = Device(self, i, spec.name, ns, underlay, vpn_ip=vpn_ip,
                            group=spec.group, tag=spec.tag)
            self.devices.append(device)
        for i in range(1, n_engineers + 1):
            ns, underlay = f"{p}e{i}", f"198.18.0.{99 + i}"
            self._add_role_ns(ns, underlay)
            admin = admins is None or i <= admins
            self.engineers.append(Engineer(self, i, ns, underlay, admin=admin))

        if self.factory is not None:
            self.factory.seed(self.devices)
            self.factory.start()
        for eng in self.engineers:
            eng.setup()
        self._start_server_sshd(self.server)
        for device in self.devices:
            device.start_namespace()
            self.save_record()
            device.start_services()
        self.save_record()
        for device in self.devices:
            self.wait_listening(device, 22)
        self.wait_listening(self.server, Server.ssh_port)
        self.write_known_hosts()
        if self.server2 is not None:
            # B becomes A's twin the way an admin makes it: ha-join from the active.
            b = self.server2
            b.fiovpn("server", "--config", str(b.config_path), "ha-join", "--from",
                     f"root@{self.server.underlay_ip}:{Server.ssh_port}",
                     "--identity-file", str(b.home / "ha_id_ed25519"),
                     "--known-hosts", str(self.known_hosts),
                     "--server-command", self.fiovpn_path)
            b.keys = self.server.keys
            self._start_server_sshd(b, host_key_exists=True)
            self.wait_listening(b, Server.ssh_port)
            self.write_known_hosts()
        if self.factory is not None:
            self.factory.wait_ready()
        self.save_record()

    def _add_ns(self, ns: str) -> None:
        validate_interface(ns)
        self.namespaces.append(ns)
        net.add_netns(ns)

    def _add_role_ns(self, ns: str, address: str) -> None:
        self._add_ns(ns)
        net.connect(self.hub_ns, self.bridge, ns, hub_if=validate_interface(f"{ns}h"),
                    role_if=validate_interface(f"{ns}u"), address=address)

    def wait_listening(self, role: Role, port: int) -> None:
        sshd = next((c for c in reversed(self.children) if c.name == f"{role.name}: sshd"),
                    None)

        def check() -> bool:
            if sshd is not None and not sshd.running():
                raise LabError(f"sshd of {role.name} exited: {sshd.log_tail()}")
            return role.listening(port)
        wait_for(check, timeout=10, what=f"sshd of {role.name} on port {port}",
                 detail=lambda: sshd.log_tail() if sshd else "")

    def ssh_keygen(self, path: Path, *, comment: str) -> None:
        subprocess.run([require_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C",
                        comment, "-f", str(path)], check=True, capture_output=True,
                       timeout=30, stdin=subprocess.DEVNULL)

    def _write_authorized_keys(self, path: Path, engineers: Sequence[Engineer]) -> None:
        path.write_text("".join(f"{e.ssh_public_key}\n" for e in engineers))
        path.chmod(0o600)

    def _start_sshd(self, role: Role, *, listen: Sequence[str], port: int,
                    engineers: Sequence[Engineer], setenv: Mapping[str, str],
                    extra_keys: Sequence[str] = (), host_key_exists: bool = False,
                    more_authorized_keys: Sequence[str] = ()) -> Child:
        ssh_dir = role.home / "sshd"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        host_key = ssh_dir / "ssh_host_ed25519_key"
        # a rebooted device keeps its host key; an HA twin has the active's
        if not host_key_exists and not host_key.exists():
            self.ssh_keygen(host_key, comment=f"{role.name}@{self.prefix}")
        authorized = ssh_dir / "authorized_keys"
        self._write_authorized_keys(authorized, engineers)
        if extra_keys:
            with authorized.open("a") as fh:
                fh.write("".join(f"{k}\n" for k in extra_keys))
        config = ssh_dir / "sshd_config"
        config.write_text(sshd_config(listen=listen, port=port, host_key=host_key,
                                      authorized_keys=authorized,
                                      pid_file=ssh_dir / "sshd.pid", setenv=setenv,
                                      more_authorized_keys=more_authorized_keys))
        return role.spawn([require_tool("sshd"), "-D", "-e", "-f", str(config)], name="sshd",
                          log=ssh_dir / "sshd.log")

    def _start_server_sshd(self, server: Server, *, host_key_exists: bool = False) -> None:
        admins = [e for e in self.engineers if e.admin]
        listen = [Server.vpn_ip]
        extra: list[str] = []
        if self.server2 is not None:
            # HA: the other server reaches this one at its own address (the VPN
            # address is the same on both)
            listen.append(server.underlay_ip)
            extra = [(s.home / "ha_id_ed25519.pub").read_text().strip()
                     for s in self.servers if s is not server]
        self._start_sshd(server, listen=listen, port=Server.ssh_port, engineers=admins,
                         setenv=server.sshd_setenv(), extra_keys=extra,
                         host_key_exists=host_key_exists)

    def start_device_sshd(self, device: Device) -> Child:
        # every address of the device: the VPN address may be assigned later
        anywhere = "0.0.0.0"  # noqa: S104 - inside the device's own namespace
        # root logs in with the lab's keys; another device user (made in the device's
        # own /etc) with /etc/ssh/authorized_keys/<user>, which sshd reads as that user
        return self._start_sshd(device, listen=[anywhere], port=22, engineers=self.engineers,
                                more_authorized_keys=["/etc/ssh/authorized_keys/%u"],
                                setenv={"PATH": f"{device.bin}:{Path(sys.executable).parent}:"
                                                f"{SYSTEM_PATH}"})

    def write_known_hosts(self) -> None:
        """Host keys of the server ([10.42.42.1]:5025) and of every device (by name,
        VPN address and underlay address) for the engineers' ssh."""
        lines = []
        server_key = self.server.home / "sshd" / "ssh_host_ed25519_key.pub"
        if server_key.exists():
            lines.append(f"[{Server.vpn_ip}]:{Server.ssh_port} {host_key_line(server_key)}")
        for srv in self.servers if self.server2 is not None else ():
            pub = srv.home / "sshd" / "ssh_host_ed25519_key.pub"
            if pub.exists():
                lines.append(f"[{srv.underlay_ip}]:{Server.ssh_port} {host_key_line(pub)}")
        for d in self.devices:
            pub = d.home / "sshd" / "ssh_host_ed25519_key.pub"
            if not pub.exists():
                continue
            names = [d.device_name, d.underlay_ip] + ([str(d.vpn_ip)] if d.vpn_ip else [])
            lines.append(f"{','.join(names)} {host_key_line(pub)}")
        tmp = self.known_hosts.with_suffix(".tmp")
        tmp.write_text("".join(f"{ln}\n" for ln in lines))
        tmp.chmod(0o644)
        tmp.replace(self.known_hosts)

    def spawn(self, name: str, argv: Sequence[str], *, env: Mapping[str, str],
              log: Path | None) -> Child:
        child = spawn(name, argv, env=env, log=log)
        self.children.append(child)
        return child

    def untrack(self, child: Child) -> None:
        with contextlib.suppress(ValueError):
            self.children.remove(child)

    def close(self) -> None:
        """Remove everything: children (newest first), leftovers in the namespaces
        (e.g. a daemonized wireguard-go), /run/wireguard sockets, namespaces, the dir."""
        if self._closed:
            return
        self._closed = True
        problems: list[str] = []
        for child in reversed(self.children):
            try:
                child.stop(grace=3.0)
            except Exception as exc:  # keep tearing down the rest
                problems.append(f"{child.name}: {exc}")
        self.children.clear()
        problems += record.destroy({"prefix": self.prefix, "namespaces": self.namespaces,
                                    "dir": str(self.dir)})
        reap_adopted()
        (self.record_dir / f"{self.prefix}.json").unlink(missing_ok=True)
        if problems:
            raise LabError("lab teardown left things behind: " + "; ".join(problems))

    def release(self) -> None:
        """Keep the lab running after this process exits (``keep=True``): close our
        log handles but leave every process alone."""
        for child in self.children:
            child.release()

    # --- records and roles -----------------------------------------------------------

    @property
    def roles(self) -> dict[str, Role]:
        out: dict[str, Role] = {}
        if self.factory is not None:
            out["factory"] = self.factory
        if hasattr(self, "server"):
            out["server"] = self.server
        if self.server2 is not None:
            out["server2"] = self.server2
        out.update({d.name: d for d in self.devices})
        out.update({e.name: e for e in self.engineers})
        return out

    def role(self, name: str) -> Role:
        """A role by lab name (server, factory, device1, engineer1) or device name."""
        roles = self.roles
        if name in roles:
            return roles[name]
        for d in self.devices:
            if d.device_name == name:
                return d
        raise LabError(f"no role {name!r} in this lab (roles: {', '.join(roles)})")

    def device(self, name: str) -> Device:
        role = self.role(name)
        if not isinstance(role, Device):
            raise LabError(f"{name} is not a device")
        return role

    def to_record(self) -> dict[str, Any]:
        roles = {}
        for name, role in self.roles.items():
            entry = role.record()
            if isinstance(role, Device) and role.holder is not None:
                entry["holder_started"] = role.holder.started
            roles[name] = entry
        return {
            "prefix": self.prefix, "dir": str(self.dir), "keep": self.keep,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "factory": self.factory_name,
            "api_url": self.factory.api_url if self.factory else None,
            "namespaces": list(self.namespaces),
            "pids": [[c.pid, c.started] for c in self.children if c.running()],
            "roles": roles,
        }

    def save_record(self) -> Path:
        return record.write(self.record_dir, self.to_record())

    # --- conveniences ----------------------------------------------------------------

    @property
    def servers(self) -> list[Server]:
        """Server A, and B in an HA lab."""
        return [self.server] + ([self.server2] if self.server2 is not None else [])

    def start_ha(self, *, timeout: float = 40.0) -> None:
        """The HA starting point: A publishes the VIP as the endpoint, both daemons
        run, keepalived gives A the VIP first, devices apply their config, and
        both servers hold one peer per VPN-enabled device."""
        if self.server2 is None:
            raise LabError("start_ha needs Lab.create(ha=True)")
        a, b = self.server, self.server2
        a.enable()
        for srv in (a, b):
            srv.start_daemon()
        for srv in (a, b):
            srv.wait_synced(timeout=timeout)
        # A first and with the higher priority: equal priorities go to the higher
        # address (B) when both start together
        lab_ha.start_keepalived(a, b, priority=lab_ha.PRIORITY_A)
        lab_ha.wait_vip(a, timeout=timeout)
        lab_ha.start_keepalived(b, a)
        lab_ha.wait_vrrp_state(b, "BACKUP", timeout=timeout)
        if not lab_ha.holds_vip(a):
            raise LabError("server A lost the VIP while B started: "
                           f"{a.keepalived.log_tail() if a.keepalived else ''}; health: "
                           f"{lab_ha.health_log(a)}")
        self.apply_factory_config()
        ips = [str(d.vpn_ip) for d in self.devices if d.vpn_ip is not None]
        for srv in (a, b):
            srv.wait_peers(ips, timeout=timeout)

    def apply_factory_config(self) -> dict[str, bool]:
        """Every device applies its current factory config (as fioconfig would)."""
        return {d.device_name: d.apply_factory_config() for d in self.devices}

    def start_vpn(self, *daemon_args: str, timeout: float = 30.0) -> None:
        """The usual starting point of a flow test: ``server enable``, the daemon
        running and synced, every device's factory config applied, and the
        server holding one peer per VPN-enabled device."""
        if self.factory is None:
            raise LabError("start_vpn needs the sandbox factory (Lab.create(factory=True))")
        self.server.enable()
        self.server.start_daemon(*daemon_args)
        self.server.wait_synced(timeout=timeout)
        self.apply_factory_config()
        self.server.wait_peers([str(d.vpn_ip) for d in self.devices if d.vpn_ip is not None],
                               timeout=timeout)

    def join(self, engineer: Engineer, *, name: str | None = None,
             timeout: float = 20.0) -> str:
        """The first-admin flow for ``engineer``: `client init`, `server clients add`
        on the server itself, `client init --address`, `connect`; waits until the
        server answers through the tunnel. Returns the engineer's VPN address."""
        init = engineer.fiovpn_json("client", "init")
        added = self.server.fiovpn_json("server", "clients", "add", "--public-key",
                                        str(init["public_key"]), "--name",
                                        name or engineer.name)
        address = str(added["ip"])
        engineer.fiovpn("client", "init", "--address", address)
        engineer.fiovpn("connect")
        if not engineer.ping(Server.vpn_ip, timeout=timeout):
            raise LabError(f"{engineer.name} connected but {Server.vpn_ip} does not answer "
                           "through the tunnel")
        return address

    def ping(self, role: str | Role, ip: str, *, timeout: float = 10.0) -> bool:
        r = role if isinstance(role, Role) else self.role(role)
        return r.ping(ip, timeout=timeout)

    def tcp_connect(self, role: str | Role, ip: str, port: int, *,
                    timeout: float = 3.0) -> bool:
        r = role if isinstance(role, Role) else self.role(role)
        return r.tcp_connect(ip, port, timeout=timeout)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.keep:
            self.save_record()
            self.release()
        else:
            self.close()


def _free_prefix() -> str:
    """``fv`` + 4 hex digits that no namespace or WireGuard socket uses yet."""
    for _ in range(100):
        prefix = "fv" + secrets.token_hex(2)
        if not net.list_netns(prefix) and not any(net.WIREGUARD_RUN.glob(f"{prefix}*")):
            return prefix
    raise LabError("no free lab prefix: remove old labs with `fiovpn lab down --all`")


def _device_specs(devices: int | Sequence[str | DeviceSpec]) -> list[DeviceSpec]:
    if isinstance(devices, int):
        return [DeviceSpec(f"device{i}") for i in range(1, devices + 1)]
    specs = [d if isinstance(d, DeviceSpec) else DeviceSpec(d) for d in devices]
    for s in specs:
        validate_name(s.name, what="device name")
    if len({s.name for s in specs}) != len(specs):
        raise LabError("device names must be unique")
    return specs


def leftovers(prefix: str) -> list[str]:
    """What of lab ``prefix`` still exists (namespaces, links, sockets, processes):
    empty after a clean teardown."""
    found: list[str] = []
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False,
                        timeout=30).stdout
    found += [f"netns {line.split()[0]}" for line in ns.splitlines()
              if line.startswith(prefix)]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False,
                           timeout=30).stdout
    found += [f"link {line.split(':')[1].strip()}" for line in links.splitlines()
              if prefix in line]
    if net.WIREGUARD_RUN.is_dir():
        found += [f"socket {p}" for p in net.WIREGUARD_RUN.glob(f"{prefix}*")]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            continue
        if prefix in cmdline and start_time(int(proc.name)) is not None:
            found.append(f"process {proc.name}: {cmdline.strip()[:120]}")
    return found
