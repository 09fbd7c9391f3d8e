"""The two-server lab (``Lab.create(ha=True)``): server A (``server``, 198.18.0.1)
and server B (``server2``, 198.18.0.4) on the underlay, the VIP 198.18.0.3 moved
by real keepalived (one per server namespace, unicast VRRP, the config from
``fiovpn server ha-template``), devices and engineers reaching the VIP.

B becomes A's twin with ``fiovpn server ha-join --from root@198.18.0.1:5025``
(private key, settings, registry, state, SSH host key), as an admin would.
Keepalived's config and pid files live in each server's lab home; the lab kills
them at teardown like every other child.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiovpn.adapters.runner import require_tool
from fiovpn.lab import net
from fiovpn.lab.proc import Child, LabError, reap_adopted, wait_for

if TYPE_CHECKING:
    from fiovpn.lab.lab import Lab
    from fiovpn.lab.roles import Role, Server

VIP = "198.18.0.3"
SERVER_B_IP = "198.18.0.4"
KEEPALIVED = "/usr/sbin/keepalived"
PRIORITY_A = 210  # B runs at the template's default 200


def ha_settings(lab: Lab, *, peer_ip: str, home: Path) -> dict[str, Any]:
    """The HA keys of a server's TOML: the VIP, the other server over SSH on its own
    address, the key and known_hosts the lab made for that link."""
    return {
        "ha-vip": VIP,
        "ha-peer": f"root@{peer_ip}:5025",
        "ha-peer-command": lab.fiovpn_path,
        "ha-identity-file": str(home / "ha_id_ed25519"),
        "ha-known-hosts": str(lab.known_hosts),
        "ssh-host-key": str(home / "sshd" / "ssh_host_ed25519_key"),
        # the file this server's sshd reads (never the host's /root/.ssh): admins
        # are replicated into it
        "authorized-keys": str(home / "sshd" / "authorized_keys"),
    }


def router_id(prefix: str) -> int:
    """A virtual_router_id unique per run (1-255), from the lab's prefix."""
    return int(hashlib.sha256(prefix.encode()).hexdigest()[:4], 16) % 254 + 1


def underlay_if(server: Role) -> str:
    return f"{server.ns}u"


def keepalived_config(server: Server, peer: Server, *, preempt: bool = False,
                      priority: int = 200) -> str:
    """The product's own template (``fiovpn server ha-template``) for this server."""
    args = ["server", "--config", str(server.config_path), "ha-template",
            "--interface", underlay_if(server), "--vip", f"{VIP}/24",
            "--src", server.underlay_ip, "--peer", peer.underlay_ip,
            "--router-id", str(router_id(server.lab.prefix)),
            "--priority", str(priority), "--instance", f"{server.lab.prefix}vrrp",
            "--fiovpn", server.lab.fiovpn_path]
    if preempt:
        args.append("--preempt")
    data = server.fiovpn_json(*args)
    return str(data["config"])


def start_keepalived(server: Server, peer: Server, *, preempt: bool = False,
                     priority: int = 200) -> Child:
    """keepalived in the server's namespace, in the foreground, its config and pid
    files in the server's lab home (never /etc or /run of the host)."""
    stop_keepalived(server)
    home = server.home / "keepalived"
    home.mkdir(mode=0o700, exist_ok=True)
    # a killed keepalived's VRRP child is our zombie (we are the subreaper) until
    # reaped, and its pid files would make the new one think it still runs
    wait_for(lambda: not any(_comm(p) == "keepalived" for p in net.netns_pids(server.ns)),
             timeout=10, what=f"the old keepalived of {server.name} to exit")
    reap_adopted(("keepalived",))
    for pid_file in home.glob("*.pid"):
        pid_file.unlink()
    conf = home / "keepalived.conf"
    conf.write_text(keepalived_config(server, peer, preempt=preempt, priority=priority))
    server.keepalived = server.spawn(
        [KEEPALIVED, "-n", "-l", "-D", "-P", "-f", str(conf), "-p", str(home / "main.pid"),
         "-r", str(home / "vrrp.pid"), "-c", str(home / "checkers.pid")],
        name="keepalived", log=home / "keepalived.log")
    return server.keepalived


def stop_keepalived(server: Server, sig: int = signal.SIGTERM) -> None:
    """Stop it (SIGTERM: it sends a priority-0 advert so the peer takes over at once;
    SIGKILL: it just vanishes, as in a crash)."""
    child = server.keepalived
    if child is None:
        return
    child.stop(sig, grace=5.0)
    server.lab.untrack(child)
    server.keepalived = None
    if sig == signal.SIGKILL:
        # its VRRP child is not killed with it; a crash takes both
        for pid in net.netns_pids(server.ns):
            if _comm(pid) == "keepalived":
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def holds_vip(server: Server) -> bool:
    out = server.run(["ip", "-o", "-4", "addr", "show", "dev", underlay_if(server)],
                     check=False).stdout
    return f" {VIP}/" in out


def vip_holder(lab: Lab) -> Server | None:
    for s in lab.servers:
        if holds_vip(s):
            return s
    return None


def wait_vip(server: Server, *, timeout: float = 20.0) -> float:
    """Wait until ``server`` holds the VIP; returns when (monotonic)."""
    def check() -> float | None:
        return time.monotonic() if holds_vip(server) else None
    return wait_for(check, timeout=timeout, what=f"the VIP {VIP} on {server.name}",
                    interval=0.05,
                    detail=lambda: (server.keepalived.log_tail() if server.keepalived
                                    else "") + f"; health: {health_log(server)}")


def health_log(server: Server, lines: int = 5) -> str:
    """The last reasons `fiovpn server health` gave for failing on ``server``."""
    try:
        return " | ".join((server.state_dir / "health.log").read_text().splitlines()[-lines:])
    except OSError:
        return "(no failure recorded)"


def vrrp_state(server: Server) -> str | None:
    """The VRRP state keepalived last told ``fiovpn server ha-notify`` (its notify)."""
    try:
        data = json.loads((server.state_dir / "ha.json").read_text())
    except (OSError, ValueError):
        return None
    state = data.get("vrrp_state") if isinstance(data, dict) else None
    return str(state) if state else None


def wait_vrrp_state(server: Server, state: str, *, timeout: float = 30.0) -> None:
    wait_for(lambda: vrrp_state(server) == state, timeout=timeout,
             what=f"keepalived on {server.name} to report {state}", interval=0.2,
             detail=lambda: server.keepalived.log_tail() if server.keepalived else "")


def cut(server: Server) -> None:
    """A hard failure: the server's link goes down and all its processes die."""
    server.run(["ip", "link", "set", underlay_if(server), "down"])
    stop_keepalived(server, signal.SIGKILL)
    server.kill_daemon()
    for pid in net.netns_pids(server.ns):
        if _comm(pid) in ("wireguard-go", "keepalived"):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    server.run(["ip", "link", "del", server.interface], check=False)


def revive(server: Server) -> None:
    """The failed server boots again: the VIP it held is gone (a reboot drops it),
    its link comes up; the daemon and keepalived are started by the caller."""
    server.run(["ip", "addr", "del", f"{VIP}/24", "dev", underlay_if(server)], check=False)
    server.run(["ip", "link", "set", underlay_if(server), "up"])


# --- probes ------------------------------------------------------------------------


_TS_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)", re.M)


@dataclass(frozen=True)
class Outage:
    """What a timestamped ping stream saw: the longest time between two answers
    (the outage as a user feels it), answers and echoes sent."""

    longest_gap_s: float
    received: int
    sent: int

    @property
    def lost(self) -> int:
        return max(0, self.sent - self.received - 1)


class OutageProbe:
    """``ping -D -i INTERVAL`` from a role (inside its namespace); ``stop()`` gives
    the longest gap between consecutive replies."""

    def __init__(self, role: Role, ip: str, *, interval: float = 0.2) -> None:
        self.role = role
        self.log = role.home / f"outage-{ip}-{time.monotonic_ns():x}.log"
        self.started = time.time()
        self.child = role.spawn(["ping", "-n", "-D", "-i", f"{interval:g}", "-W", "1", ip],
                                name=f"outage ping {ip}", log=self.log)

    def stop(self) -> Outage:
        self.child.stop(signal.SIGINT)
        self.role.lab.untrack(self.child)
        text = self.log.read_text(errors="replace")
        stamps = sorted(float(m.group(1)) for m in _TS_REPLY.finditer(text))
        sent_m = re.search(r"(\d+) packets transmitted", text)
        sent = int(sent_m.group(1)) if sent_m else len(stamps)
        if not stamps:
            return Outage(time.time() - self.started, 0, sent)
        edges = [self.started, *stamps]
        gap = max(b - a for a, b in itertools.pairwise(edges))
        return Outage(round(gap, 3), len(stamps), sent)


ECHO_SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(4)
while True:
    c, _ = s.accept()
    while True:
        d = c.recv(4096)
        if not d:
            break
        c.sendall(d)
    c.close()
"""

TCP_SESSION = r"""
import json, socket, sys, time
ip, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.create_connection((ip, port), timeout=5)
s.settimeout(60)
end = time.monotonic() + seconds
last = time.monotonic(); gap = 0.0; n = 0; ok = True; err = None
try:
    while time.monotonic() < end:
        s.sendall(b"x"); got = s.recv(1)
        if got != b"x":
            ok = False; err = "bad echo"; break
        now = time.monotonic(); gap = max(gap, now - last); last = now; n += 1
        time.sleep(0.2)
except OSError as exc:
    ok = False; err = str(exc)
print(json.dumps({"ok": ok, "echoes": n, "longest_gap_s": round(gap, 3), "error": err}))
"""


class TcpSession:
    """One TCP connection from ``role`` to an echo server, exchanging a byte every
    0.2 s for ``seconds``; ``result()`` says whether it survived and its longest gap."""

    def __init__(self, role: Role, ip: str, port: int, seconds: float) -> None:
        self.role = role
        self.log = role.home / f"tcp-{ip}-{time.monotonic_ns():x}.log"
        self.child = role.spawn([sys.executable, "-c", TCP_SESSION, ip, str(port),
                                 str(seconds)], name=f"tcp session {ip}", log=self.log)
        self.seconds = seconds

    def result(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.seconds + 70
        while self.child.running() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.child.stop()
        self.role.lab.untrack(self.child)
        lines = [ln for ln in self.log.read_text(errors="replace").splitlines()
                 if ln.startswith("{")]
        if not lines:
            raise LabError(f"TCP session probe printed nothing: {self.log.read_text()[-300:]}")
        data: dict[str, Any] = json.loads(lines[-1])
        return data


def start_echo(role: Role, port: int = 7777) -> Child:
    child = role.spawn([sys.executable, "-c", ECHO_SERVER, str(port)], name="echo server",
                       log=role.home / "echo.log")
    wait_for(lambda: role.listening(port), timeout=10, what=f"echo server on {role.name}")
    return child


def engineer_endpoint(role: Role, interface: str) -> str | None:
    """The endpoint the engineer's WireGuard has for the server right now."""
    out = role.run(["wg", "show", interface, "endpoints"], check=False).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            return parts[1]
    return None


def require_keepalived() -> str:
    if not Path(KEEPALIVED).exists():
        return require_tool("keepalived")
    return KEEPALIVED
