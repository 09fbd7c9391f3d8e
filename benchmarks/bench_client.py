"""Engineer/admin figures in a throwaway namespace lab (needs root and the lab tools):

- `fiovpn register` round trip: SSH through the tunnel to the server's sshd on
  10.42.42.1:5025, registry write, live apply; and the time until the new peer
  is on the server's interface. `fiovpn --version` is printed as the floor
  (Python start-up of any fiovpn command).
- `fiovpn ssh DEVICE -- true`: the first call (new SSH connection) and repeated
  calls (multiplexed over the shared connection).

Prints figures; not a timed test. Every probe runs inside a lab namespace.

    python benchmarks/bench_client.py [--repeat 10]
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
    args = parser.parse_args()

    with Lab.create(devices=1, engineers=1, admins=1,
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


if __name__ == "__main__":
    main()
