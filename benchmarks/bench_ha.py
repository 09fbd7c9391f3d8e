"""HA figures (SPEC 14) in the two-server lab: how long the VPN is gone when the
VIP moves, with fiovpn's HA mode and, in the same run, without it (both daemons
plain `single`, keepalived moving the VIP all the same: recovery only by
WireGuard's own timers).

Per mode, ``--runs`` times each:
- failover: the active fails hard (link cut; keepalived, daemon and wireguard-go
  killed; interface gone); it boots again (fresh interface, daemon, keepalived)
  and comes back as standby;
- failback: the active's keepalived is stopped cleanly (priority-0 advert), then
  started again;
each with traffic (engineer pings a device and the device pings the server every
0.2 s: the longest gap between answers) and from idle (no traffic for 3 s; then
the time from the VIP move until the first answer, each side).

Prints figures and the HA/plain ratio; not a timed test. Needs root, keepalived,
wireguard-go, wg, nft, sshd.

    python benchmarks/bench_ha.py [--runs 5] [--modes ha,plain] [--timeout 60]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fiovpn.lab import Lab
from fiovpn.lab import ha as lab_ha
from fiovpn.lab.roles import Device, Engineer, Server
from fiovpn.settings import load_toml, render_toml

HA_KEYS = ("ha-vip", "ha-peer")
VIP_ENDPOINT = f"{lab_ha.VIP}:5555"


def set_mode(lab: Lab, mode: str) -> None:
    """Restart both daemons with (ha) or without (plain) the HA settings; keepalived
    is stopped meanwhile (a stopped daemon fails health) and started again with A
    first, so every mode starts from A active."""
    for srv in lab.servers:
        lab_ha.stop_keepalived(srv)
    for srv in lab.servers:
        srv.stop_daemon()
        values = load_toml(srv.config_path, required=True)
        saved = srv.home / "server.toml.ha"
        if mode == "plain":
            saved.write_text(render_toml(values))
            values = {k: v for k, v in values.items() if k not in HA_KEYS}
        elif saved.exists():
            values = load_toml(saved, required=True)
        srv.config_path.write_text(render_toml(values))
        srv.start_daemon()
    for srv in lab.servers:
        srv.wait_synced(timeout=60)
    a, b = lab.servers
    lab_ha.start_keepalived(a, b, priority=lab_ha.PRIORITY_A)
    lab_ha.wait_vip(a, timeout=60)
    lab_ha.start_keepalived(b, a)
    lab_ha.wait_vrrp_state(b, "BACKUP", timeout=60)
    # The VIP left A while keepalived was stopped (in HA mode A then forgot its
    # sessions): in plain mode only WireGuard's timers bring the tunnels back.
    took = settle(lab, SETTLE_TIMEOUT)
    print(f"  {mode}: both ends answer {took:.1f} s after the mode switch", flush=True)


SETTLE_TIMEOUT = 300.0  # WireGuard's own timers: up to ~3 min for a device


def settle(lab: Lab, timeout: float) -> float:
    """Wait until the engineer reaches the device and the device the server (each
    ping also drives WireGuard's timers); seconds it took."""
    eng, dev = lab.engineers[0], lab.devices[0]
    start = time.monotonic()
    pending = [(eng, str(dev.vpn_ip)), (dev, Server.vpn_ip)]
    while pending:
        if time.monotonic() - start > timeout:
            raise SystemExit(f"{pending[0][0].name} cannot reach {pending[0][1]} "
                             f"{timeout:.0f} s after the last move")
        pending = [(r, ip) for r, ip in pending if not r.ping_once(ip)]
    return time.monotonic() - start


def other(lab: Lab, srv: Server) -> Server:
    return next(s for s in lab.servers if s is not srv)


def active(lab: Lab) -> Server:
    holder = lab_ha.vip_holder(lab)
    if holder is None:
        raise SystemExit("nobody holds the VIP")
    return holder


def wait_answer(role: Engineer | Device, ip: str, start: float, timeout: float) -> float:
    """Seconds from ``start`` to the first answered ping (``timeout`` when none): one
    ping that sends every 0.1 s until the first reply, so a first echo lost while
    the new session is made costs 0.1 s of resolution, not a 1 s reply wait."""
    left = max(1, int(timeout - (time.monotonic() - start)))
    ok = role.run(["ping", "-n", "-c1", "-i", "0.1", "-w", str(left), ip], check=False,
                  timeout=left + 5).ok
    return min(time.monotonic() - start, timeout) if ok else timeout


def failover(lab: Lab) -> Callable[[], None]:
    """A hard failure, as in the e2e test: link cut, keepalived, the daemon and
    wireguard-go killed, the interface gone. The server then boots again: a fresh
    interface (no session left from before, as after a real crash; a server that
    kept its sessions would flatter the plain mode's next move back to it)."""
    old = active(lab)
    new = other(lab, old)
    lab_ha.cut(old)
    lab_ha.wait_vip(new, timeout=30)

    def restore() -> None:
        lab_ha.revive(old)
        old.start_daemon()
        old.wait_synced(timeout=60)
        lab_ha.start_keepalived(old, new)
        lab_ha.wait_vrrp_state(old, "BACKUP", timeout=60)
    return restore


def failback(lab: Lab) -> Callable[[], None]:
    old = active(lab)
    new = other(lab, old)
    lab_ha.stop_keepalived(old)
    lab_ha.wait_vip(new, timeout=30)

    def restore() -> None:
        lab_ha.start_keepalived(old, new)
        lab_ha.wait_vrrp_state(old, "BACKUP", timeout=60)
    return restore


def one(lab: Lab, move: Callable[[Lab], Callable[[], None]], traffic: bool,
        timeout: float) -> dict[str, Any]:
    eng, dev = lab.engineers[0], lab.devices[0]
    # both ends talking before the move, so every run starts from a live tunnel
    # (plain mode: the last move may still be recovering by WireGuard's timers)
    settle(lab, SETTLE_TIMEOUT)
    if traffic:
        eng_p = lab_ha.OutageProbe(eng, str(dev.vpn_ip))
        dev_p = lab_ha.OutageProbe(dev, Server.vpn_ip)
        time.sleep(1.5)
        restore = move(lab)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # until both sides answer again
            time.sleep(1.0)
            if eng.ping_once(str(dev.vpn_ip)) and dev.ping_once(Server.vpn_ip):
                break
        time.sleep(1.0)
        e, d = eng_p.stop(), dev_p.stop()
        result = {"engineer_s": e.longest_gap_s, "device_s": d.longest_gap_s}
    else:
        time.sleep(3.0)
        restore = move(lab)
        start = time.monotonic()
        # both sides at once: a side measured after the other would count the
        # other's wait (and its packets would wake the tunnel for it)
        with ThreadPoolExecutor(2) as pool:
            e_f = pool.submit(wait_answer, eng, str(dev.vpn_ip), start, timeout)
            d_f = pool.submit(wait_answer, dev, Server.vpn_ip, start, timeout)
            result = {"engineer_s": e_f.result(), "device_s": d_f.result()}
    # where each side's WireGuard sends now: the VIP, or a server's own address
    # (roamed there: the VIP no longer moves its tunnel, a split VPN waiting)
    result["engineer_at"] = lab_ha.engineer_endpoint(eng, eng.interface)
    result["device_at"] = lab_ha.engineer_endpoint(dev, dev.interface)
    restore()
    time.sleep(2.0)
    return result


def summary(values: list[float], cap: float) -> str:
    """Median, max and every run; a run that reached the cap (no answer by then)
    is shown as ``>cap``."""
    def one(v: float) -> str:
        return f">{cap:.0f}" if v >= cap else f"{v:.2f}"
    return (f"median {one(statistics.median(values)):>6} s  max {one(max(values)):>6} s  "
            f"[{', '.join(one(v) for v in values)}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--modes", default="ha,plain")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="give up waiting for an answer after this many seconds")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    figures: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with Lab.create(devices=1, engineers=1, ha=True) as lab:
        lab.start_ha()
        lab.join(lab.engineers[0])
        for mode in modes:
            set_mode(lab, mode)
            for name, move in (("failover", failover), ("failback", failback)):
                for traffic in (True, False):
                    key = f"{name} {'with traffic' if traffic else 'from idle'}"
                    runs = []
                    for i in range(args.runs):
                        runs.append(one(lab, move, traffic, args.timeout))
                        print(f"  {mode} {key} run {i + 1}: {runs[-1]}", flush=True)
                    figures.setdefault(mode, {})[key] = runs
                    for side in ("engineer_s", "device_s"):
                        at = [str(r[side[:-2] + "_at"]) for r in runs]
                        off = [a for a in at if a != VIP_ENDPOINT]
                        bound = (f"  off the VIP after {len(off)}/{len(runs)} runs "
                                 f"({', '.join(sorted(set(off)))})" if off else "")
                        print(f"{mode:5} {key:22} {side[:-2]:8}: "
                              f"{summary([r[side] for r in runs], args.timeout)}{bound}",
                              flush=True)
    if "ha" in figures and "plain" in figures:
        print("ratio plain/HA (medians, >1: HA mode recovers faster):")
        for key in figures["ha"]:
            for side in ("engineer_s", "device_s"):
                h = statistics.median(r[side] for r in figures["ha"][key])
                p = statistics.median(r[side] for r in figures["plain"][key])
                print(f"  {key:22} {side[:-2]:8}: {p / max(h, 0.01):5.1f}x "
                      f"({p:.2f} s vs {h:.2f} s)")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
