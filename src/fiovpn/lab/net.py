"""Namespaces and the underlay: a bridge inside the lab's own ``<prefix>n``
namespace, one veth from every role namespace to it, 198.18.0.0/24 addresses.

Nothing here touches the root namespace's links: both ends of each veth are
created directly inside lab namespaces.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from fiovpn.adapters.ssh import netns_runtime_dirs
from fiovpn.lab.proc import LabError, kill_pid, reap

UNDERLAY_PREFIX = 24
UNDERLAY_NET = "198.18.0"
WIREGUARD_RUN = Path("/run/wireguard")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False,
                          timeout=30, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise LabError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def add_netns(name: str) -> None:
    if netns_exists(name):
        raise LabError(f"network namespace {name} already exists")
    ip("netns", "add", name)
    ip("-n", name, "link", "set", "lo", "up")


def sysctl(ns: str, key: str, value: str) -> None:
    """Set a per-namespace sysctl (written through /proc/sys inside the namespace)."""
    path = "/proc/sys/" + key.replace(".", "/")
    proc = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", 'echo "$1" > "$2"', "sysctl",
                           value, path], capture_output=True, text=True, check=False,
                          timeout=30, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise LabError(f"cannot set {key}={value} in namespace {ns}: {proc.stderr.strip()}")


def add_bridge(ns: str, bridge: str) -> None:
    ip("-n", ns, "link", "add", bridge, "type", "bridge")
    ip("-n", ns, "link", "set", bridge, "up")


def connect(hub_ns: str, bridge: str, ns: str, *, hub_if: str, role_if: str,
            address: str) -> None:
    """A veth from ``ns`` (``role_if`` with ``address``/24) to the bridge in ``hub_ns``."""
    ip("link", "add", hub_if, "netns", hub_ns, "type", "veth", "peer", "name", role_if,
       "netns", ns)
    ip("-n", hub_ns, "link", "set", hub_if, "master", bridge, "up")
    ip("-n", ns, "addr", "add", f"{address}/{UNDERLAY_PREFIX}", "dev", role_if)
    ip("-n", ns, "link", "set", role_if, "up")


def link_pair(a: tuple[str, str, str], b: tuple[str, str, str]) -> None:
    """A veth straight between two namespaces; each side is ``(ns, ifname, address)``,
    the address taken as a /24 of the underlay."""
    ip("link", "add", a[1], "netns", a[0], "type", "veth", "peer", "name", b[1], "netns", b[0])
    for ns, ifname, address in (a, b):
        ip("-n", ns, "addr", "add", f"{address}/{UNDERLAY_PREFIX}", "dev", ifname)
        ip("-n", ns, "link", "set", ifname, "up")


def netns_pids(name: str) -> list[int]:
    if not netns_exists(name):
        return []
    proc = ip("netns", "pids", name, check=False)
    return [int(p) for p in proc.stdout.split() if p.strip().isdigit()]


def list_netns(prefix: str) -> list[str]:
    """Namespaces whose name starts with ``prefix`` (a lab's prefix is unique)."""
    proc = ip("netns", "list", check=False)
    names = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    return [n for n in names if prefix and n.startswith(prefix)]


def remove_runtime_dirs(ns: str) -> None:
    """Remove the per-namespace runtime dirs (``/tmp/fiovpn-<uid>/ns-<inode>``) that
    fiovpn run inside namespace ``ns`` created."""
    try:
        inode = Path("/run/netns", ns).stat().st_ino
    except OSError:
        return
    for path in netns_runtime_dirs(inode):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


def remove_everything(prefix: str, namespaces: Sequence[str],
                      pids: Sequence[tuple[int, int | None]] = ()) -> list[str]:
    """Kill ``pids`` (each with its start time) and every process left in the
    namespaces (those named and any other of the prefix), remove /run/wireguard
    sockets of the prefix, delete the namespaces. Returns what could not be
    removed (empty when all went)."""
    problems: list[str] = []
    namespaces = list(dict.fromkeys([*namespaces, *list_netns(prefix)]))
    for pid, started in pids:
        kill_pid(pid, started)
    for ns in namespaces:
        for pid in netns_pids(ns):
            kill_pid(pid)
            reap(pid)
    if prefix and WIREGUARD_RUN.is_dir():
        for sock in WIREGUARD_RUN.glob(f"{prefix}*"):
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()
    for ns in namespaces:
        if not netns_exists(ns):
            continue
        # Its processes are gone: their SSH control-socket dir (named after the
        # namespace's inode, which a new namespace may reuse once this one is gone) goes.
        remove_runtime_dirs(ns)
        proc = ip("netns", "del", ns, check=False)
        if proc.returncode != 0:
            problems.append(f"namespace {ns}: {proc.stderr.strip()}")
    return problems
