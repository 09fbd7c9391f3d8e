"""The server daemon end to end, in a namespace lab: the sandbox factory, the
server running `fiovpn server daemon`, devices with stock Foundries config
(only the server /32 through the tunnel) and engineers.

Tests run in order and share one lab (built once for the module).
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from fiovpn.core.keys import KeyPair
from fiovpn.lab import DeviceSpec, Lab, wait_for
from fiovpn.lab.roles import Device, Engineer

pytestmark = pytest.mark.e2e

INTERVAL = 2  # seconds between factory polls in this lab
LISTEN = ("import socket,sys,time;s=socket.socket();"
          "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
          "s.bind((sys.argv[1],int(sys.argv[2])));s.listen(8)\n"
          "while True:\n c,_=s.accept();c.sendall(b'hi');c.close()")


@pytest.fixture(scope="module")
def lab(make_lab: Callable[..., Lab]) -> Lab:
    lab = make_lab(devices=[DeviceSpec("device1"), DeviceSpec("device2"),
                            DeviceSpec("device3", vpn=False)],
                   engineers=1, server_settings={"interval": INTERVAL})
    lab.server.enable()
    lab.server.start_daemon()
    lab.server.wait_synced(timeout=30)
    lab.apply_factory_config()
    lab.server.wait_peers(["10.42.42.2", "10.42.42.3"], timeout=30)
    return lab


@pytest.fixture(scope="module")
def engineer(lab: Lab) -> Engineer:
    eng = lab.engineers[0]
    eng.vpn_ip = lab.join(eng, name="eng1")  # type: ignore[attr-defined]
    return eng


def dev(lab: Lab, name: str) -> Device:
    return lab.device(name)


def status(lab: Lab) -> dict[str, Any]:
    data = lab.server.status()
    assert isinstance(data, dict)
    return data


def wait_status(lab: Lab, pred: Callable[[dict[str, Any]], bool], what: str,
                timeout: float = 30) -> dict[str, Any]:
    result: dict[str, Any] = lab.server.wait_status(pred, timeout=timeout, what=what)
    return result


def set_device_vpn(lab: Lab, device: Device, address: str | None, *, enabled: bool) -> None:
    """What `fiovpn devices enable-vpn/disable-vpn` writes: the device's wireguard-client."""
    assert lab.factory is not None
    value = f"address={address or ''}\npubkey={device.keys.public}"
    if not enabled:
        value += "\nenabled=0"
    lab.factory.api("PATCH", f"/ota/devices/{device.device_name}/config/"
                             f"?factory={lab.factory.factory}",
                    {"reason": "test", "files": [{
                        "name": "wireguard-client", "value": value, "unencrypted": True,
                        "on-changed": ["/usr/share/fioconfig/handlers/factory-config-vpn"]}]})


def widen(lab: Lab, device: Device, on: bool) -> None:
    """The device's AllowedIPs for the server (and its route): the VPN subnet when
    ``on`` (what `fiovpn devices enable-d2d` sets up), else the stock server /32."""
    iface, key = device.interface, str(lab.server.public_key)
    if on:
        device.run(["wg", "set", iface, "peer", key, "allowed-ips", "10.42.42.0/24"])
        device.run(["ip", "route", "replace", "10.42.42.0/24", "dev", iface, "src",
                    str(device.vpn_ip)])
    else:
        device.run(["ip", "route", "del", "10.42.42.0/24", "dev", iface], check=False)
        device.run(["wg", "set", iface, "peer", key, "allowed-ips", "10.42.42.1/32"])


def restart_daemon(lab: Lab, *args: str) -> None:
    assert lab.server.stop_daemon() == 0  # SIGTERM: a clean exit
    lab.server.start_daemon(*args)
    wait_status(lab, lambda s: bool(s.get("daemon_running")) and not s.get("last_error"),
                "the restarted daemon to sync")


@contextlib.contextmanager
def nft_samples(lab: Lab, table: str, every: float) -> Iterator[list[str]]:
    """``nft list table`` of the server every ``every`` seconds while the block runs
    (from inside the server's namespace): the texts, or ``failed: ...``."""
    tables: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            out = lab.server.run(["nft", "list", "table", "inet", table], check=False)
            tables.append(out.stdout if out.ok else f"failed: {out.stderr}")
            time.sleep(every)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield tables
    finally:
        stop.set()
        watcher.join(timeout=10)


def test_engineer_reaches_server_and_devices(lab: Lab, engineer: Engineer) -> None:
    assert engineer.ping("10.42.42.1")
    assert engineer.tcp_connect("10.42.42.1", 5025)  # the server's sshd for admins
    # client -> device with the device's stock config: the server SNATs to its /32
    assert engineer.ping("10.42.42.2")
    assert engineer.tcp_connect("10.42.42.3", 22)
    data = status(lab)
    kinds = {p["ip"]: (p["kind"], p["name"]) for p in data["peers"]}
    assert kinds["10.42.42.2"] == ("device", "device1")
    assert kinds[engineer.vpn_ip] == ("client", "eng1")  # type: ignore[attr-defined]
    eng_peer = next(p for p in data["peers"] if p["name"] == "eng1")
    assert eng_peer["latest_handshake"] and eng_peer["rx"] > 0
    hosts = lab.server.hosts_file.read_text()
    assert "10.42.42.2\tdevice1\n10.42.42.3\tdevice2\n" in hosts
    assert hosts.startswith("127.0.0.1\tlocalhost\n")


def test_device_cannot_open_connections_to_engineers(lab: Lab, engineer: Engineer) -> None:
    ip = engineer.vpn_ip  # type: ignore[attr-defined]
    engineer.spawn([sys.executable, "-c", LISTEN, ip, "7000"], name="listener")
    wait_for(lambda: engineer.listening(7000), timeout=10, what="the engineer's listener")
    assert engineer.tcp_connect(ip, 7000)  # it listens
    device = dev(lab, "device1")
    widen(lab, device, True)  # so only the server's policy stands in the way
    try:
        assert not device.tcp_connect(ip, 7000)
        assert not device.ping_once(ip, wait=2)
        assert not device.tcp_connect("10.42.42.1", 5025)  # nor the server's sshd
        assert device.ping("10.42.42.1")  # but it may ping the server
    finally:
        widen(lab, device, False)


def test_device_to_device_default_deny_then_allowed(lab: Lab, engineer: Engineer) -> None:
    a, b = dev(lab, "device1"), dev(lab, "device2")
    widen(lab, a, True)
    widen(lab, b, True)
    try:
        assert not a.ping_once("10.42.42.3", wait=2)  # denied by default
        restart_daemon(lab, "--allow-device-to-device")
        assert a.ping("10.42.42.3")
        assert a.tcp_connect("10.42.42.3", 22)
        widen(lab, b, False)  # both sides need the widened AllowedIPs
        assert not a.ping_once("10.42.42.3", wait=2)
    finally:
        widen(lab, a, False)
        widen(lab, b, False)
        restart_daemon(lab)
    assert engineer.ping("10.42.42.2")  # the restarts left every tunnel up


def test_device_to_device_flag_only_on_the_daemon_survives_client_changes(
        lab: Lab, engineer: Engineer) -> None:
    """Issue 9 item 1: `clients add/remove` used to re-render the firewall from
    server.toml alone, dropping the rule the daemon had from --allow-device-to-device
    (~1 s per add; for good after parallel adds). Now the daemon applies them."""
    a, b = dev(lab, "device1"), dev(lab, "device2")
    table = lab.server.settings.get("nft-table", "fiovpn")
    assert "allow-device-to-device" not in lab.server.config_path.read_text()
    widen(lab, a, True)
    widen(lab, b, True)
    restart_daemon(lab, "--allow-device-to-device")
    keys = [str(KeyPair.generate().public) for _ in range(5)]
    try:
        assert a.ping("10.42.42.3")
        # every 0.2 s: the old bug left the rule out ~1 s per add
        with a.ping_stream("10.42.42.3", interval=0.05) as stream, \
                nft_samples(lab, table, 0.2) as tables:
            time.sleep(0.5)
            # add and remove over SSH, as an admin's machine does it
            via_ssh = str(KeyPair.generate().public)
            engineer.fiovpn("register", "--public-key", via_ssh, "--name", "d2d-ssh", "--json")
            engineer.fiovpn("unregister", "--public-key", via_ssh, "--json")
            with ThreadPoolExecutor(max_workers=5) as pool:
                added = list(pool.map(lambda k: lab.server.fiovpn_json(
                    "server", "clients", "add", "--public-key", k, timeout=60), keys))
            assert len({r["ip"] for r in added}) == 5
            time.sleep(1.5)  # the old second writer left the rule out for ~1 s
        stats = stream.stop()
        assert stats.sent > 40 and stats.lost == 0, stats
        assert len(tables) > 5
        assert all("device-to-device allowed" in t for t in tables), \
            next(t for t in tables if "device-to-device allowed" not in t)
        on_interface = lab.server.peers()
        assert all(k in on_interface for k in keys)
        # issue 9 item 6: the daemon logs each change with who asked
        log = lab.server.daemon_log()
        line = next(ln for ln in log.splitlines() if "peer added: client 'd2d-ssh'" in ln)
        assert "`server clients add` asked by uid 0 (root)" in line
        assert f"ssh from {engineer.vpn_ip}" in line  # type: ignore[attr-defined]
        assert any("peer removed: client 'd2d-ssh'" in ln and "`server clients remove`" in ln
                   for ln in log.splitlines())
    finally:
        for k in keys:
            lab.server.fiovpn("server", "clients", "remove", "--public-key", k, check=False)
        widen(lab, a, False)
        widen(lab, b, False)
        restart_daemon(lab)


def test_a_daemon_with_its_state_dir_only_on_its_command_line_is_the_only_writer(
        lab: Lab, engineer: Engineer) -> None:
    """The CLI found the daemon through `state-dir` in server.toml only: with
    `--state-dir` on the daemon's command line it wrote the interface and the nft
    table itself next to the running daemon, without the daemon's flags. Now the
    daemon announces itself in run-dir and the CLI (another process) asks it."""
    a, b = dev(lab, "device1"), dev(lab, "device2")
    table = lab.server.settings.get("nft-table", "fiovpn")
    other = lab.server.home / "state-from-the-command-line"
    toml_state = lab.server.state_dir
    widen(lab, a, True)
    widen(lab, b, True)
    restart_daemon(lab, "--state-dir", str(other), "--allow-device-to-device")
    key = str(KeyPair.generate().public)
    try:
        assert (other / "control.sock").exists() and a.ping("10.42.42.3")
        before = {p.name: p.stat().st_mtime_ns for p in toml_state.iterdir()}
        with nft_samples(lab, table, 0.1) as tables:
            added = lab.server.fiovpn("server", "clients", "add", "--public-key", key,
                                      "--name", "found")
            time.sleep(1.0)
        assert "Applied by the daemon (pid" in added.stdout, added.stdout
        assert "uses state directory" in added.stderr and str(other) in added.stderr
        assert key in lab.server.peers()
        assert len(tables) > 5 and all("device-to-device allowed" in t for t in tables)
        assert status(lab)["daemon_running"] is True  # status reads the daemon's state
        # the CLI wrote nothing in server.toml's state dir (no lock, no apply of its own)
        assert {p.name: p.stat().st_mtime_ns for p in toml_state.iterdir()} == before
        log = lab.server.daemon_log()
        assert any("peer added: client 'found'" in ln for ln in log.splitlines())
        # a second daemon on the same interface (server.toml's state dir) is refused
        second = lab.server.fiovpn("server", "daemon", "--config",
                                   str(lab.server.config_path), "--once", check=False)
        assert second.returncode == 1 and "already runs with the same" in second.stderr
        assert key in lab.server.peers() and a.ping("10.42.42.3")
    finally:
        lab.server.fiovpn("server", "clients", "remove", "--public-key", key, check=False)
        widen(lab, a, False)
        widen(lab, b, False)
        restart_daemon(lab)


def test_enabling_a_device_in_the_factory_makes_it_reachable(lab: Lab,
                                                             engineer: Engineer) -> None:
    c = dev(lab, "device3")
    set_device_vpn(lab, c, "10.42.42.4", enabled=True)
    lab.server.wait_peers(["10.42.42.2", "10.42.42.3", "10.42.42.4",
                           engineer.vpn_ip], timeout=INTERVAL * 5)  # type: ignore[attr-defined]
    assert c.apply_factory_config()
    assert engineer.ping("10.42.42.4")
    set_device_vpn(lab, c, "10.42.42.4", enabled=False)
    lab.server.wait_peers(["10.42.42.2", "10.42.42.3", engineer.vpn_ip],  # type: ignore[attr-defined]
                          timeout=INTERVAL * 5)
    assert not engineer.ping_once("10.42.42.4", wait=2)
    assert "device3" not in lab.server.hosts_file.read_text()


def test_live_session_survives_reconciles_of_other_peers(lab: Lab,
                                                         engineer: Engineer) -> None:
    eng_key = engineer.wg_public_key()
    assert eng_key is not None
    before = lab.server.peers()[eng_key]
    stream = engineer.ping_stream("10.42.42.2", interval=0.05)
    with stream:
        time.sleep(0.5)
        other = str(KeyPair.generate().public)
        lab.server.fiovpn_json("server", "clients", "add", "--public-key", other,
                               "--name", "temp")
        c = dev(lab, "device3")
        set_device_vpn(lab, c, "10.42.42.4", enabled=True)
        wait_for(lambda: "10.42.42.4/32" in {a for p in lab.server.peers().values()
                                             for a in p.allowed_ips},
                 timeout=INTERVAL * 5, what="device3 on the server")
        lab.server.fiovpn_json("server", "clients", "remove", "--name", "temp")
        set_device_vpn(lab, c, "10.42.42.4", enabled=False)
        wait_for(lambda: "10.42.42.4/32" not in {a for p in lab.server.peers().values()
                                                 for a in p.allowed_ips},
                 timeout=INTERVAL * 5, what="device3 removed")
        time.sleep(0.5)
    stats = stream.stop()
    assert stats.sent > 20 and stats.lost == 0, stats
    after = lab.server.peers()[eng_key]
    assert after.endpoint == before.endpoint
    assert after.rx >= before.rx and after.tx >= before.tx  # the session was never reset
    assert after.latest_handshake >= before.latest_handshake > 0
    log = lab.server.daemon_log()
    assert "peer added: device 'device3' 10.42.42.4/32" in log
    assert "peer removed: device 'device3'" in log


def test_api_failures_and_slowness_remove_nothing(lab: Lab, engineer: Engineer) -> None:
    assert lab.factory is not None
    peers = {k: p.allowed_ips for k, p in lab.server.peers().items()}
    lab.factory.fail(500, count=-1)
    try:
        data = wait_status(lab, lambda s: bool(s.get("last_error")) and not s.get("api_ok"),
                           "the daemon to notice the API failing")
        assert "500" in data["last_error"] or "unavailable" in data["last_error"]
        time.sleep(INTERVAL * 4)  # several intervals (and backoff retries) of failures
        assert {k: p.allowed_ips for k, p in lab.server.peers().items()} == peers
        assert engineer.ping("10.42.42.2")
    finally:
        lab.factory.clear()
    lab.factory.slow(20, count=-1)  # beyond the client's timeout
    try:
        time.sleep(INTERVAL * 4)
        assert {k: p.allowed_ips for k, p in lab.server.peers().items()} == peers
        assert engineer.ping("10.42.42.3")
    finally:
        lab.factory.clear()
    wait_status(lab, lambda s: bool(s.get("api_ok")) and not s.get("last_error"),
                "the daemon to recover", timeout=120)


def test_a_refused_token_is_loud_and_removes_nothing(lab: Lab, engineer: Engineer) -> None:
    """SPEC 10: the API starts refusing the daemon's token (401): every peer stays,
    status says auth_failed and how old the device list is, each pass logs it at
    error level, the table says both, and `--once` exits 1."""
    assert lab.factory is not None
    peers = {k: p.allowed_ips for k, p in lab.server.peers().items()}
    log_start = len(lab.server.daemon_log())
    lab.factory.fail(401, count=-1)
    try:
        data = wait_status(lab, lambda s: s.get("last_error_code") == "auth_failed",
                           "the daemon to report the refused token")
        assert data["api_ok"] is False and "401" in data["last_error"]
        first_age = data["device_list_age_s"]
        assert isinstance(first_age, int) and first_age >= 0
        time.sleep(INTERVAL * 3)
        later = status(lab)
        assert later["last_error_code"] == "auth_failed"
        assert later["device_list_age_s"] >= first_age + INTERVAL * 2
        assert {k: p.allowed_ips for k, p in lab.server.peers().items()} == peers
        assert engineer.ping("10.42.42.2")
        logged = [line for line in lab.server.daemon_log()[log_start:].splitlines()
                  if "[auth_failed]" in line]
        assert len(logged) >= 2 and all(" ERROR " in line for line in logged), logged
        table = lab.server.fiovpn("server", "status").stdout
        assert "auth_failed" in table and "device list" in table
        assert lab.server.stop_daemon() == 0
        once = lab.server.fiovpn("server", "daemon", "--once", "--json", check=False)
        assert once.returncode == 1
        assert json.loads(once.stdout)["last_error_code"] == "auth_failed"
        assert {k: p.allowed_ips for k, p in lab.server.peers().items()} == peers
    finally:
        lab.factory.clear()
        if lab.server.daemon is None or not lab.server.daemon.running():
            lab.server.start_daemon()
    data = wait_status(lab, lambda s: bool(s.get("api_ok")) and not s.get("last_error_code")
                       and bool(s.get("daemon_running")), "the daemon to recover")
    assert data["device_list_age_s"] <= INTERVAL * 2 + 1


def test_corrupt_registry_line_is_reported_others_work(lab: Lab, engineer: Engineer) -> None:
    path = lab.server.clients_file
    original = path.read_text()
    lines = original.splitlines()
    lines.insert(1, "this line is not a client")
    path.write_text("\n".join(lines) + "\n")
    try:
        data = wait_status(lab, lambda s: bool(s["registry_problems"]),
                           "the registry problem to be reported", timeout=10)
        (problem,) = data["registry_problems"]
        assert problem["line"] == 2 and "field" in problem["message"]
        assert engineer.ping("10.42.42.1")
        assert engineer.wg_public_key() in lab.server.peers()
        assert "line 2" in lab.server.daemon_log()
    finally:
        path.write_text(original)
    wait_status(lab, lambda s: not s["registry_problems"], "the problem to clear", timeout=10)


def test_kill9_and_restart_with_api_down_keeps_every_peer(lab: Lab,
                                                          engineer: Engineer) -> None:
    assert lab.factory is not None
    peers = {k: p.allowed_ips for k, p in lab.server.peers().items()}
    lab.server.kill_daemon()
    lab.factory.fail(503, count=-1)
    try:
        lab.server.start_daemon()
        data = wait_status(lab, lambda s: bool(s.get("daemon_running"))
                           and bool(s.get("last_error")), "the restarted daemon's first pass")
        assert data["api_ok"] is False
        time.sleep(INTERVAL * 2)
        assert {k: p.allowed_ips for k, p in lab.server.peers().items()} == peers
        assert engineer.ping("10.42.42.2")
        assert {p["name"] for p in data["peers"]} >= {"device1", "device2", "eng1"}
    finally:
        lab.factory.clear()
    lab.server.wait_synced(timeout=60)
    # SIGTERM restarts and the kill -9 never took the interface down
    assert lab.server.daemon_log().count("created WireGuard interface") == 1


def test_sigterm_stops_the_daemon_and_leaves_every_tunnel_up(lab: Lab,
                                                           engineer: Engineer) -> None:
    assert lab.server.stop_daemon() == 0  # SIGTERM: a clean exit
    try:
        # no daemon now: the interface, its peers and the firewall carry on
        assert engineer.ping("10.42.42.1") and engineer.ping("10.42.42.2")
        shown = lab.server.fiovpn("server", "status").stdout
        assert "not running" in shown and "Next: start the daemon" in shown
        assert "device1" in shown and "eng1" in shown and " up " in shown
    finally:
        lab.server.start_daemon()
        wait_status(lab, lambda s: bool(s.get("daemon_running")) and not s.get("last_error"),
                    "the restarted daemon to sync")


def test_fifty_concurrent_clients_add(lab: Lab, engineer: Engineer) -> None:
    keys = [str(KeyPair.generate().public) for _ in range(50)]

    def add(key: str) -> dict[str, Any]:
        out = lab.server.fiovpn("server", "clients", "add", "--public-key", key, "--json",
                                timeout=120)
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(add, keys))
    ips = [r["ip"] for r in results]
    assert len(set(ips)) == 50
    listed = lab.server.fiovpn_json("server", "clients", "list")
    assert sorted(c["public_key"] for c in listed if c["public_key"] in keys) == sorted(keys)
    data = wait_status(lab, lambda s: not s["registry_problems"] and len(
        [p for p in s["peers"] if p["kind"] == "client"]) == 51, "51 clients on the server")
    assert not data["conflicts"]
    on_interface = lab.server.peers()
    assert all(k in on_interface for k in keys)
    assert engineer.ping("10.42.42.1")
    # a refused add (the pool is nearly full: 55 addresses) leaves the file untouched
    before = lab.server.clients_file.read_bytes()
    bad = lab.server.fiovpn("server", "clients", "add", "--public-key", keys[0], check=False)
    assert bad.returncode == 2 and lab.server.clients_file.read_bytes() == before
