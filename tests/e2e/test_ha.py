"""Two servers, one VPN (SPEC 14), end to end: server A and B in their own
namespaces, one key, the VIP moved by real keepalived (inside the server
namespaces only) configured by `fiovpn server ha-template`; devices and engineers
reach the VIP. B was made A's twin by `fiovpn server ha-join`.

The tests run in order on one lab and tell one story: A active; a hard failure of
A (link cut, processes killed) with traffic; A returns and catches up; B's daemon
dies, health fails and keepalived moves the VIP back to A (from idle); failback
to B by hand (nopreempt); A takes the VIP back with preempt.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fiovpn.core.keys import KeyPair
from fiovpn.core.registry import Registry
from fiovpn.errors import PermanentError
from fiovpn.lab import Lab, net
from fiovpn.lab import ha as lab_ha
from fiovpn.lab.roles import Engineer, Server
from fiovpn.services.server.control import ControlClient

pytestmark = pytest.mark.e2e

ECHO_PORT = 7777
VIP_ENDPOINT = f"{lab_ha.VIP}:5555"
PING_INTERVAL = 0.2  # OutageProbe's default


@pytest.fixture(scope="module")
def pair(make_lab: Callable[..., Lab]) -> Lab:
    lab = make_lab(devices=2, engineers=2, admins=2, ha=True, server_settings={"interval": 5})
    lab.start_ha()
    lab.join(lab.engineers[0])
    lab_ha.start_echo(lab.devices[0], ECHO_PORT)
    return lab


def a_b(lab: Lab) -> tuple[Server, Server]:
    assert lab.server2 is not None
    return lab.server, lab.server2


def health(server: Server) -> tuple[int, Any]:
    result = server.fiovpn("server", "--config", str(server.config_path), "health", "--json",
                           check=False)
    import json

    return result.returncode, json.loads(result.stdout)


def registry(server: Server) -> Registry:
    return Registry.parse(server.clients_file.read_text())


def no_ip_twice(reg: Registry) -> None:
    ips = [e.ip for e in reg.entries]
    assert len(ips) == len(set(ips)), f"two clients with one IP: {ips}"


def engineer_on_vip(eng: Engineer) -> None:
    assert lab_ha.engineer_endpoint(eng, eng.interface) == VIP_ENDPOINT


def wait_role(server: Server, role: str, timeout: float = 60.0) -> Any:
    return server.wait_status(lambda s: isinstance(s, dict) and s.get("role") == role,
                              timeout=timeout, what=f"{server.name} to be {role}")


def register(eng: Engineer, *, timeout: float = 60.0) -> Any:
    key = KeyPair.generate().public
    data = eng.fiovpn_json("register", "--public-key", str(key), check=False,
                           timeout=timeout)
    assert "error" not in data, data
    return data


# --- A active, B standby ---------------------------------------------------------------


def test_keepalived_runs_the_products_template_inside_the_server_namespaces(pair: Lab
                                                                          ) -> None:
    a, b = a_b(pair)
    for srv, peer in ((a, b), (b, a)):
        conf = (srv.home / "keepalived" / "keepalived.conf").read_text()
        prio = lab_ha.PRIORITY_A if srv is a else 200
        assert conf == lab_ha.keepalived_config(srv, peer, priority=prio)
        assert "nopreempt" in conf and f"unicast_src_ip {srv.underlay_ip}" in conf
        assert f"server --config {srv.config_path} health" in conf
        assert "ha-notify" in conf
    ours = os.stat("/proc/self/ns/net").st_ino
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and lab_ha._comm(int(proc.name)) == "keepalived":
            try:
                ns = os.stat(proc / "ns" / "net").st_ino
            except OSError:
                continue
            assert ns != ours, f"keepalived pid {proc.name} runs in the root namespace"
    assert {int(p) for p in net.netns_pids(a.ns)} & {a.keepalived.pid if a.keepalived else 0}


def test_status_and_health_on_active_and_standby(pair: Lab) -> None:
    a, b = a_b(pair)
    sa = wait_role(a, "active")
    sb = wait_role(b, "standby")
    assert sa["vip"] == sb["vip"] == lab_ha.VIP
    assert sa["ha_peer"] == f"root@{b.underlay_ip}:5025"
    assert sb["ha_peer"] == f"root@{a.underlay_ip}:5025"
    assert b.wait_status(lambda s: s["peer_sync_age_s"] is not None
                         and s["peer_sync_age_s"] < 10, timeout=20)
    assert sb["expect_handshakes"] is False and sa["expect_handshakes"] is True
    for srv in (a, b):
        code, data = health(srv)
        assert code == 0 and data["healthy"], data
    # the standby holds the peers but no session and no endpoint
    peers = b.peers()
    assert len(peers) == 3
    assert all(p.endpoint is None and not p.latest_handshake for p in peers.values())
    rules = b.run(["nft", "list", "chain", "inet", "fiovpn", "input"]).stdout
    assert f"udp dport 5555 ip daddr != {lab_ha.VIP}" in rules


def test_registry_changes_only_on_the_active_and_on_both_before_confirmed(pair: Lab) -> None:
    a, b = a_b(pair)
    before = b.clients_file.read_bytes()
    refused = b.fiovpn("server", "--config", str(b.config_path), "clients", "add",
                       "--public-key", str(KeyPair.generate().public), check=False)
    assert refused.returncode == 1
    lines = [ln for ln in refused.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"root@{a.underlay_ip}:5025" in lines[0], refused.stderr
    assert "standby" in lines[0]
    assert b.clients_file.read_bytes() == before
    # the daemon enforces it, not the CLI: a caller of B's control socket itself is
    # refused the same way, and nothing changes
    with pytest.raises(PermanentError) as direct:
        ControlClient(b.state_dir).request("clients.add",
                                           {"public_key": str(KeyPair.generate().public)})
    assert direct.value.code == "ha_standby"
    assert f"root@{a.underlay_ip}:5025" in direct.value.message
    assert b.clients_file.read_bytes() == before
    # an op on A's socket answers only once B has the change
    key = str(KeyPair.generate().public)
    answer = ControlClient(a.state_dir).request("clients.add",
                                                {"public_key": key, "name": "direct"})
    on_b = {str(e.public_key): str(e.ip) for e in registry(b).entries}
    assert answer["ha"]["replicated"] is True and on_b.get(key) == answer["entry"]["ip"]
    # an admin on the VPN registers: SSH to 10.42.42.1 reaches the VIP holder (A),
    # and the answer comes only after B has the line too
    eng = pair.engineers[0]
    data = register(eng)
    assert any(e.public_key.__str__() == data["public_key"] for e in registry(b).entries)
    assert registry(a).render() == registry(b).render()
    no_ip_twice(registry(a))


def test_admins_and_the_journal_are_on_both_before_confirmed(pair: Lab) -> None:
    a, b = a_b(pair)
    pair.ssh_keygen(a.home / "dora", comment="dora")
    key_file = a.home / "dora.pub"
    refused = b.fiovpn("server", "admins", "add", "--ssh-public-key", str(key_file),
                       "--name", "dora", check=False)
    assert refused.returncode == 1 and "standby" in refused.stderr
    assert f"root@{a.underlay_ip}:5025" in refused.stderr
    added = a.fiovpn_json("server", "admins", "add", "--ssh-public-key", str(key_file),
                          "--name", "dora")
    assert added["replicated"] is True
    # on B when A answered: the key with B's own forced command, B's other lines kept
    lines = Path(b.settings["authorized-keys"]).read_text().splitlines()
    (dora,) = [ln for ln in lines if ln.endswith("fiovpn-admin:dora")]
    assert f"--config {b.config_path} admin-command --name dora" in dora
    assert (a.home / "ha_id_ed25519.pub").read_text().strip() in lines
    # the journal: B's is A's (the admin_add line and every registry change before)
    journal_a = (a.state_dir / "journal.jsonl").read_text()
    journal_b = (b.state_dir / "journal.jsonl").read_text()
    assert journal_a.startswith(journal_b) and '"action":"admin_add"' in journal_b
    assert '"action":"client_add"' in journal_b
    a.fiovpn_json("server", "admins", "remove", "--name", "dora")
    assert "fiovpn-admin:dora" not in Path(b.settings["authorized-keys"]).read_text()


def test_a_line_journaled_on_the_standby_reaches_the_actives_journal(pair: Lab) -> None:
    import json

    from fiovpn.lab.proc import wait_for

    a, b = a_b(pair)
    # an admin's forced command on B (as B's sshd runs it) refuses a shell
    refused = b.fiovpn("server", "--config", str(b.config_path), "admin-command", "--name",
                       "mallory", env={"SSH_ORIGINAL_COMMAND": "sh -c id"}, check=False)
    assert refused.returncode == 2 and "admins may run only" in refused.stderr

    def refused_in(server: Server) -> list[Any]:
        text = (server.state_dir / "journal.jsonl").read_text()
        return [ln for ln in map(json.loads, text.splitlines())
                if ln["action"] == "refused" and ln["actor"] == "mallory"]

    # the next copies take it to A's journal (saying which server) and back to B's copy
    (on_a,) = wait_for(lambda: refused_in(a) or None, timeout=30,
                       what="B's refused line on A")
    assert on_a["detail"]["command"] == "sh -c id"
    assert on_a["detail"]["server"].startswith("standby ")
    wait_for(lambda: refused_in(b) or None, timeout=30, what="the refused line back on B")
    time.sleep(5)  # a few more copies: taken once, never again
    assert len(refused_in(a)) == 1 and len(refused_in(b)) == 1
    journal_a = (a.state_dir / "journal.jsonl").read_bytes()
    assert journal_a.startswith((b.state_dir / "journal.jsonl").read_bytes())
    shown = b.fiovpn_json("server", "--config", str(b.config_path), "journal",
                          "--action", "refused")
    assert [ln["actor"] for ln in shown].count("mallory") == 1


# --- hard failover ---------------------------------------------------------------------


def test_hard_failover_with_traffic_keeps_the_outage_short_and_tcp_alive(pair: Lab) -> None:
    a, b = a_b(pair)
    eng = pair.engineers[0]
    device = pair.devices[0]
    assert eng.ping(str(device.vpn_ip), timeout=10)
    tcp = lab_ha.TcpSession(eng, str(device.vpn_ip), ECHO_PORT, seconds=16)
    eng_probe = lab_ha.OutageProbe(eng, str(device.vpn_ip))
    dev_probe = lab_ha.OutageProbe(device, Server.vpn_ip)
    time.sleep(2)
    registered: dict[str, Any] = {}

    def during() -> None:
        registered.update(register(eng, timeout=90))

    lab_ha.cut(a)
    worker = threading.Thread(target=during)
    worker.start()  # a register while the VIP moves
    lab_ha.wait_vip(b, timeout=20)
    time.sleep(8)
    eng_out, dev_out = eng_probe.stop(), dev_probe.stop()
    session = tcp.result()
    worker.join(timeout=90)
    assert eng_out.longest_gap_s < 5.0, eng_out
    assert dev_out.longest_gap_s < 5.0, dev_out
    assert session["ok"], session
    engineer_on_vip(eng)
    wait_role(b, "active")
    # the register made during the failover landed on B, the only one alive
    assert registered, "register during the failover did not return"
    assert any(str(e.public_key) == registered["public_key"] for e in registry(b).entries)
    no_ip_twice(registry(b))


def test_a_returning_server_catches_up_and_stays_standby(pair: Lab) -> None:
    a, b = a_b(pair)
    lab_ha.revive(a)
    a.start_daemon()
    wait_role(a, "standby")
    a.wait_status(lambda s: s.get("ha_caught_up") == "done", timeout=60,
                  what="A to catch up from B")
    assert registry(a).render() == registry(b).render()
    no_ip_twice(registry(a))
    lab_ha.start_keepalived(a, b)
    a.wait_status(lambda s: s.get("peer_sync_age_s") is not None
                  and s["peer_sync_age_s"] < 10, timeout=60)
    time.sleep(4)
    assert lab_ha.holds_vip(b) and not lab_ha.holds_vip(a)  # nopreempt


# --- health moves the VIP (from idle) ----------------------------------------------------


def test_health_fails_without_the_daemon_and_keepalived_moves_the_vip(pair: Lab) -> None:
    a, b = a_b(pair)
    eng = pair.engineers[0]
    device = pair.devices[0]
    a.wait_status(lambda s: health(a)[0] == 0, timeout=60, what="A healthy")
    time.sleep(3)  # idle: nothing in flight
    b.kill_daemon()
    code, data = health(b)
    assert code == 1 and "daemon" in str(data["reason"]), data
    moved = lab_ha.wait_vip(a, timeout=30)
    answered = eng.ping(str(device.vpn_ip), timeout=10)
    first = time.monotonic() - moved
    assert answered and first < 5.0, f"first answer {first:.1f}s after the VIP moved"
    engineer_on_vip(eng)
    wait_role(a, "active")


def test_health_fails_without_the_interface(pair: Lab) -> None:
    _a, b = a_b(pair)
    # B's daemon is down since the last test; its interface goes too
    b.run(["ip", "link", "del", b.interface])
    code, data = health(b)
    assert code == 1 and "interface" in str(data["reason"])


# --- failback ------------------------------------------------------------------------


def test_failback_by_hand_with_nopreempt_loses_at_most_a_second(pair: Lab) -> None:
    a, b = a_b(pair)
    eng = pair.engineers[0]
    device = pair.devices[0]
    b.start_daemon()
    wait_role(b, "standby")
    b.wait_status(lambda s: health(b)[0] == 0 and s.get("peer_sync_age_s") is not None
                  and s["peer_sync_age_s"] < 10, timeout=90, what="B healthy and in sync")
    time.sleep(5)  # keepalived on B sees it healthy again (rise)
    probe = lab_ha.OutageProbe(eng, str(device.vpn_ip))
    time.sleep(1)
    lab_ha.stop_keepalived(a)  # the admin moves the VIP: priority-0 advert, B takes over
    lab_ha.wait_vip(b, timeout=20)
    time.sleep(4)
    out = probe.stop()
    assert out.lost * PING_INTERVAL <= 1.0, out  # at most 1 s of loss
    engineer_on_vip(eng)
    lab_ha.start_keepalived(a, b)


def test_failback_with_preempt_loses_at_most_a_second(pair: Lab) -> None:
    a, b = a_b(pair)
    eng = pair.engineers[0]
    device = pair.devices[0]
    wait_role(b, "active")
    a.wait_status(lambda s: s.get("role") == "standby" and health(a)[0] == 0, timeout=60,
                  what="A standby and healthy")
    probe = lab_ha.OutageProbe(eng, str(device.vpn_ip))
    time.sleep(1)
    lab_ha.start_keepalived(a, b, preempt=True, priority=250)
    lab_ha.wait_vip(a, timeout=30)
    time.sleep(4)
    out = probe.stop()
    assert out.lost * PING_INTERVAL <= 1.0, out
    engineer_on_vip(eng)
    for d in pair.devices:
        assert d.wg_dump(d.interface) and all(
            p.endpoint == VIP_ENDPOINT for p in d.wg_dump(d.interface).values())
    no_ip_twice(registry(a))
    assert registry(a).render() == registry(b).render()
