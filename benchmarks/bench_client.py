"""Engineer/admin figures in a throwaway namespace lab (needs root and the lab tools):

- `fiovpn register` round trip: SSH through the tunnel to the server's sshd on
  10.42.42.1:5025, registry write, live apply; and the time until the new peer
  is on the server's interface. `fiovpn --version` is printed as the floor
  (Python start-up of any fiovpn command).
- `fiovpn ssh DEVICE -- true`: the first call (new SSH connection) and repeated
  calls (multiplexed over the shared connection), each beside plain OpenSSH run
  with exactly the options fiovpn gives it, over the same tunnel (baseline); by
  name (the name's IP cached from an earlier lookup, as on a second call), by name
  with the cache removed before each call (a factory API lookup each time), by IP.
- `fiovpn exec --all -- uname -n` over N lab devices (`--exec-devices`, default 20)
  beside the same command run sequentially with plain `ssh` (baseline).

Prints figures; not a timed test. Every probe runs inside a lab namespace.

The fiovpn measured is the one beside the Python running this script, so run it with
the interpreter users run fiovpn with: a fresh Debian install runs it with Debian's
/usr/bin/python3 (`/usr/bin/python3 -m venv V && V/bin/pip install -e . &&
V/bin/python benchmarks/bench_client.py`). The interpreter's own start-up is printed
in the same turns: it differs a lot between builds (8 ms for Debian's 3.11 here,
32 ms for a pyenv build with site-packages hooks), and all of it is on fiovpn's side.

    python benchmarks/bench_client.py [--repeat 10] [--exec-devices 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

from fiovpn.core.keys import KeyPair
from fiovpn.lab import Lab, wait_for

# Runs inside the engineer's namespace: the SSH layer alone, without Python start-up.
SSH_LAYER = """
import json, sys, time
from fiovpn.adapters.runner import SubprocessRunner
from fiovpn.services.device_access import DeviceTarget, device_client
from fiovpn.services.remote import ssh_options
from fiovpn.settings import load_client
from ipaddress import IPv4Address
settings = load_client({})
target = DeviceTarget("d", IPv4Address(sys.argv[1]), "ip")
n = int(sys.argv[2])
out = {}
for share in (True, False):
    ssh = device_client(settings, SubprocessRunner(), target, ssh_options(settings, share=share))
    ssh.close()
    times = []
    for _ in range(n + 1):
        t = time.perf_counter(); ssh.run(["true"]); times.append(time.perf_counter() - t)
    ssh.close()
    out["shared" if share else "unshared"] = times
print(json.dumps(out))
"""


# Runs inside the engineer's namespace: the ssh argv fiovpn itself would run for
# `fiovpn ssh IP -- true`, and the command that closes its shared connection.
SAME_OPTIONS = """
import json, sys
from ipaddress import IPv4Address
from fiovpn.adapters.runner import SubprocessRunner
from fiovpn.services.device_access import DeviceTarget, device_client
from fiovpn.settings import load_client
ssh = device_client(load_client({}), SubprocessRunner(),
                    DeviceTarget("d", IPv4Address(sys.argv[1]), "ip"))
print(json.dumps({"argv": ssh.argv(["true"]),
                  "close": [*ssh.base_argv(), "-O", "exit", "--", ssh.target.host]}))
"""


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def summary(label: str, samples: list[float]) -> None:
    print(f"{label:<46} median {ms(statistics.median(samples))}   "
          f"min {ms(min(samples))}   max {ms(max(samples))}   (n={len(samples)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--exec-devices", type=int, default=20)
    args = parser.parse_args()

    with Lab.create(devices=max(1, args.exec_devices), engineers=1, admins=1,
                    server_settings={"interval": 30}) as lab:
        print(f"lab {lab.prefix} built in {lab.setup_seconds:.1f} s")
        server, admin = lab.server, lab.engineers[0]
        server.enable()
        server.start_daemon()
        server.wait_synced(timeout=30)
        lab.apply_factory_config()
        pub = admin.fiovpn_json("keys", "generate")["public_key"]
        added = server.fiovpn_json("server", "clients", "add", "--public-key", pub,
                                   "--name", "bench-admin")
        admin.fiovpn("client", "init", "--address", added["ip"])
        admin.fiovpn("connect")
        assert admin.ping("10.42.42.1", timeout=10), "admin cannot reach the server"

        floor = [timed(lambda: admin.fiovpn("--version")) for _ in range(args.repeat)]
        summary("fiovpn --version (start-up floor)", floor)

        register, applied = [], []
        for i in range(args.repeat):
            key = str(KeyPair.generate().public)
            start = time.perf_counter()
            admin.fiovpn("register", "--public-key", key, "--name", f"bench{i}")
            register.append(time.perf_counter() - start)
            wait_for(lambda k=key: k in server.peers(), timeout=10,  # type: ignore[misc]
                     what="the new client on the server interface", interval=0.02)
            applied.append(time.perf_counter() - start)
        summary("fiovpn register (SSH + registry + apply)", register)
        summary("  ... until the peer is on the interface", applied)

        device = lab.devices[0].device_name
        first = timed(lambda: admin.fiovpn("ssh", device, "--", "true"))
        repeated = [timed(lambda: admin.fiovpn("ssh", device, "--", "true"))
                    for _ in range(args.repeat)]
        print(f"{'fiovpn ssh ' + device + ' -- true, first call':<46} "
              f"       {ms(first)}")
        summary(f"fiovpn ssh {device} -- true, repeated (shared)", repeated)
        ip = str(lab.devices[0].vpn_ip)
        by_ip = [timed(lambda: admin.fiovpn("ssh", ip, "--", "true"))
                 for _ in range(args.repeat)]
        summary(f"fiovpn ssh {ip} -- true (by IP, no API lookup)", by_ip)
        layer = json.loads(admin.run([sys.executable, "-c", SSH_LAYER, ip,
                                      str(args.repeat)]).stdout)
        print(f"{'SshClient.run(true), shared: first call':<46}        "
              f"{ms(layer['shared'][0])}")
        summary("SshClient.run(true), shared: repeated", layer["shared"][1:])
        summary("SshClient.run(true), no sharing", layer["unshared"])
        direct = [timed(lambda: admin.ssh(str(lab.devices[0].vpn_ip), "true"))
                  for _ in range(min(args.repeat, 5))]
        summary("plain ssh -- true (no sharing), for reference", direct)

        # fiovpn ssh vs plain OpenSSH with the very options fiovpn gives ssh.
        same = json.loads(admin.run([sys.executable, "-c", SAME_OPTIONS, ip]).stdout)
        plain, close = same["argv"], same["close"]

        def first_of(run: Callable[[], object]) -> float:
            admin.run(close, check=False)  # no shared connection: a new one
            return timed(run)
        cache = admin.home / ".cache" / "fiovpn" / "devices.json"

        def by_name_cold() -> object:
            cache.unlink(missing_ok=True)  # the name is looked up in the factory again
            return admin.fiovpn("ssh", device, "--", "true")
        pairs = {
            "fiovpn ssh DEVICE -- true": lambda: admin.fiovpn("ssh", device, "--", "true"),
            "fiovpn ssh DEVICE, name not cached": by_name_cold,
            "fiovpn ssh IP -- true": lambda: admin.fiovpn("ssh", ip, "--", "true"),
            "plain ssh, fiovpn's options (baseline)": lambda: admin.run(plain),
            # What any Python program pays before its first line (this machine's
            # site-packages .pth files included): the part of the gap that is not fiovpn's.
            "python -c pass (interpreter start)": lambda: admin.run([sys.executable, "-c",
                                                                     "pass"]),
        }
        print("\nfirst call (new connection) / repeated (shared connection), "
              "the variants taking turns (a load spike hits them alike):")
        firsts: dict[str, list[float]] = {label: [] for label in pairs}
        again: dict[str, list[float]] = {label: [] for label in pairs}
        for _ in range(min(args.repeat, 5)):
            for label, run in pairs.items():
                firsts[label].append(first_of(run))
        admin.run(plain)  # the shared connection for the repeated calls
        for _ in range(args.repeat):
            for label, run in pairs.items():
                again[label].append(timed(run))
        figures: dict[str, tuple[float, float]] = {}
        for label in pairs:
            figures[label] = (statistics.median(firsts[label]),
                              statistics.median(again[label]))
            print(f"  {label:<40} first {ms(figures[label][0])}   "
                  f"repeated {ms(figures[label][1])}")
        base = figures["plain ssh, fiovpn's options (baseline)"]
        interpreter = figures["python -c pass (interpreter start)"][1]
        for label in list(pairs)[:3]:
            f, r = figures[label]
            print(f"  {label:<40} ratio to baseline: first {f / base[0]:.2f}x, "
                  f"repeated {r / base[1]:.2f}x; fiovpn's own part of the repeated "
                  f"call beyond ssh and the interpreter: {ms(r - base[1] - interpreter)}")

        # exec over every device vs the same command sequentially with plain ssh.
        n = len(lab.devices)
        start = time.perf_counter()
        out = admin.fiovpn("exec", "--all", "--json", "--", "uname", "-n", check=False,
                           timeout=600)
        fan = time.perf_counter() - start
        rows = json.loads(out.stdout)
        assert all(r["exit_code"] == 0 for r in rows), out.stderr[-500:]
        start = time.perf_counter()
        for d in lab.devices:
            admin.ssh(str(d.vpn_ip), "uname", "-n")
        seq = time.perf_counter() - start
        print(f"\nfiovpn exec --all -- uname -n over {n} devices (--parallel 10): "
              f"{ms(fan)}")
        print(f"plain ssh, one device after the other (baseline):           {ms(seq)}"
              f"   ratio {fan / seq:.2f}x")


if __name__ == "__main__":
    main()
