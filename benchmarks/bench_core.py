"""Core figures: WireGuard key generation per second and parsing a 5,000-peer
``wg show dump``, each next to a baseline measured in the same run:
key pairs from ``wg genkey | wg pubkey`` (what shell scripts do), and the bare
``str.split`` of the dump text (the floor any parser pays). Prints figures; not
a timed test.

    python benchmarks/bench_core.py
"""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from ipaddress import IPv4Address

from fiovpn.core.keys import KeyPair
from fiovpn.core.peers import Peer
from fiovpn.core.plan import plan
from fiovpn.core.wgdump import parse_dump


def bench_keys(seconds: float = 2.0) -> float:
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        KeyPair.generate()
        n += 1
    return n / (time.perf_counter() - start)


def bench_wg_tool_keys(seconds: float = 1.0) -> float | None:
    """Baseline: one key pair the shell way, `wg genkey` piped into `wg pubkey`."""
    if shutil.which("wg") is None:
        return None
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        priv = subprocess.run(["wg", "genkey"], capture_output=True, text=True,
                              check=True).stdout
        subprocess.run(["wg", "pubkey"], input=priv, capture_output=True, text=True,
                       check=True)
        n += 1
    return n / (time.perf_counter() - start)


def make_dump(peers: int) -> tuple[str, list[Peer]]:
    server = KeyPair.generate()
    lines = [f"{server.private}\t{server.public}\t5555\toff"]
    desired = []
    now = int(time.time())
    for i in range(peers):
        key = KeyPair.generate().public
        ip = IPv4Address(int(IPv4Address("10.42.0.2")) + i)
        live = random.random() < 0.3
        endpoint = f"198.18.{i // 250}.{i % 250 + 1}:{40000 + i % 20000}" if live else "(none)"
        hs = now - random.randint(0, 300) if live else 0
        lines.append(f"{key}\t(none)\t{endpoint}\t{ip}/32\t{hs}\t{i * 7}\t{i * 11}\toff")
        desired.append(Peer("device", f"d{i}", key, ip))
    return "\n".join(lines) + "\n", desired


def main() -> None:
    rate = bench_keys()
    base = bench_wg_tool_keys()
    line = f"key generation: {rate:,.0f} key pairs/s"
    if base:
        line += f"; `wg genkey | wg pubkey`: {base:,.0f}/s; ratio {rate / base:,.0f}x faster"
    print(line)
    text, desired = make_dump(5000)
    runs = 10
    start = time.perf_counter()
    dump = parse_dump(text)  # first sight of these keys: every key validated
    cold_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    for _ in range(runs):
        dump = parse_dump(text)  # a later poll: the same keys again
    parse_ms = (time.perf_counter() - start) / runs * 1000
    start = time.perf_counter()
    for _ in range(runs):
        rows = [ln.split("\t") for ln in text.splitlines()]
    split_ms = (time.perf_counter() - start) / runs * 1000
    assert len(rows) == 5001
    print(f"parse `wg show dump`, 5,000 peers ({len(text) / 1024:.0f} KiB): "
          f"{cold_ms:.1f} ms first, {parse_ms:.1f} ms on later polls; "
          f"bare str.split: {split_ms:.1f} ms; ratio {parse_ms / split_ms:.1f}x")
    start = time.perf_counter()
    for _ in range(runs):
        changes = plan(desired, dump.peers)
    plan_ms = (time.perf_counter() - start) / runs * 1000
    assert changes == []
    print(f"plan 5,000 desired vs 5,000 actual (no change): {plan_ms:.1f} ms")


if __name__ == "__main__":
    main()
