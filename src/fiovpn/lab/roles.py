"""The lab's roles: each has a network namespace, a home dir under the lab dir,
an environment, and runs commands and long-lived children inside its namespace.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

from fiovpn.adapters.fs import atomic_write
from fiovpn.adapters.runner import Completed, SubprocessRunner, require_tool
from fiovpn.core.factory_files import (
    VPN_HANDLER,
    WIREGUARD_CLIENT_FILE,
    WIREGUARD_SERVER_FILE,
    ClientConfigFile,
    ServerConfigFile,
)
from fiovpn.core.keys import Key, KeyPair
from fiovpn.core.names import validate_name
from fiovpn.core.wgdump import PeerDump, parse_dump
from fiovpn.errors import BadInput
from fiovpn.lab.fioconfig import ConfigFile, Fioconfig, HandlerRun
from fiovpn.lab.handler import handler_script
from fiovpn.lab.probes import HTTP_SCRIPT, TCP_SCRIPT, HttpReply, PingStream
from fiovpn.lab.proc import Child, LabError, kill_pid, start_time, wait_for
from fiovpn.settings import render_toml

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONNECTION_ID = "factory-vpn0"
KEYFILE_DIR = "etc/NetworkManager/system-connections"
DISPATCHER_DIR = "etc/NetworkManager/dispatcher.d"


def base_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A small, explicit environment: nothing of the caller's FIOVPN_* or proxies leaks in."""
    bindir = str(Path(sys.executable).parent)
    env = {"PATH": f"{bindir}:{SYSTEM_PATH}", "HOME": str(home), "LANG": "C.UTF-8",
           "LC_ALL": "C.UTF-8"}
    env.update(extra or {})
    return env


def sshd_config(*, listen: Sequence[str], port: int, host_key: Path, authorized_keys: Path,
                pid_file: Path, setenv: Mapping[str, str],
                more_authorized_keys: Sequence[str] = ()) -> str:
    lines = [f"Port {port}"]
    lines += [f"ListenAddress {addr}" for addr in listen]
    lines += [
        f"HostKey {host_key}",
        "AuthorizedKeysFile " + " ".join([str(authorized_keys), *more_authorized_keys]),
        f"PidFile {pid_file}",
        "StrictModes no",  # keys live under /tmp
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        "PrintMotd no",
        "UseDNS no",
        "LogLevel VERBOSE",
        "Subsystem sftp internal-sftp",
    ]
    if setenv:
        lines.append("SetEnv " + " ".join(f"{k}={v}" for k, v in setenv.items()))
    return "\n".join(lines) + "\n"


def handler_keyfile(interface: str, private_key: Key, server: ServerConfigFile,
                    address: IPv4Address) -> str:
    """The keyfile fioconfig's factory-config-vpn handler writes for a device."""
    return (f"[connection]\nid={CONNECTION_ID}\ntype=wireguard\n"
            f"interface-name={interface}\npermissions=\n\n"
            f"[wireguard]\nprivate-key={private_key}\n\n"
            f"[wireguard-peer.{server.pubkey}]\nendpoint={server.endpoint}\n"
            f"persistent-keepalive=25\nallowed-ips={server.server_address}\n\n"
            f"[ipv4]\naddress1={address}\ndns-search=\nmethod=manual\n\n"
            f"[ipv6]\naddr-gen-mode=stable-privacy\ndns-search=\nmethod=ignore\n")


def host_key_line(pub_file: Path) -> str:
    """``TYPE BASE64`` of an OpenSSH public key file (comment dropped)."""
    kind, blob, *_ = pub_file.read_text().split()
    return f"{kind} {blob}"


WgPeer = PeerDump  # a peer of the server's live interface, as `wg show dump` gives it


def parse_wg_dump(text: str) -> dict[str, WgPeer]:
    """The peers of ``wg show IFACE dump``, by public key."""
    return {str(p.public_key): p for p in parse_dump(text).peers}


class Lab(Protocol):
    """What a role needs from the lab it lives in (``fiovpn.lab.lab.Lab`` is one);
    named here so this module does not import the lab that builds the roles."""

    @property
    def prefix(self) -> str: ...
    @property
    def dir(self) -> Path: ...
    @property
    def factory_name(self) -> str: ...
    @property
    def fiovpn_path(self) -> str: ...
    @property
    def server_command(self) -> str: ...
    @property
    def known_hosts(self) -> Path: ...
    @property
    def factory(self) -> Factory | None: ...
    @property
    def server(self) -> Server: ...
    @property
    def engineers(self) -> Sequence[Engineer]: ...

    def spawn(self, name: str, argv: Sequence[str], *, env: Mapping[str, str],
              log: Path | None) -> Child: ...

    def untrack(self, child: Child) -> None: ...

    def ssh_keygen(self, path: Path, *, comment: str) -> None: ...

    def write_known_hosts(self) -> None: ...

    def start_device_sshd(self, device: Device) -> Child: ...

    def wait_listening(self, role: Role, port: int) -> None: ...


class Role:
    """One participant of the lab, living in network namespace ``ns``."""

    kind = "role"

    def __init__(self, lab: Lab, name: str, ns: str, underlay_ip: str) -> None:
        self.lab = lab
        self.name = name
        self.ns = ns
        self.underlay_ip = underlay_ip
        self.home = lab.dir / name
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.env: dict[str, str] = base_env(self.home)

    # --- running things --------------------------------------------------------------

    @property
    def enter(self) -> list[str]:
        """The argv prefix that puts a command inside this role's namespace(s)."""
        return ["ip", "netns", "exec", self.ns]

    @property
    def runner(self) -> SubprocessRunner:
        return SubprocessRunner(prefix=self.enter, env=self.env, new_session=True)

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True,
            timeout: float = 60.0, env: Mapping[str, str] | None = None) -> Completed:
        return self.runner.run(argv, input=input, check=check, timeout=timeout, env=env)

    def spawn(self, argv: Sequence[str], *, name: str | None = None, log: Path | None = None,
              env: Mapping[str, str] | None = None) -> Child:
        """Start a long-running child in this role's namespace; the lab kills it at teardown."""
        return self.lab.spawn(f"{self.name}: {name or argv[0]}", [*self.enter, *argv],
                              env={**self.env, **(env or {})}, log=log)

    def fiovpn(self, *args: str, input: str | None = None, check: bool = True,
               timeout: float = 60.0, env: Mapping[str, str] | None = None) -> Completed:
        """``fiovpn ARGS`` in this role's namespace with its environment."""
        return self.run([self.lab.fiovpn_path, *args], input=input, check=check,
                        timeout=timeout, env=env)

    def fiovpn_json(self, *args: str, check: bool = True, timeout: float = 60.0) -> Any:
        """``fiovpn ARGS --json``, parsed (also when it failed: ``{"error": ...}``)."""
        result = self.fiovpn(*args, "--json", check=check, timeout=timeout)
        try:
            return json.loads(result.stdout)
        except ValueError:
            raise LabError(f"`fiovpn {' '.join(args)} --json` printed no JSON "
                           f"(exit {result.returncode}): {result.stdout[:200]!r} "
                           f"{result.stderr[-300:]!r}") from None

    # --- probes (always from inside the namespace) -----------------------------------

    def ping_once(self, ip: str, *, wait: float = 1.0) -> bool:
        return self.run(["ping", "-n", "-c1", f"-W{max(1, round(wait))}", ip],
                        check=False, timeout=wait + 5).ok

    def ping(self, ip: str, *, timeout: float = 10.0) -> bool:
        """True as soon as one ping is answered; False when none was before ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if self.ping_once(ip):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def tcp_connect(self, ip: str, port: int, *, timeout: float = 3.0) -> bool:
        return self.run([sys.executable, "-c", TCP_SCRIPT, ip, str(port), str(timeout)],
                        check=False, timeout=timeout + 10).ok

    def ping_stream(self, ip: str, *, interval: float = 0.2) -> PingStream:
        return PingStream(self, ip, interval=interval)

    def http(self, method: str, url: str, *, body: Any = None, token: str | None = None,
             timeout: float = 10.0, headers: Mapping[str, str] | None = None) -> HttpReply:
        request = {"method": method, "url": url, "body": body, "token": token,
                   "timeout": timeout, "headers": dict(headers or {})}
        result = self.run([sys.executable, "-c", HTTP_SCRIPT], input=json.dumps(request),
                          check=False, timeout=timeout + 10)
        if not result.ok:
            raise LabError(f"HTTP probe from {self.name} failed: {result.stderr.strip()[-300:]}")
        reply = json.loads(result.stdout)
        return HttpReply(int(reply["status"]), str(reply["body"]))

    def listening(self, port: int) -> bool:
        out = self.run(["ss", "-Hltn"], check=False).stdout
        return any(line.split()[3].endswith(f":{port}") for line in out.splitlines()
                   if len(line.split()) >= 4)

    def wg_dump(self, iface: str) -> dict[str, WgPeer]:
        return parse_wg_dump(self.run(["wg", "show", iface, "dump"]).stdout)

    def record(self) -> dict[str, Any]:
        """What `fiovpn lab exec` needs to enter this role later."""
        return {"kind": self.kind, "ns": self.ns, "enter": self.enter, "home": str(self.home),
                "env": self.env, "underlay_ip": self.underlay_ip}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} ns={self.ns}>"


# --- the factory ---------------------------------------------------------------------


class Factory(Role):
    """``fiovpn sandbox serve`` playing the FoundriesFactory API on the underlay."""

    kind = "factory"
    port = 8080

    def __init__(self, lab: Lab, ns: str, underlay_ip: str, *, factory: str,
                 token: str) -> None:
        super().__init__(lab, "factory", ns, underlay_ip)
        self.factory = factory
        self.token = token
        self.api_url = f"http://{underlay_ip}:{self.port}"
        self.token_file = self.home / "api-token"
        atomic_write(self.token_file, token + "\n", mode=0o600)
        self.state_file = self.home / "state.json"
        self.log = self.home / "sandbox.log"
        self.child: Child | None = None

    def seed(self, devices: Sequence[Device]) -> None:
        """Pre-seed the sandbox state with the lab's devices and their keys."""
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        entries = []
        for d in devices:
            on_changed: list[str] = [VPN_HANDLER]
            if d.vpn_ip is not None:
                value = ClientConfigFile(d.vpn_ip, d.keys.public).render()
            else:  # what a fresh device publishes itself: no address, no handler
                value = f"enabled=0\npubkey={d.keys.public}"
                on_changed = []
            entries.append({
                "name": d.device_name, "uuid": d.uuid, "status": "OK", "last-seen": now,
                "target-name": "lab-lmp-1", "device-group": d.group, "tag": d.tag,
                "network-info": {"hostname": d.device_name, "local_ipv4": d.underlay_ip,
                                 "mac": ""},
                "config": [{"created-at": now, "reason": "lab: device keys",
                            "files": [{"name": WIREGUARD_CLIENT_FILE, "value": value,
                                       "unencrypted": True, "on-changed": on_changed}]}],
            })
        state = {"factory": self.factory, "token": self.token, "devices": entries,
                 "factory_config": []}
        atomic_write(self.state_file, json.dumps(state, indent=2), mode=0o600)

    def start(self) -> None:
        # the token comes from the seeded state file: no secret in argv
        self.child = self.spawn(
            [self.lab.fiovpn_path, "sandbox", "serve", "--bind", self.underlay_ip,
             "--port", str(self.port), "--factory", self.factory,
             "--state", str(self.state_file)], name="sandbox", log=self.log)

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            if self.child is not None and not self.child.running():
                raise LabError(f"the sandbox factory exited ({self.child.popen.returncode}): "
                               f"{self.child.log_tail()}")
            return self.api("GET", f"/ota/factories/{self.factory}/wireguard-ips/",
                            check=False).ok
        wait_for(ready, timeout=timeout, what="the sandbox factory API", interval=0.2,
                 detail=lambda: self.child.log_tail() if self.child else "")

    def api(self, method: str, path: str, body: Any = None, *, check: bool = True,
            timeout: float = 10.0) -> HttpReply:
        """One API call, made from inside the factory's namespace."""
        reply = self.http(method, self.api_url + path, body=body, token=self.token,
                          timeout=timeout)
        if check and not reply.ok:
            raise LabError(f"sandbox {method} {path} answered {reply.status}: "
                           f"{reply.body[:300]}")
        return reply

    # control endpoints of the sandbox
    def fail(self, status: int = 500, count: int = 1) -> None:
        """The next ``count`` API calls answer ``status`` (-1: until ``clear()``)."""
        self.api("POST", "/_sandbox/fail", {"status": status, "count": count})

    def slow(self, seconds: float, count: int = 1) -> None:
        self.api("POST", "/_sandbox/slow", {"seconds": seconds, "count": count})

    def clear(self) -> None:
        self.api("POST", "/_sandbox/clear", {})

    def add_device(self, name: str, pubkey: str | None = None) -> Any:
        body: dict[str, Any] = {"name": name}
        if pubkey is not None:
            body["pubkey"] = pubkey
        return self.api("POST", "/_sandbox/devices", body).json()

    def set_device(self, name: str, **fields: Any) -> Any:
        """Change a device's factory fields, as the device or an admin would:
        ``set_device("device1", group="east", tag="beta", is_prod=True)``. Keys are
        the API's (``device-group``, ``tag``, ``is-prod``, ``up-to-date``, ``status``,
        ``owner``, ``target-name``, ``last-seen``, ``network-info``); ``group`` and
        underscores are accepted too. Returns the device as the list shows it."""
        body = {("device-group" if k == "group" else k.replace("_", "-")): v
                for k, v in fields.items()}
        return self.api("POST", f"/_sandbox/devices/{name}", body).json()

    def checkin(self, name: str) -> Any:
        """The device checked in now (its ``last-seen`` moves)."""
        return self.api("POST", f"/_sandbox/devices/{name}/checkin", {}).json()

    def devices(self, **filters: str) -> list[dict[str, Any]]:
        """The factory's device list (fioctl's filters: ``group=``, ``match_tag=``,
        ``name=`` glob, ...), every page."""
        query = urlencode({"factory": self.factory, **filters})
        data = self.api("GET", f"/ota/devices/?{query}&limit=1000").json()
        return list(data["devices"])

    def request_count(self) -> int:
        data = self.api("GET", "/_sandbox/requests").json()
        if isinstance(data, dict):
            for key in ("count", "requests", "total"):
                if isinstance(data.get(key), int):
                    return int(data[key])
        if isinstance(data, int):
            return data
        raise LabError(f"unexpected /_sandbox/requests answer: {data!r}")

    # reads as a device or the server would see them
    def device_files(self, device: str) -> dict[str, str]:
        data = self.api("GET", f"/ota/devices/{device}/config/?factory={self.factory}").json()
        return _current_files(data)

    def factory_files(self) -> dict[str, str]:
        return _current_files(self.api("GET", f"/ota/factories/{self.factory}/config/").json())

    def wireguard_ips(self) -> list[dict[str, Any]]:
        data = self.api("GET", f"/ota/factories/{self.factory}/wireguard-ips/").json()
        return list(data)


def _current_files(data: Any) -> dict[str, str]:
    config = data.get("config") if isinstance(data, dict) else None
    if not config:
        return {}
    return {f["name"]: f["value"] for f in config[0].get("files", [])}


# --- the WireGuard server ------------------------------------------------------------


class Server(Role):
    """The VPN server's namespace: config TOML, key, daemon, sshd on the VPN address."""

    kind = "server"
    vpn_ip = "10.42.42.1"
    subnet = "10.42.42.0/24"
    port = 5555
    ssh_port = 5025

    def __init__(self, lab: Lab, ns: str, underlay_ip: str, *, interface: str,
                 settings: Mapping[str, Any], name: str = "server",
                 endpoint_ip: str | None = None) -> None:
        super().__init__(lab, name, ns, underlay_ip)
        self.interface = interface
        # HA: devices and engineers reach the pair at the VIP, not a server's own address
        self.endpoint = f"{endpoint_ip or underlay_ip}:{self.port}"
        self.keepalived: Child | None = None
        self.config_path = self.home / "server.toml"
        self.private_key_path = self.home / "server.key"
        self.keys = KeyPair.generate()
        atomic_write(self.private_key_path, f"{self.keys.private}\n", mode=0o600)
        self.clients_file = self.home / "factory-clients.conf"
        self.hosts_file = self.home / "hosts"
        atomic_write(self.hosts_file, "127.0.0.1\tlocalhost\n", mode=0o644)
        self.state_dir = self.home / "state"
        self.daemon_log_path = self.home / "daemon.log"
        self.daemon: Child | None = None
        factory = lab.factory
        values: dict[str, Any] = {
            "factory": lab.factory_name,
            "api-url": factory.api_url if factory else None,
            "api-token-file": str(factory.token_file) if factory else None,
            "interface": interface,
            "private-key": str(self.private_key_path),
            "subnet": self.subnet,
            "port": self.port,
            "endpoint": self.endpoint,
            "clients-file": str(self.clients_file),
            "hosts-file": str(self.hosts_file),
            "state-dir": str(self.state_dir),
            "run-dir": str(self.home / "run"),
            "unit-dir": str(self.home / "systemd"),
            "ssh-port": self.ssh_port,
        }
        values.update(settings)
        self.settings = values
        atomic_write(self.config_path, render_toml(values), mode=0o600)
        self.env["FIOVPN_SERVER_CONFIG"] = str(self.config_path)

    @property
    def public_key(self) -> Key:
        return self.keys.public

    def enable(self, *extra: str, check: bool = True) -> Completed:
        """``fiovpn server enable``: publishes the factory's wireguard-server file."""
        return self.fiovpn("server", "enable", "--config", str(self.config_path),
                           "--factory", self.lab.factory_name, "--endpoint", self.endpoint,
                           *extra, check=check)

    def start_daemon(self, *extra_args: str) -> Child:
        if self.daemon is not None and self.daemon.running():
            raise LabError("the server daemon is already running")
        self.daemon = self.spawn([self.lab.fiovpn_path, "server", "daemon", "--config",
                                  str(self.config_path), *extra_args],
                                 name="daemon", log=self.daemon_log_path)
        return self.daemon

    def stop_daemon(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the daemon and wait; returns its exit code (None if not running)."""
        if self.daemon is None:
            return None
        code = self.daemon.stop(grace=timeout)
        self.lab.untrack(self.daemon)
        self.daemon = None
        return code

    def kill_daemon(self) -> None:
        """SIGKILL the daemon (for restart tests): nothing of it gets to clean up."""
        import signal

        if self.daemon is not None:
            self.daemon.stop(signal.SIGKILL)
            self.lab.untrack(self.daemon)
            self.daemon = None

    def daemon_log(self) -> str:
        try:
            return self.daemon_log_path.read_text(errors="replace")
        except OSError:
            return ""

    def status(self) -> Any:
        """``fiovpn server status --json`` (the daemon's own JSON)."""
        return self.fiovpn_json("server", "status", "--config", str(self.config_path),
                                check=False)

    def wait_status(self, predicate: Callable[[Any], bool], *, timeout: float = 30.0,
                    what: str = "the server status") -> Any:
        def check() -> Any:
            if self.daemon is not None and not self.daemon.running():
                raise LabError(f"the server daemon exited ({self.daemon.popen.returncode}): "
                               f"{self.daemon.log_tail()}")
            status = self.status()
            return status if predicate(status) else None
        return wait_for(check, timeout=timeout, what=what, interval=0.3,
                        detail=lambda: self.daemon.log_tail() if self.daemon else "")

    def wait_synced(self, timeout: float = 30.0, *, after: str | None = None) -> Any:
        """Wait until ``server status`` reports a successful sync and no error; with
        ``after`` (a ``last_sync`` value seen before), a sync later than that one."""
        def synced(status: Any) -> bool:
            return _synced(status) and (after is None or str(status.get("last_sync")) > after)
        return self.wait_status(synced, timeout=timeout, what="the server to sync")

    def peers(self) -> dict[str, WgPeer]:
        """The live peers of the server's interface (ground truth, not the daemon's view)."""
        return self.wg_dump(self.interface)

    def wait_peers(self, allowed: Mapping[str, str] | Sequence[str], *,
                   timeout: float = 30.0) -> dict[str, WgPeer]:
        """Wait until the interface holds exactly these peers: a list of ``ip``s or a
        ``{public_key: ip}`` mapping, each ``/32``."""
        def wanted(peers: dict[str, WgPeer]) -> bool:
            have = {k: p.allowed_ips for k, p in peers.items()}
            if isinstance(allowed, Mapping):
                return have == {k: (f"{ip}/32",) for k, ip in allowed.items()}
            return sorted(a for ips in have.values() for a in ips) == sorted(
                f"{ip}/32" for ip in allowed) and all(len(v) == 1 for v in have.values())

        def check() -> dict[str, WgPeer] | None:
            result = self.run(["wg", "show", self.interface, "dump"], check=False)
            if not result.ok:
                return None
            peers = parse_wg_dump(result.stdout)
            return peers if wanted(peers) else None
        return wait_for(check, timeout=timeout, what=f"server peers {allowed}", interval=0.2,
                        detail=lambda: self.run(["wg", "show", self.interface],
                                                check=False).stdout)

    def sshd_setenv(self) -> dict[str, str]:
        return {"FIOVPN_SERVER_CONFIG": str(self.config_path),
                "PATH": f"{Path(sys.executable).parent}:{SYSTEM_PATH}"}


def _synced(status: Any) -> bool:
    if not isinstance(status, dict):
        return False
    for key in ("last_error", "sync_error", "error"):
        if status.get(key):
            return False
    return any(status.get(k) for k in ("last_sync", "last_sync_time", "synced_at",
                                         "last_success", "last_sync_at"))


# --- devices -------------------------------------------------------------------------


class Device(Role):
    """An LmP device: its own network, mount and UTS namespaces (its own /etc overlay,
    a tmpfs /run, a hostname), the WireGuard interface ``factory-vpn0`` (wireguard-go),
    fioconfig with the VPN handler (:mod:`fiovpn.lab.fioconfig`,
    :mod:`fiovpn.lab.handler`), NetworkManager's ``nmcli`` and dispatcher
    (:mod:`fiovpn.lab.nmcli`), sshd for engineers (user root), and ``reboot()``."""

    kind = "device"

    def __init__(self, lab: Lab, index: int, name: str, ns: str, underlay_ip: str, *,
                 interface: str = CONNECTION_ID, vpn_ip: IPv4Address | None,
                 group: str = "lab", tag: str = "") -> None:
        super().__init__(lab, f"device{index}", ns, underlay_ip)
        self.index = index
        self.device_name = name
        self.group = group  # the factory's device-group and tag it is seeded with
        self.tag = tag
        self.uuid = f"00000000-0000-4000-8000-{lab.prefix.encode().hex()[:8]}{index:04x}"
        # the name the factory handler gives it; /run/wireguard is the device's own
        self.interface = interface
        self.vpn_ip = vpn_ip
        self.keys = KeyPair.generate()
        self.private_key_path = self.home / "wg-priv"  # /var/sota/wg-priv on a real device
        atomic_write(self.private_key_path, f"{self.keys.private}\n", mode=0o600)
        self.bin = self.home / "bin"
        self.nm_state = self.home / "nm-state.json"
        self.handler_path = self.home / "handlers" / "factory-config-vpn"
        self.fioconfig = Fioconfig(self, {VPN_HANDLER: self.handler_path})
        self.holder: Child | None = None
        self.wireguard: Child | None = None
        self.sshd: Child | None = None
        self.boots = 0
        self.env["PATH"] = f"{self.bin}:{self.env['PATH']}"

    @property
    def enter(self) -> list[str]:
        if self.holder is None:
            return ["ip", "netns", "exec", self.ns]
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-u", "-n", "--"]

    @property
    def root(self) -> Path:
        """The device's / as seen from outside (through its mount namespace)."""
        if self.holder is None:
            raise LabError(f"{self.name} has no mount namespace yet")
        return Path(f"/proc/{self.holder.pid}/root")

    def start_namespace(self) -> None:
        """A sleeping holder process owns the device's mount namespace; /etc in it is
        an overlay whose writes land in the device's home (the host /etc is untouched)
        and /run is the device's own tmpfs."""
        self.holder = self.lab.spawn(
            f"{self.name}: mount namespace",
            ["ip", "netns", "exec", self.ns, "unshare", "--mount", "--uts", "--propagation",
             "private", "sleep", "infinity"], env=self.env, log=None)
        holder = self.holder
        wait_for(lambda: _comm(holder.pid) == "sleep", timeout=10,
                 what=f"{self.name}'s mount namespace")
        upper, work = self.home / "etc-upper", self.home / "etc-work"
        upper.mkdir(exist_ok=True)
        work.mkdir(exist_ok=True)
        self.run(["mount", "-t", "overlay", "overlay", "-o",
                  f"lowerdir=/etc,upperdir={upper},workdir={work}", "/etc"])
        # NetworkManager's config as an LmP image has it: nothing of the host's
        nm_dir = self.home / "etc-NetworkManager"
        for sub in (KEYFILE_DIR, DISPATCHER_DIR):
            (nm_dir / Path(sub).name).mkdir(mode=0o755, parents=True, exist_ok=True)
        self.run(["mount", "--bind", str(nm_dir), "/etc/NetworkManager"])
        self.run(["hostname", self.device_name])  # its own UTS namespace
        self._mount_run()
        self.bin.mkdir(exist_ok=True)
        script = (f"#!{sys.executable}\nimport sys\nfrom fiovpn.lab.nmcli import main\n"
                  f"sys.exit(main(state_file={str(self.nm_state)!r}))\n")
        atomic_write(self.bin / "nmcli", script, mode=0o755)
        if Path("/usr/bin/nmcli").exists():
            # the device's /usr/bin/nmcli is the stand-in too (sudo's secure_path and
            # NetworkManager's dispatcher PATH never see the device's bin/)
            self.run(["mount", "--bind", str(self.bin / "nmcli"), "/usr/bin/nmcli"])
        self.handler_path.parent.mkdir(exist_ok=True)
        atomic_write(self.handler_path, handler_script(private_key=self.private_key_path),
                     mode=0o755)

    def _mount_run(self) -> None:
        """A fresh tmpfs on /run (what a boot starts with): no sockets, no secrets."""
        self.run(["sh", "-c", "umount -l /run 2>/dev/null; mount -t tmpfs -o mode=0755 "
                              "tmpfs /run && mkdir -p /run/sshd /run/wireguard /run/secrets"])

    def start_services(self) -> None:
        """What a boot starts, in order: the WireGuard interface (created empty, as
        NetworkManager would create it), NetworkManager (activates every keyfile and
        runs the dispatcher), ``fioconfig extract`` (every file afresh: every handler
        runs), sshd."""
        self.wireguard = self.spawn([require_tool("wireguard-go"), "-f", self.interface],
                                    name="wireguard-go", log=self.home / "wireguard-go.log")
        sock = self.root / "run" / "wireguard" / f"{self.interface}.sock"
        wait_for(sock.exists, timeout=10, what=f"{self.name}'s wireguard-go interface",
                 detail=lambda: self.wireguard.log_tail() if self.wireguard else "")
        self.nmcli("lab-boot")
        self.fioconfig.boot()
        self.sshd = self.lab.start_device_sshd(self)
        self.boots += 1

    def reboot(self, *, check_in: bool = True) -> None:
        """Reboot the device: every process stops (SSH sessions are cut), NetworkManager
        forgets what it had loaded, the /run tmpfs (the secrets dir with it) is empty;
        then the boot of :meth:`start_services`, and (``check_in``) fioconfig's first
        check-in. /etc (keyfiles, dispatcher hooks) and /var/sota survive."""
        for child in (self.sshd, self.wireguard):
            if child is not None:
                child.stop(grace=3.0)
                self.lab.untrack(child)
        self.sshd = self.wireguard = None
        holder = self.holder.pid if self.holder else None
        pids = SubprocessRunner().run(["ip", "netns", "pids", self.ns], check=False,
                                      timeout=30).stdout.split()
        for pid in pids:
            if pid.isdigit() and int(pid) != holder:
                kill_pid(int(pid), start_time(int(pid)), grace=2.0)
        self.nm_state.unlink(missing_ok=True)
        self._mount_run()
        self.start_services()
        self.lab.wait_listening(self, 22)
        if check_in and self.lab.factory is not None:
            self.apply_factory_config()

    @property
    def keyfile_path(self) -> Path:
        """``/etc/NetworkManager/system-connections/factory-vpn0.nmconnection`` as the
        device sees it (reached through its mount namespace)."""
        return self.root / KEYFILE_DIR / f"{CONNECTION_ID}.nmconnection"

    @property
    def dispatcher_dir(self) -> Path:
        return self.root / DISPATCHER_DIR

    def read_keyfile(self) -> str | None:
        try:
            return self.keyfile_path.read_text()
        except FileNotFoundError:
            return None

    def render_keyfile(self, server: ServerConfigFile, address: IPv4Address) -> str:
        return handler_keyfile(self.interface, self.keys.private, server, address)

    def nmcli(self, *args: str, check: bool = True) -> Completed:
        return self.run(["nmcli", *args], check=check)

    def _vpn_files(self, server: ServerConfigFile | None,
                   address: IPv4Address | None) -> dict[str, ConfigFile]:
        files = {}
        if server is not None:
            files[WIREGUARD_SERVER_FILE] = ConfigFile(WIREGUARD_SERVER_FILE, server.render(),
                                                      (VPN_HANDLER,))
        if address is not None:
            client = ClientConfigFile(address, self.keys.public)
            files[WIREGUARD_CLIENT_FILE] = ConfigFile(WIREGUARD_CLIENT_FILE, client.render(),
                                                      (VPN_HANDLER,))
        return files

    def configure_vpn(self, server: ServerConfigFile, address: IPv4Address) -> None:
        """Without a factory: give the device these config files as a check-in would
        (the handler runs for each file whose bytes changed)."""
        self.fioconfig.set_config(self._vpn_files(server, address))
        self.vpn_ip = address

    def remove_vpn(self) -> None:
        """Without a factory: both VPN files go (their handler deletes the connection)."""
        self.fioconfig.set_config({})

    def run_handler(self) -> HandlerRun:
        """Run the VPN handler once, as fioconfig does for a changed file."""
        stored = self.fioconfig.stored() or {}
        f = stored.get(WIREGUARD_SERVER_FILE) or stored.get(WIREGUARD_CLIENT_FILE)
        if f is None:
            raise LabError(f"{self.name} has no VPN config files")
        runs = self.fioconfig.on_changed(f)
        if not runs:
            raise LabError(f"{self.name}: the VPN handler did not run")
        return runs[0]

    def apply_factory_config(self) -> bool:
        """A fioconfig check-in: fetch the device's config from the sandbox; handlers
        run for the files that changed (nothing runs when nothing changed). Returns
        whether the device has its VPN connection afterwards."""
        config = self.fioconfig.fetch()
        self.fioconfig.set_config(config)
        client = config.get(WIREGUARD_CLIENT_FILE)
        if client is not None:
            try:
                parsed = ClientConfigFile.parse(client.value)
            except BadInput:
                parsed = None
            if parsed is not None and parsed.address is not None:
                self.vpn_ip = parsed.address
        self.lab.write_known_hosts()
        return self.read_keyfile() is not None

    def add_user(self, name: str, *, sudo: bool = False) -> None:
        """A non-root login on the device (in its own /etc: the host is untouched) for
        every engineer's key; ``sudo``: with NOPASSWD rights (real sudo, if installed)."""
        validate_name(name, what="user name")
        keys = "".join(f"{e.ssh_public_key}\n" for e in self.lab.engineers)
        self.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name])
        self.run(["usermod", "--password", "*", name])  # no password, not locked (sshd)
        self.run(["sh", "-c", 'mkdir -p /etc/ssh/authorized_keys && cat > "$0" && '
                              'chmod 0644 "$0"', f"/etc/ssh/authorized_keys/{name}"],
                 input=keys)
        self.set_sudo(name, sudo)

    def set_sudo(self, name: str, allowed: bool) -> None:
        path = f"/etc/sudoers.d/fiovpn-lab-{name}"
        if allowed:
            self.run(["sh", "-c", 'mkdir -p /etc/sudoers.d && cat > "$0" && chmod 0440 "$0"',
                      path], input=f"{name} ALL=(root) NOPASSWD: ALL\n")
        else:
            self.run(["rm", "-f", path])

    def server_allowed_ips(self) -> tuple[str, ...]:
        """The allowed-ips of the device's (only) peer on its live interface."""
        peers = self.wg_dump(self.interface)
        return next(iter(peers.values())).allowed_ips if peers else ()

    def record(self) -> dict[str, Any]:
        data = super().record()
        data["device_name"] = self.device_name
        return data


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


# --- engineers -----------------------------------------------------------------------


class Engineer(Role):
    """An engineer's or admin's machine: a HOME for fiovpn, an SSH key, a client
    settings TOML, and its own WireGuard config file name (the interface is named
    after it and /run/wireguard is shared)."""

    kind = "engineer"

    def __init__(self, lab: Lab, index: int, ns: str, underlay_ip: str, *,
                 admin: bool) -> None:
        super().__init__(lab, f"engineer{index}", ns, underlay_ip)
        self.index = index
        self.admin = admin
        self.interface = f"{lab.prefix}e{index}"
        self.config_path = self.home / ".config" / "wireguard" / f"{self.interface}.conf"
        self.config_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.identity_file = self.home / ".ssh" / "id_ed25519"
        self.identity_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.hosts_file = self.home / "hosts"
        atomic_write(self.hosts_file, "127.0.0.1\tlocalhost\n", mode=0o644)
        self.settings_path = self.home / ".config" / "fiovpn" / "config.toml"
        self.ssh_public_key = ""

    def setup(self) -> None:
        self.lab.ssh_keygen(self.identity_file, comment=f"{self.name}@{self.lab.prefix}")
        self.ssh_public_key = self.identity_file.with_suffix(".pub").read_text().strip()
        factory = self.lab.factory
        server = self.lab.server
        values: dict[str, Any] = {
            "config": str(self.config_path),
            "factory": self.lab.factory_name,
            "api-url": factory.api_url if factory else None,
            "api-token-file": str(factory.token_file) if factory else None,
            "server-ssh": f"root@{server.vpn_ip}:{server.ssh_port}",
            "server-command": self.lab.server_command,
            "user": "root",
            "identity-file": str(self.identity_file),
            "known-hosts": str(self.lab.known_hosts),
            "ssh-options": list(self.ssh_options),
            # The host's ~/.ssh/config is not the lab's business (ssh ignores $HOME for it).
            "ssh-config": "/dev/null",
            "hosts-file": str(self.hosts_file),
            "subnet": server.subnet,
        }
        atomic_write(self.settings_path, render_toml(values), mode=0o600)
        self.env.update({
            "FIOVPN_CLIENT_SETTINGS": str(self.settings_path),
            "FIOVPN_FACTORY": self.lab.factory_name,
            "FIOVPN_SERVER_SSH": f"root@{server.vpn_ip}:{server.ssh_port}",
            "FIOVPN_SERVER_COMMAND": self.lab.server_command,
            "FIOVPN_DEVICE_USER": "root",
        })
        if factory is not None:
            self.env["FIOVPN_API_URL"] = factory.api_url

    @property
    def ssh_options(self) -> tuple[str, ...]:
        """Extra ``-o`` options for fiovpn's ssh (settings ``ssh-options``): only the lab's
        known_hosts counts, never the host's global one."""
        return ("GlobalKnownHostsFile=/dev/null",)

    def ssh_argv(self, host: str, *command: str, port: int = 22,
                 user: str = "root") -> list[str]:
        argv = ["ssh", "-F", "/dev/null", "-i", str(self.identity_file),
                "-o", f"UserKnownHostsFile={self.lab.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
        for opt in self.ssh_options:
            argv += ["-o", opt]
        return [*argv, "-p", str(port), f"{user}@{host}", "--", *command]

    def ssh(self, host: str, *command: str, port: int = 22, user: str = "root",
            check: bool = True, timeout: float = 30.0) -> Completed:
        """Plain ``ssh`` from this engineer's namespace (key auth, host key checked)."""
        return self.run(self.ssh_argv(host, *command, port=port, user=user), check=check,
                        timeout=timeout)

    def wg_public_key(self) -> str | None:
        """The public key of the engineer's WireGuard config, once `client init` made it."""
        try:
            text = self.config_path.read_text()
        except FileNotFoundError:
            return None
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "PrivateKey":
                from fiovpn.core.keys import public_key

                return str(public_key(Key.parse(value.strip(), what="private key")))
        return None

