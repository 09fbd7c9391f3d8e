"""HA figures (SPEC 14) in the two-server lab: how long the VPN is gone when the
VIP moves, with fiovpn's HA mode and, in the same run, without it (both daemons
plain `single`, keepalived moving the VIP all the same: recovery only by
WireGuard's own timers).

Per mode, ``--runs`` times each:
- failover: the active's link is cut and its keepalived killed (the daemons stay
  up, so runs repeat without rebuilding); the old active comes back as standby;
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

from fiovpn.lab import Lab
from fiovpn.lab import ha as lab_ha
from fiovpn.lab.roles import Device, Engineer, Server
from fiovpn.settings import load_toml, render_toml

HA_KEYS = ("ha-vip", "ha-peer")


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


def other(lab: Lab, srv: Server) -> Server:
    return next(s for s in lab.servers if s is not srv)


def active(lab: Lab) -> Server:
    holder = lab_ha.vip_holder(lab)
    if holder is None:
        raise SystemExit("nobody holds the VIP")
    return holder


def wait_answer(role: Engineer | Device, ip: str, start: float, timeout: float) -> float:
    """Seconds from ``start`` to the first answered ping (``timeout`` when none)."""
    while time.monotonic() - start < timeout:
        if role.ping_once(ip, wait=1.0):
            return time.monotonic() - start
    return timeout


def failover(lab: Lab) -> Callable[[], None]:
    old = active(lab)
    new = other(lab, old)
    old.run(["ip", "link", "set", lab_ha.underlay_if(old), "down"])
    lab_ha.stop_keepalived(old, 9)
    lab_ha.wait_vip(new, timeout=30)

    def restore() -> None:
        lab_ha.revive(old)
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
        timeout: float) -> dict[str, float]:
    eng, dev = lab.engineers[0], lab.devices[0]
    # both ends talking before the move, so every run starts from a live tunnel
    for role, ip in ((eng, str(dev.vpn_ip)), (dev, Server.vpn_ip)):
        if not role.ping(ip, timeout=timeout):
            raise SystemExit(f"{role.name} cannot reach {ip} before the move")
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
        result = {"engineer_s": wait_answer(eng, str(dev.vpn_ip), start, timeout),
                  "device_s": wait_answer(dev, Server.vpn_ip, start, timeout)}
    restore()
    time.sleep(2.0)
    return result


def summary(values: list[float]) -> str:
    return (f"median {statistics.median(values):5.2f} s  max {max(values):5.2f} s  "
            f"[{', '.join(f'{v:.2f}' for v in values)}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--modes", default="ha,plain")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="give up waiting for an answer after this many seconds")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    figures: dict[str, dict[str, list[dict[str, float]]]] = {}
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
                        print(f"{mode:5} {key:22} {side[:-2]:8}: "
                              f"{summary([r[side] for r in runs])}", flush=True)
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
