"""The WireGuard and nft adapters against the real thing: a wireguard-go
interface in a throwaway namespace, a live peer in another one.

Shows that a delta through ``wg set`` leaves an unchanged peer's session
(endpoint, handshake, counters) alone and that the rendered ruleset applies
atomically and is enforced.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address as A

import pytest

from fiovpn.adapters.nft import Nft
from fiovpn.adapters.runner import Completed, SubprocessRunner
from fiovpn.adapters.wireguard import WireGuard, private_key_file
from fiovpn.core.firewall import FirewallPolicy, render_ruleset
from fiovpn.core.keys import KeyPair
from fiovpn.core.peers import Peer
from fiovpn.core.plan import plan
from fiovpn.lab.net import add_netns, ip, link_pair, remove_everything
from fiovpn.lab.proc import become_subreaper

pytestmark = pytest.mark.e2e

SERVER_IP = A("10.42.42.1")


@dataclass
class CountingRunner:
    inner: SubprocessRunner
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True,
            timeout: float = 60.0) -> Completed:
        self.calls.append(tuple(argv))
        return self.inner.run(argv, input=input, check=check, timeout=timeout)


@dataclass
class Pair:
    server_ns: str
    peer_ns: str
    server_if: str
    peer_if: str
    runner: CountingRunner
    wg: WireGuard
    live: Peer  # the peer namespace's key, as a client of the server

    def in_peer(self, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.peer_ns, *argv], capture_output=True,
                              text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    become_subreaper()  # reap the daemonized wireguard-go processes we kill
    prefix = f"fva{os.getpid() % 100000}"
    s_ns, p_ns = f"{prefix}s", f"{prefix}p"
    s_if, p_if = f"{prefix}ws", f"{prefix}wp"
    try:
        add_netns(s_ns)
        add_netns(p_ns)
        link_pair((s_ns, f"{prefix}vs", "198.18.7.1"), (p_ns, f"{prefix}vp", "198.18.7.2"))

        runner = CountingRunner(SubprocessRunner(netns=s_ns))
        wg = WireGuard(runner)
        assert wg.create_interface(s_if) == "wireguard-go"  # no kernel module here
        server = KeyPair.generate()
        wg.configure(s_if, private_key=server.private, port=5555, address=SERVER_IP,
                     prefix=24)

        peer = KeyPair.generate()
        pwg = WireGuard(SubprocessRunner(netns=p_ns))
        assert pwg.create_interface(p_if) == "wireguard-go"
        with private_key_file(peer.private) as key_path:
            subprocess.run(["ip", "netns", "exec", p_ns, "wg", "set", p_if, "private-key",
                            str(key_path), "peer", str(server.public), "allowed-ips",
                            f"{SERVER_IP}/32", "endpoint", "198.18.7.1:5555"], check=True)
        ip("-n", p_ns, "address", "add", "10.42.42.200/24", "dev", p_if)
        ip("-n", p_ns, "link", "set", p_if, "up")
        live = Peer("client", "live", peer.public, A("10.42.42.200"))
        yield Pair(s_ns, p_ns, s_if, p_if, runner, wg, live)
    finally:
        problems = remove_everything(prefix, [s_ns, p_ns])
        assert not problems, problems


def _others(n: int, start: int = 2) -> list[Peer]:
    return [Peer("device", f"d{i}", KeyPair.generate().public,
                 A(f"10.42.{50 + (start + i) // 250}.{(start + i) % 250 + 2}"))
            for i in range(n)]


def test_delta_keeps_an_unchanged_peer_session(pair: Pair) -> None:
    wg = pair.wg
    wg.apply(pair.server_if, plan([pair.live], wg.show_dump(pair.server_if).peers))
    ping = pair.in_peer("ping", "-c", "3", "-i", "0.2", "-W", "2", str(SERVER_IP))
    assert ping.returncode == 0, ping.stdout + ping.stderr
    before = wg.show_dump(pair.server_if).peer(pair.live.public_key)
    assert before is not None and before.endpoint and before.latest_handshake > 0

    others = _others(300)
    pair.runner.calls.clear()
    changes = plan([pair.live, *others], wg.show_dump(pair.server_if).peers)
    assert [c.action for c in changes] == ["add"] * 300
    wg.apply(pair.server_if, changes)
    assert len([c for c in pair.runner.calls if c[:2] == ("wg", "set")]) == 1  # one batch

    # remove half, move one to a new IP, add a few: the live peer is untouched
    moved = Peer("device", "moved", others[0].public_key, A("10.42.43.200"))
    desired = [pair.live, moved, *others[150:], *_others(5, start=400)]
    changes = plan(desired, wg.show_dump(pair.server_if).peers)
    assert {c.action for c in changes} == {"remove", "update", "add"}
    assert all(c.public_key != pair.live.public_key for c in changes)
    wg.apply(pair.server_if, changes)

    after_dump = wg.show_dump(pair.server_if)
    after = after_dump.peer(pair.live.public_key)
    assert after is not None
    assert after.endpoint == before.endpoint
    assert after.latest_handshake == before.latest_handshake  # same session, no new handshake
    assert after.rx >= before.rx and after.tx >= before.tx  # counters not reset
    assert plan(desired, after_dump.peers) == []  # converged
    assert after_dump.peer(moved.public_key).allowed_ips == ("10.42.43.200/32",)  # type: ignore[union-attr]

    ping = pair.in_peer("ping", "-c", "3", "-i", "0.2", "-W", "2", str(SERVER_IP))
    assert ping.returncode == 0 and " 0% packet loss" in ping.stdout, ping.stdout


def test_ruleset_applies_atomically_and_is_enforced(pair: Pair) -> None:
    nft = Nft(SubprocessRunner(netns=pair.server_ns))
    policy = FirewallPolicy("fiovpn", pair.server_if, SERVER_IP)
    pair.wg.apply(pair.server_if, plan([pair.live], pair.wg.show_dump(pair.server_if).peers))
    devices = _others(3)

    def nft_list(*what: str) -> str:
        return subprocess.run(["ip", "netns", "exec", pair.server_ns, "nft", "list", *what],
                              capture_output=True, text=True, check=True).stdout

    nft.apply(render_ruleset(policy, [pair.live, *devices]))
    nft.apply(render_ruleset(policy, [pair.live, *devices]))  # replacing is idempotent
    assert nft_list("tables").split().count("fiovpn") == 1
    assert "10.42.42.200" in nft_list("set", "inet", "fiovpn", "client_ips")
    ping = pair.in_peer("ping", "-c", "1", "-W", "2", str(SERVER_IP))
    assert ping.returncode == 0, ping.stdout

    # the same peer as a device may still ping the server, but not reach its TCP ports
    as_device = Peer("device", "dev", pair.live.public_key, pair.live.ip)
    nft.apply(render_ruleset(policy, [as_device]))
    assert pair.in_peer("ping", "-c", "1", "-W", "2", str(SERVER_IP)).returncode == 0
    srv = subprocess.Popen(["ip", "netns", "exec", pair.server_ns, "python3", "-c",
                            "import socket,time;s=socket.socket();"
                            "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
                            "s.bind(('10.42.42.1',5025));s.listen();time.sleep(30)"])
    try:
        probe = ("import socket,sys;s=socket.socket();s.settimeout(3)\n"
                 "try:\n s.connect(('10.42.42.1',5025));print('open')\n"
                 "except OSError as e:\n print('closed',e)")
        import time
        time.sleep(0.5)
        out = pair.in_peer("python3", "-c", probe).stdout
        assert out.startswith("closed"), out  # a device may not open connections here
        nft.apply(render_ruleset(policy, [pair.live]))
        out = pair.in_peer("python3", "-c", probe).stdout
        assert out.startswith("open"), out  # a client may (the server's sshd on 5025)
    finally:
        srv.kill()
        srv.wait()

    # unknown source (in no set): rejected at once, not silently dropped
    nft.apply(render_ruleset(policy, []))
    assert pair.in_peer("ping", "-c", "1", "-W", "2", str(SERVER_IP)).returncode != 0
    nft.delete_table("fiovpn")
    assert "fiovpn" not in nft_list("tables")


def test_set_element_deltas_change_only_elements_and_keep_the_session(pair: Pair) -> None:
    """A peer change reaches the kernel as add/delete element statements: the table
    (its handle) stays, a live TCP connection through it keeps going, and a delta
    the kernel refuses leaves it as it was."""
    from fiovpn.core.firewall import render_delta, render_full, table_model

    nft = Nft(SubprocessRunner(netns=pair.server_ns))
    policy = FirewallPolicy("fiovpn", pair.server_if, SERVER_IP, http_port=9100)
    pair.wg.apply(pair.server_if, plan([pair.live], pair.wg.show_dump(pair.server_if).peers))
    devices = _others(200)

    def nft_out(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", pair.server_ns, "nft", *args],
                              capture_output=True, text=True, check=check)

    def elements() -> set[str]:
        import re
        out = nft_out("list", "set", "inet", "fiovpn", "device_ips").stdout
        return set(re.findall(r"\d+\.\d+\.\d+\.\d+", out))

    def handle() -> str:
        out = nft_out("-a", "list", "table", "inet", "fiovpn").stdout
        return out.split("# handle", 1)[1].split()[0]

    first = table_model(policy, [pair.live, *devices], now=0)
    nft.apply(render_full(first, 0))
    table_handle = handle()
    # a TCP session from the client to the server, open across the changes
    srv = subprocess.Popen(["ip", "netns", "exec", pair.server_ns, "python3", "-c",
                            "import socket;s=socket.socket();"
                            "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
                            "s.bind(('10.42.42.1',5026));s.listen();c,_=s.accept()\n"
                            "while True:\n d=c.recv(100)\n if not d: break\n c.sendall(d)"])
    from fiovpn.lab.proc import wait_for
    wait_for(lambda: ":5026" in subprocess.run(
        ["ip", "netns", "exec", pair.server_ns, "ss", "-Hltn"], capture_output=True,
        text=True, check=False).stdout, timeout=20, what="the echo server", interval=0.1)
    cli = subprocess.Popen(["ip", "netns", "exec", pair.peer_ns, "python3", "-u", "-c",
                            "import socket,sys,time;s=socket.create_connection(('10.42.42.1',"
                            "5026),timeout=5)\n"
                            "for line in sys.stdin:\n s.sendall(line.encode());"
                            "print(s.recv(100).decode().strip(),flush=True)"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        def echo(text: str) -> str:
            assert cli.stdin is not None and cli.stdout is not None
            cli.stdin.write(text + "\n")
            cli.stdin.flush()
            return cli.stdout.readline().strip()
        assert echo("one") == "one"

        moved = Peer("device", "moved", devices[0].public_key, A("10.42.60.7"))
        second = table_model(policy, [pair.live, moved, *devices[1:150]], now=0)
        delta = render_delta(first, second, 0)
        assert delta is not None and "delete table" not in delta
        assert delta.count("\n") == 2  # one delete and one add statement for device_ips
        nft.apply(delta)
        assert handle() == table_handle  # the same table: not replaced
        listed = elements()
        assert "10.42.60.7" in listed and str(devices[0].ip) not in listed
        assert str(devices[160].ip) not in listed and str(devices[100].ip) in listed
        assert len(listed) == 150
        assert echo("two") == "two"  # the connection lived through it
        assert render_delta(second, second, 0) == ""

        # a delta that no longer fits the kernel (an element gone already) is refused
        # whole: nothing of it applied
        nft_out("delete", "element", "inet", "fiovpn", "device_ips", f"{{ {devices[1].ip} }}")
        third = table_model(policy, [pair.live, *devices[2:150]], now=0)
        bad = render_delta(second, table_model(policy, [pair.live, moved, *devices[2:150],
                                                        *devices[180:181]], now=0), 0)
        assert bad is not None
        with pytest.raises(Exception, match="nft"):
            nft.apply(bad)
        assert str(devices[180].ip) not in elements()
        nft.apply(render_full(third, 0))  # the fallback: the whole table
        assert echo("three") == "three"
    finally:
        cli.kill()
        srv.kill()
        cli.wait()
        srv.wait()
        nft.delete_table("fiovpn")


def test_the_generation_token_reads_back_from_the_kernels_table(pair: Pair) -> None:
    """What tells a later process that the table is the one its saved model went to."""
    from fiovpn.core.firewall import GENERATION_SET, render_full, table_model

    nft = Nft(SubprocessRunner(netns=pair.server_ns))
    model = table_model(FirewallPolicy("fiovpn", pair.server_if, SERVER_IP),
                        [pair.live, *_others(300)], now=0)
    nft.apply(render_full(model, 0, "0123456789abcdef"))
    assert nft.table_generation("fiovpn", GENERATION_SET) == "0123456789abcdef"
    assert nft.table_generation("nosuchtable", GENERATION_SET) is None
    nft.apply(render_full(model, 0, "fedcba9876543210"))  # replaced whole
    assert nft.table_generation("fiovpn", GENERATION_SET) == "fedcba9876543210"
    nft.apply(render_full(model, 0))  # without a token: none
    assert nft.table_generation("fiovpn", GENERATION_SET) is None
    nft.delete_table("fiovpn")
    assert nft.table_generation("fiovpn", GENERATION_SET) is None
