"""Server daemon figures on a real wireguard-go interface in throwaway namespaces.

For 1,000, 5,000, 20,000 and 50,000 device peers (a /16 subnet):
- initial sync time (empty interface -> every device + one client);
- a raw observe+apply baseline, same run: a bare `wg show dump` (read whole)
  plus a bare `wg set` of one peer, the floor of any reconcile;
- one changed device applied by the running daemon (a full reconcile pass), and
  a `server daemon --once` pass (fresh context: lock, start-up, one reconcile),
  each as a ratio to that baseline;
- packets lost by an unrelated live peer (pinging the server every 10 ms)
  during the changes, next to the same change done the old way
  (`wg-quick down` + `wg-quick up` of the whole config; 5,000 and below);
- daemon resident memory, CPU per idle poll and a `/metrics` scrape over HTTP
  (a child process running the real `Daemon` loop with `--http`; only the
  factory API is replaced by an in-process fake; the scraper is a process of
  its own, as Prometheus is).

Prints figures and a table; not a timed test. Needs root, wireguard-go, wg,
wg-quick, nft.

    python benchmarks/bench_daemon.py [--sizes 1000,5000,20000,50000] [--no-old-way]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from fiovpn.adapters.factory_api import ConfigEntry, ConfigFile, Device, WireguardIp
from fiovpn.adapters.runner import SubprocessRunner
from fiovpn.adapters.wireguard import WireGuard, private_key_file
from fiovpn.core.keys import Key, KeyPair
from fiovpn.core.plan import PeerChange
from fiovpn.lab.net import add_netns, ip, link_pair, remove_everything
from fiovpn.lab.proc import become_subreaper
from fiovpn.services import server as svc
from fiovpn.services.server import daemon as daemon_module
from fiovpn.settings import ServerSettings

SERVER = "10.42.42.1"
SUBNET = "10.42.0.0/16"
POOL = "10.42.250.1-10.42.250.254"
LIVE_IP = "10.42.250.1"
HTTP_PORT = 9109
FREE = "10.42.230.1"  # free addresses for the changes


@dataclass
class FakeApi:
    rows: list[WireguardIp] = field(default_factory=list)
    factory: str = "bench"

    def wireguard_ips(self) -> list[WireguardIp]:
        return list(self.rows)

    def factory_config(self) -> list[ConfigEntry]:
        return []

    def patch_factory_config(self, reason: str, files: list[ConfigFile]) -> None:
        raise NotImplementedError

    def device_config(self, device: str) -> list[ConfigEntry]:
        return []

    def patch_device_config(self, device: str, reason: str, files: list[ConfigFile]) -> None:
        raise NotImplementedError

    def list_devices(self) -> list[Device]:
        return []

    def get_device(self, device: str) -> Device:
        raise NotImplementedError


def device_rows(n: int) -> list[WireguardIp]:
    """N devices from 10.42.0.2 up (the server address skipped): 50,000 fit below
    10.42.196.0, clear of the free addresses used for changes and of the pool."""
    base = int(IPv4Address("10.42.0.2"))
    server = int(IPv4Address(SERVER))
    ips = (base + i for i in range(n + 1))
    return [WireguardIp(f"device-{i:05d}", IPv4Address(ip), True, KeyPair.generate().public)
            for i, ip in enumerate(x for x in ips if x != server) if i < n]


def settings_for(iface: str, work: Path, port: int) -> ServerSettings:
    return ServerSettings(
        factory="bench", interface=iface, private_key=work / "server.key", subnet=SUBNET,
        address=SERVER, client_pool=POOL, port=port, clients_file=work / "clients.conf",
        hosts_file=work / "hosts", state_dir=work / "state", unit_dir=work / "units",
        run_dir=work / "run",
        ip_forward_file=work / "ip_forward", interval=0.25)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


class Pinger:
    """`ping -i 0.01` from the live peer's namespace to the server."""

    INTERVAL = 0.01

    def __init__(self, ns: str, deadline: float) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "ping", "-n", "-i", str(self.INTERVAL), "-W", "1",
             "-w", str(int(deadline)), SERVER],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop(self) -> tuple[int, int]:
        self.proc.send_signal(2)  # SIGINT: ping prints its summary
        out, _ = self.proc.communicate(timeout=30)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        if not m:
            raise RuntimeError(f"no ping summary: {out[-300:]}")
        return int(m.group(1)), int(m.group(2))

    def wait(self) -> tuple[int, int]:
        out, _ = self.proc.communicate(timeout=600)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        if not m:
            raise RuntimeError(f"no ping summary: {out[-300:]}")
        return int(m.group(1)), int(m.group(2))


SCRAPER = """
import json, sys, time
import httpx
port, n = int(sys.argv[1]), int(sys.argv[2])
times = []
with httpx.Client() as client:
    for _ in range(5):
        t = time.perf_counter()
        r = client.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
        times.append(time.perf_counter() - t)
        assert r.status_code == 200 and f'fiovpn_peers{{kind="device"}} {n}' in r.text
print(json.dumps(times))
"""


def peak_rss_kib() -> int:
    """This process's own peak resident memory (``VmHWM``).

    Not ``getrusage().ru_maxrss``: Linux keeps the high-water mark of the memory
    a process had before ``exec``, and this child is forked from the benchmark
    process, which holds 50,000 rows, keys and contexts of its own (at 50,000
    devices ``ru_maxrss`` read ~180 MiB here before the child had built anything,
    against 28 MiB resident)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_child(iface: str, work: Path, n: int, passes: int) -> None:
    """Inside the server namespace: the real Daemon loop against N devices."""
    import resource

    import fiovpn.adapters.factory  # noqa: F401 - the real daemon carries the HTTP client

    # keys as the factory client makes them (Key.parse_public: one object per key)
    rows = [WireguardIp(r["name"], IPv4Address(r["ip"]), True, Key.parse_public(r["pubkey"]))
            for r in json.loads((work / "rows.json").read_text())]
    assert len(rows) == n
    daemon_module.tune_process()  # what `Daemon.run` does first
    settings = dataclasses.replace(settings_for(iface, work, 0), http=f"127.0.0.1:{HTTP_PORT}")
    ctx = svc.ServerContext.from_settings(settings, runner=SubprocessRunner(),
                                          api=FakeApi(rows))
    ctx.daemon = True
    daemon = svc.Daemon(ctx)
    daemon.web = daemon._bind_web()  # what `run()` does with --http
    scrapes: list[float] = []
    times: list[tuple[float, float, float]] = []
    real = svc.reconcile_once

    def counted(c: svc.ServerContext, **kw: bool) -> svc.ReconcileReport:
        report = real(c, **kw)
        self_ru = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append((time.monotonic(), self_ru.ru_utime + self_ru.ru_stime,
                      kids.ru_utime + kids.ru_stime))
        if len(times) == passes - 3:
            # /metrics over HTTP, as Prometheus would: from another process (its
            # buffers are not the daemon's memory), loopback of the server namespace
            got = subprocess.run([sys.executable, "-c", SCRAPER, str(HTTP_PORT), str(n)],
                                 capture_output=True, text=True, check=False, timeout=300)
            if got.returncode != 0:
                raise RuntimeError(f"scrape failed: {got.stderr[-1000:]}")
            scrapes.extend(json.loads(got.stdout))
        if len(times) >= passes:
            daemon.stop()
        return report

    daemon_module.reconcile_once = counted  # type: ignore[assignment]
    try:
        daemon._loop(once=False)  # the interface exists and is configured already
    finally:
        daemon.web.http.stop()
    idle = times[2:passes - 4]  # the first pass fills the memos; the scrapes come after
    cpu_self = (idle[-1][1] - idle[0][1]) / (len(idle) - 1)
    cpu_kids = (idle[-1][2] - idle[0][2]) / (len(idle) - 1)
    rss_kib = peak_rss_kib()
    print(json.dumps({"rss_mib": rss_kib / 1024, "cpu_self_ms": cpu_self * 1000,
                      "cpu_children_ms": cpu_kids * 1000, "passes": len(times),
                      "scrape_s": statistics.median(scrapes)}))


def bench_size(n: int, srv_ns: str, live_ns: str, prefix: str, work: Path, live_if: str,
               live_key: KeyPair, old_way: bool) -> dict[str, float]:
    out: dict[str, float] = {}
    iface = f"{prefix}s{n // 1000}"
    port = 5600 + n // 1000
    work.mkdir(parents=True, exist_ok=True)
    (work / "clients.conf").write_text(f"{live_key.public} {LIVE_IP} live\n")
    (work / "ip_forward").write_text("0\n")
    (work / "hosts").write_text("127.0.0.1 localhost\n")
    rows = device_rows(n)
    api = FakeApi(rows)
    runner = SubprocessRunner(netns=srv_ns)
    settings = settings_for(iface, work, port)
    ctx = svc.ServerContext.from_settings(settings, runner=runner, api=api)
    server_key = KeyPair.generate()
    work.joinpath("server.key").write_text(f"{server_key.private}\n")
    work.joinpath("server.key").chmod(0o600)
    ctx.server_key = server_key.public
    svc.ensure_interface(ctx, server_key.private)

    # the live peer points at this server
    subprocess.run(["ip", "netns", "exec", live_ns, "wg", "set", live_if, "peer",
                    str(server_key.public), "allowed-ips", f"{SERVER}/32", "endpoint",
                    f"198.18.9.1:{port}"], check=True)

    start = time.perf_counter()
    report = svc.reconcile_once(ctx)
    out["initial_sync_s"] = time.perf_counter() - start
    assert report.ok and len(report.changes) == n + 1, report.error
    ping = subprocess.run(["ip", "netns", "exec", live_ns, "ping", "-c", "3", "-i", "0.2",
                           "-W", "2", SERVER], capture_output=True, text=True, check=False)
    assert ping.returncode == 0, ping.stdout

    # one changed device: full reconcile pass vs its `wg set` step vs a bare `wg set`
    apply_times: list[float] = []
    real_apply = ctx.wg.apply

    def timed_apply(i: str, changes: Sequence[PeerChange]) -> None:
        t = time.perf_counter()
        real_apply(i, changes)
        apply_times.append(time.perf_counter() - t)

    ctx.wg.apply = timed_apply  # type: ignore[method-assign,assignment]
    pinger = Pinger(live_ns, 120)
    time.sleep(0.5)
    passes: list[float] = []
    bare: list[float] = []
    raw: list[float] = []
    free = int(IPv4Address(FREE))
    for k in range(5):
        old = api.rows[k]
        api.rows[k] = WireguardIp(old.name, IPv4Address(free + k), True, old.pubkey)
        t = time.perf_counter()
        report = svc.reconcile_once(ctx)
        passes.append(time.perf_counter() - t)
        assert len(report.changes) == 1 and report.changes[0].action == "update"
        other = rows[100 + k]
        # the raw baseline: observe the interface (a full `wg show dump`, read) and
        # apply the change (`wg set`), nothing else
        t = time.perf_counter()
        runner.run(["wg", "show", iface, "dump"])
        t_set = time.perf_counter()
        runner.run(["wg", "set", iface, "peer", str(other.pubkey), "allowed-ips",
                    f"{IPv4Address(free + 50 + k)}/32"])
        bare.append(time.perf_counter() - t_set)
        raw.append(time.perf_counter() - t)
        runner.run(["wg", "set", iface, "peer", str(other.pubkey), "allowed-ips",
                    f"{other.ip}/32"])
    time.sleep(0.5)
    sent, got = pinger.stop()
    ctx.wg.apply = real_apply  # type: ignore[method-assign]
    out["change_pass_s"] = statistics.median(passes)
    out["change_apply_s"] = statistics.median(apply_times)
    out["bare_wg_set_s"] = statistics.median(bare)
    out["raw_baseline_s"] = statistics.median(raw)
    out["live_sent"], out["live_lost"] = sent, sent - got

    # a `server daemon --once` pass with one change: a fresh context (nothing
    # memoised, state read from disk), the daemon's lock, start-up and one reconcile
    once: list[float] = []
    for k in range(3):
        old = api.rows[10 + k]
        api.rows[10 + k] = WireguardIp(old.name, IPv4Address(free + 20 + k), True, old.pubkey)
        fresh = svc.ServerContext.from_settings(settings, runner=runner, api=api)
        t = time.perf_counter()
        code = svc.Daemon(fresh).run(once=True)
        once.append(time.perf_counter() - t)
        assert code == 0 and fresh.last_status is not None
        assert len(fresh.last_status["last_changes"]) == 1, fresh.last_status["last_changes"]
    out["once_pass_s"] = statistics.median(once)

    # daemon memory and CPU per idle poll, in a child running the real loop
    (work / "rows.json").write_text(json.dumps([
        {"name": r.name, "ip": str(r.ip), "pubkey": str(r.pubkey)} for r in api.rows]))
    child = subprocess.run(
        ["ip", "netns", "exec", srv_ns, sys.executable, __file__, "--child", iface, str(work),
         str(n)], capture_output=True, text=True, check=False, timeout=600)
    if child.returncode != 0:
        raise RuntimeError(f"child failed: {child.stderr[-2000:]}")
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    out["rss_mib"] = figures["rss_mib"]
    out["idle_cpu_self_ms"] = figures["cpu_self_ms"]
    out["idle_cpu_children_ms"] = figures["cpu_children_ms"]
    out["scrape_s"] = figures["scrape_s"]

    if old_way:
        out.update(old_way_restart(ctx, iface, srv_ns, live_ns, server_key, port, work))
    return out


def old_way_restart(ctx: svc.ServerContext, iface: str, srv_ns: str, live_ns: str,
                    server_key: KeyPair, port: int, work: Path) -> dict[str, float]:
    """The same one-device change applied the way the old daemon did it:
    rewrite the whole config, `wg-quick down`, `wg-quick up`."""
    dump = ctx.wg.show_dump(iface)
    conf = work / f"{iface}.conf"
    lines = ["[Interface]", f"PrivateKey = {server_key.private}", f"ListenPort = {port}",
             f"Address = {SERVER}/16", ""]
    for p in dump.peers:
        lines += ["[Peer]", f"PublicKey = {p.public_key}",
                  f"AllowedIPs = {','.join(p.allowed_ips)}", ""]
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines))
    pinger = Pinger(live_ns, 10_000)
    time.sleep(1.0)
    t = time.perf_counter()
    for verb in ("down", "up"):
        r = subprocess.run(["ip", "netns", "exec", srv_ns, "wg-quick", verb, str(conf)],
                           capture_output=True, text=True, check=False, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"wg-quick {verb} failed: {r.stderr[-500:]}")
    restart = time.perf_counter() - t
    # wait until the live peer gets answers again (it re-handshakes), then 1 s more
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = subprocess.run(["ip", "netns", "exec", srv_ns, "wg", "show", iface,
                            "latest-handshakes"], capture_output=True, text=True, check=False)
        if any(line.split("\t")[1] != "0" for line in r.stdout.splitlines() if "\t" in line):
            break
        time.sleep(0.2)
    recovered = time.perf_counter() - t
    time.sleep(1.0)
    sent, got = pinger.stop()
    subprocess.run(["ip", "netns", "exec", srv_ns, "wg-quick", "down", str(conf)],
                   capture_output=True, check=False, timeout=600)
    conf.unlink()
    return {"old_restart_s": restart, "old_recovered_s": recovered, "old_sent": sent,
            "old_lost": sent - got}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,5000,20000,50000")
    parser.add_argument("--no-old-way", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("IFACE", "WORK", "N"))
    args = parser.parse_args()
    if args.child:
        run_child(args.child[0], Path(args.child[1]), int(args.child[2]), passes=22)
        return
    become_subreaper()
    # this process plays the running daemon (its passes are measured): the same
    # process settings as `Daemon.run` makes
    daemon_module.tune_process()
    prefix = f"fvb{os.getpid() % 10000}"
    srv_ns, live_ns = f"{prefix}srv", f"{prefix}live"
    live_if = f"{prefix}l"
    results: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="fiovpn-bench-") as tmp:
        try:
            add_netns(srv_ns)
            add_netns(live_ns)
            link_pair((srv_ns, f"{prefix}a", "198.18.9.1"), (live_ns, f"{prefix}b", "198.18.9.2"))
            live_key = KeyPair.generate()
            lwg = WireGuard(SubprocessRunner(netns=live_ns))
            lwg.create_interface(live_if)
            with private_key_file(live_key.private) as path:
                subprocess.run(["ip", "netns", "exec", live_ns, "wg", "set", live_if,
                                "private-key", str(path)], check=True)
            ip("-n", live_ns, "address", "add", f"{LIVE_IP}/16", "dev", live_if)
            ip("-n", live_ns, "link", "set", live_if, "up")
            for n in (int(s) for s in args.sizes.split(",")):
                print(f"--- {n:,} device peers ---", flush=True)
                # wg-quick down/up of 20,000+ peers takes minutes: only for the small ones
                r = bench_size(n, srv_ns, live_ns, prefix, Path(tmp) / str(n), live_if,
                               live_key, not args.no_old_way and n <= 5000)
                results[n] = r
                report(n, r)
                subprocess.run(["ip", "-n", srv_ns, "link", "del", f"{prefix}s{n // 1000}"],
                               capture_output=True, check=False)
        finally:
            problems = remove_everything(prefix, [srv_ns, live_ns])
            if problems:
                print("cleanup problems:", problems, file=sys.stderr)
    table(results)


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    return (f"{os.cpu_count()} CPU ({model}), {int(mem) // 1024} MiB RAM, load average "
            f"{load[0]:.1f} at the end; wireguard-go, nft {nft_version()}, "
            f"Python {sys.version.split()[0]}")


def nft_version() -> str:
    r = subprocess.run(["nft", "--version"], capture_output=True, text=True, check=False)
    return r.stdout.strip().split(" ")[1] if r.returncode == 0 and r.stdout else "?"


def table(results: dict[int, dict[str, float]]) -> None:
    rows = [
        ("initial sync (target < 5 s at 50k)", lambda r: f"{r['initial_sync_s']:.2f} s"),
        ("raw observe+apply baseline", lambda r: ms(r["raw_baseline_s"])),
        ("one change, running daemon", lambda r: ms(r["change_pass_s"])),
        ("  ratio to baseline (target <= 3x)",
         lambda r: f"{r['change_pass_s'] / r['raw_baseline_s']:.2f}x"),
        ("--once pass, one change", lambda r: ms(r["once_pass_s"])),
        ("  ratio to baseline (target <= 3x)",
         lambda r: f"{r['once_pass_s'] / r['raw_baseline_s']:.2f}x"),
        ("live peer pings lost in 5 changes (target 0)",
         lambda r: f"{int(r['live_lost'])}/{int(r['live_sent'])}"),
        ("daemon RSS (target < 150 MB at 50k)", lambda r: f"{r['rss_mib']:.0f} MiB"),
        ("CPU per idle poll (daemon + wg)",
         lambda r: f"{r['idle_cpu_self_ms']:.0f} + {r['idle_cpu_children_ms']:.0f} ms"),
        ("/metrics scrape (target < 200 ms at 50k)", lambda r: ms(r["scrape_s"])),
    ]
    sizes = sorted(results)
    head = f"{'':46}" + "".join(f"{n:>12,}" for n in sizes)
    print("\n" + head)
    for label, fmt in rows:
        print(f"{label:46}" + "".join(f"{fmt(results[n]):>12}" for n in sizes))
    print(f"machine: {machine()}")


def report(n: int, r: dict[str, float]) -> None:
    print(f"initial sync ({n:,} devices + 1 client): {r['initial_sync_s']:.2f} s")
    print(f"one changed device, full reconcile pass: {ms(r['change_pass_s'])} "
          f"(API read, wg dump + parse, plan, wg set, nft, hosts, status)")
    print(f"one changed device, its `wg set` step: {ms(r['change_apply_s'])}; bare `wg set` of "
          f"the same change: {ms(r['bare_wg_set_s'])}; ratio "
          f"{r['change_apply_s'] / r['bare_wg_set_s']:.2f}x (full pass "
          f"{r['change_pass_s'] / r['bare_wg_set_s']:.1f}x)")
    print(f"live peer during 5 changes: {int(r['live_lost'])} of {int(r['live_sent'])} pings "
          "lost (10 ms interval)")
    if "old_lost" in r:
        print(f"old way (wg-quick down/up): restart {r['old_restart_s']:.2f} s, live peer "
              f"back after {r['old_recovered_s']:.1f} s, {int(r['old_lost'])} of "
              f"{int(r['old_sent'])} pings lost")
    print(f"daemon RSS: {r['rss_mib']:.1f} MiB; CPU per idle poll: "
          f"{r['idle_cpu_self_ms']:.1f} ms daemon + {r['idle_cpu_children_ms']:.1f} ms wg")
    print(f"raw observe+apply baseline {ms(r['raw_baseline_s'])}; one change by the running "
          f"daemon {r['change_pass_s'] / r['raw_baseline_s']:.2f}x, --once pass "
          f"{ms(r['once_pass_s'])} = {r['once_pass_s'] / r['raw_baseline_s']:.2f}x; /metrics "
          f"scrape {ms(r['scrape_s'])}", flush=True)


if __name__ == "__main__":
    main()
