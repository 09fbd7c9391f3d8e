"""Section 11 figures in a namespace lab (real wireguard-go, real nft):

1. forwarding cost of the group policy: ping round trips (engineer -> server ->
   device through WireGuard) with the firewall holding 5,000 devices and 50
   clients, (A) none restricted vs (B) all 50 restricted by ``groups=`` (the
   engineer among them, reaching its device through the group's verdict map);
   same lab, same run, only the table differs;
2. time to apply a grant to a group of 1,000 devices (one set element, what
   ``server access grant`` does) next to re-applying the whole table (the
   baseline), with 5,000 devices in the table.

Prints figures; not a timed test. Needs root and the lab's tools.

    python benchmarks/bench_access.py [--pings 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from ipaddress import IPv4Address

from fiovpn.adapters.nft import Nft
from fiovpn.core.firewall import AccessRules, FirewallPolicy, render_grant, render_ruleset
from fiovpn.core.keys import KeyPair
from fiovpn.core.peers import Peer
from fiovpn.lab import DeviceSpec, Lab

DEVICES = 5000
CLIENTS = 50


def fleet(lab: Lab) -> tuple[list[Peer], dict[IPv4Address, str]]:
    """The lab's real peers plus synthetic devices/clients up to 5,000 and 50."""
    peers = [Peer("device", d.device_name, d.keys.public, d.vpn_ip)
             for d in lab.devices if d.vpn_ip is not None]
    eng = lab.engineers[0]
    peers.append(Peer("client", "eng", KeyPair.generate().public,
                      IPv4Address(eng.vpn_ip)))  # type: ignore[attr-defined]
    base = int(IPv4Address("10.42.0.0"))
    key = KeyPair.generate().public  # the firewall never looks at keys
    n = 0
    while sum(p.kind == "device" for p in peers) < DEVICES:
        n += 1
        ip = IPv4Address(base + 256 * 10 + n)  # 10.42.10.x onwards
        peers.append(Peer("device", f"sim-{n}", key, ip))
    n = 0
    while sum(p.kind == "client" for p in peers) < CLIENTS:
        n += 1
        peers.append(Peer("client", f"c{n}", key, IPv4Address(base + 256 * 251 + n)))
    groups = {p.ip: f"g{i % 5}" for i, p in enumerate(q for q in peers if q.kind == "device")}
    for d in lab.devices:  # the engineer's device is in group g0
        if d.vpn_ip is not None:
            groups[d.vpn_ip] = "g0"
    return peers, groups


def ping_rtts(lab: Lab, ip: str, count: int) -> list[float]:
    eng = lab.engineers[0]
    out = eng.run(["ping", "-n", "-q", "-c", str(count), "-i", "0.01", "-W", "2", ip],
                  check=True, timeout=count * 0.1 + 30).stdout
    # rtt min/avg/max/mdev = 0.512/0.734/2.101/0.112 ms
    line = next(ln for ln in out.splitlines() if "min/avg/max" in ln)
    mn, avg, mx, mdev = (float(x) for x in line.split("=")[1].split()[0].split("/"))
    return [mn, avg, mx, mdev]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pings", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with Lab.create(devices=[DeviceSpec("device1")], engineers=1, admins=1,
                   server_settings={"interval": 3600}) as lab:
        lab.start_vpn()
        eng = lab.engineers[0]
        eng.vpn_ip = lab.join(eng, name="eng")  # type: ignore[attr-defined]
        lab.server.stop_daemon()  # the tables below are ours for the run
        server = lab.server
        nft = Nft(server.runner)
        policy = FirewallPolicy("fiovpn", server.interface, IPv4Address(server.vpn_ip))
        peers, groups = fleet(lab)
        clients = [p.ip for p in peers if p.kind == "client"]
        open_rules = AccessRules(device_groups=groups)
        restricted = AccessRules(device_groups=groups,
                                 client_groups={ip: ("g0",) for ip in clients})
        target = str(lab.devices[0].vpn_ip)
        print(f"table: {sum(p.kind == 'device' for p in peers)} devices, {len(clients)} "
              f"clients; {args.pings} pings every 10 ms, {args.rounds} rounds, alternating")
        figures: dict[str, list[float]] = {"none restricted": [], "50 restricted": []}
        for _ in range(args.rounds):
            for label, rules in (("none restricted", open_rules),
                                 ("50 restricted", restricted)):
                nft.apply(render_ruleset(policy, peers, rules, now=time.time()))
                ping_rtts(lab, target, 20)  # warm up (conntrack, ARP, handshakes)
                figures[label].append(ping_rtts(lab, target, args.pings)[1])
        for label, avgs in figures.items():
            print(f"  {label:16s} avg RTT per round (ms): "
                  + ", ".join(f"{a:.3f}" for a in avgs)
                  + f"  median {statistics.median(avgs):.3f}")
        a, b = (statistics.median(v) for v in figures.values())
        print(f"  ratio restricted / none: {b / a:.3f}")

        # 2. a grant to a group of 1,000 devices
        thousand = {ip: ("big" if i < 1000 else g)
                    for i, (ip, g) in enumerate(sorted(groups.items(), key=lambda x: int(x[0])))}
        rules = AccessRules(device_groups=thousand, client_groups={ip: ("g0",) for ip in clients})
        full = render_ruleset(policy, peers, rules, now=time.time())
        nft.apply(full)
        grant_ms, full_ms = [], []
        client = clients[-1]
        for i in range(10):
            stmt = render_grant("fiovpn", client, group="big", end=time.time() + 60 + i,
                                now=time.time())
            t = time.perf_counter()
            nft.apply(stmt)
            grant_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            nft.apply(full)
            full_ms.append((time.perf_counter() - t) * 1000)
        members = sum(1 for g in thousand.values() if g == "big")
        print(f"grant to a group of {members} devices (one set element, `nft -f`): "
              f"median {statistics.median(grant_ms):.1f} ms, max {max(grant_ms):.1f} ms")
        print(f"  baseline: re-applying the whole table: median "
              f"{statistics.median(full_ms):.1f} ms  (ratio "
              f"{statistics.median(full_ms) / statistics.median(grant_ms):.1f}x)")
        nft.apply(render_grant("fiovpn", client, group="big", end=time.time() + 60,
                               now=time.time()))
        check = subprocess.run(["ip", "netns", "exec", server.ns, "nft", "list", "set", "inet",
                                "fiovpn", "grp_big_grants"], capture_output=True, text=True)
        assert str(client) in check.stdout, check.stdout


if __name__ == "__main__":
    main()
