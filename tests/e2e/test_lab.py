"""The lab's own mechanics, with plain wireguard-go/wg on the server side (no daemon):
tunnels device -> server, the devices' stand-in nmcli, SSH with checked host
keys, probes, teardown that leaves nothing, kept labs removed by `fiovpn lab down`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from fiovpn.core.factory_files import ServerConfigFile
from fiovpn.lab import Device, Lab, leftovers, sandbox_available, wait_for
from fiovpn.lab.roles import CONNECTION_ID, KEYFILE_DIR

pytestmark = pytest.mark.e2e

SERVER_IP = "10.42.42.1"
KEYFILE = f"/{KEYFILE_DIR}/{CONNECTION_ID}.nmconnection"


@pytest.fixture(scope="module")
def hand_lab(make_lab: Callable[..., Lab]) -> Lab:
    """2 devices, 1 engineer, no factory; the server's WireGuard set up by hand
    (each device a peer with its /32), each device's VPN as the factory handler would."""
    lab = make_lab(devices=2, engineers=1, factory=False)
    server = lab.server
    iface = server.interface
    server.spawn(["wireguard-go", "-f", iface], name="wireguard-go",
                 log=server.home / "wg.log")
    wait_for(Path(f"/run/wireguard/{iface}.sock").exists, timeout=10, what="server wg socket")
    server.run(["wg", "set", iface, "listen-port", "5555", "private-key", "/dev/stdin"],
               input=f"{server.keys.private}\n")
    for device in lab.devices:
        server.run(["wg", "set", iface, "peer", str(device.keys.public),
                    "allowed-ips", f"{device.vpn_ip}/32"])
    server.run(["ip", "addr", "add", f"{SERVER_IP}/24", "dev", iface])
    server.run(["ip", "link", "set", iface, "up"])
    config = ServerConfigFile(server.endpoint, IPv4Address(SERVER_IP), server.public_key)
    for device in lab.devices:
        assert device.vpn_ip is not None
        device.configure_vpn(config, device.vpn_ip)
    return lab


def test_devices_get_fioctl_addresses_and_handler_keyfiles(hand_lab: Lab) -> None:
    d1, d2 = hand_lab.devices
    assert (str(d1.vpn_ip), str(d2.vpn_ip)) == ("10.42.42.2", "10.42.42.3")
    text = d1.read_keyfile()
    assert text is not None
    assert f"[wireguard-peer.{hand_lab.server.public_key}]" in text
    assert "allowed-ips=10.42.42.1\n" in text
    assert "address1=10.42.42.2\n" in text
    assert "endpoint=198.18.0.1:5555\n" in text
    # each device has its own /etc/NetworkManager (own mount namespace)
    seen_by_d2 = d2.run(["cat", KEYFILE]).stdout
    assert "address1=10.42.42.3\n" in seen_by_d2
    assert d1.run(["cat", KEYFILE]).stdout == text


def test_device_reaches_server_through_the_tunnel_only(hand_lab: Lab) -> None:
    d1, d2 = hand_lab.devices
    assert d1.ping(SERVER_IP, timeout=10)
    assert d2.ping(SERVER_IP, timeout=10)
    peers = hand_lab.server.peers()
    assert peers[str(d1.keys.public)].latest_handshake > 0
    assert peers[str(d1.keys.public)].allowed_ips == ("10.42.42.2/32",)
    # the device's only peer route through the tunnel is the server /32 ...
    assert d1.server_allowed_ips() == ("10.42.42.1/32",)
    # ... but NetworkManager reads `address1=10.42.42.2` as a /24, so the kernel
    # routes the subnet into the tunnel and only WireGuard's allowed-ips stop it
    addr = d1.run(["ip", "-4", "-o", "addr", "show", "dev", d1.interface]).stdout
    assert "10.42.42.2/24" in addr
    assert not d1.ping_once(str(d2.vpn_ip))


def _counters(device: Device) -> tuple[int, int]:
    peer = next(iter(device.wg_dump(device.interface).values()))
    return peer.rx, peer.tx


def test_stand_in_nmcli_behaves_like_networkmanager(hand_lab: Lab) -> None:
    d2 = hand_lab.devices[1]
    eng = hand_lab.engineers[0]
    assert d2.ping(SERVER_IP, timeout=10)
    # an edit on disk counts only once NetworkManager re-reads the file; re-reading
    # the profile of an active connection changes nothing live
    widen = f"sed -i 's|^allowed-ips=.*|allowed-ips=10.42.42.0/24;|' {KEYFILE}"
    eng.ssh(d2.underlay_ip, f"{widen} && nmcli connection reload")
    assert d2.server_allowed_ips() == ("10.42.42.1/32",)
    # `device reapply` applies it in place: the same peer, its session kept
    before = _counters(d2)
    out = eng.ssh(d2.underlay_ip, f"nmcli device reapply {CONNECTION_ID}")
    assert "reapplied" in out.stdout
    assert d2.server_allowed_ips() == ("10.42.42.0/24",)
    assert d2.ping(SERVER_IP, timeout=5)
    assert _counters(d2) >= before  # counters continue: the peer was not re-created
    # `connection up` on the active connection re-creates the peers
    assert d2.ping(SERVER_IP, timeout=5)
    grown = _counters(d2)
    out = eng.ssh(d2.underlay_ip, f"nmcli connection up {CONNECTION_ID}")
    assert "successfully activated" in out.stdout
    after = _counters(d2)
    assert after[0] < grown[0] and after[1] < grown[1], (grown, after)
    # a comma list is one entry NetworkManager cannot parse: dropped, exit code 0
    commas = f"sed -i 's|^allowed-ips=.*|allowed-ips=10.42.42.0/24,10.42.42.9;bogus;|' {KEYFILE}"
    eng.ssh(d2.underlay_ip, f"{commas} && nmcli connection reload && "
                            f"nmcli device reapply {CONNECTION_ID}")
    assert d2.server_allowed_ips() == ()
    assert not d2.ping_once(SERVER_IP)
    # the handler rewrites it from scratch
    assert d2.run_handler().exit_code == 0
    assert d2.server_allowed_ips() == ("10.42.42.1/32",)
    assert d2.ping(SERVER_IP, timeout=10)


def test_dispatcher_scripts_run_with_networkmanagers_arguments(hand_lab: Lab) -> None:
    d1 = hand_lab.devices[0]
    log = d1.home / "dispatcher.log"
    hook = d1.dispatcher_dir / "50-lab-log"
    hook.write_text(f'#!/bin/sh\necho "$1 $2 $CONNECTION_ID" >> {log}\n')
    hook.chmod(0o755)
    unsafe = d1.dispatcher_dir / "60-group-writable"
    unsafe.write_text(f"#!/bin/sh\necho unsafe >> {log}\n")
    unsafe.chmod(0o775)  # NetworkManager refuses group/world-writable scripts
    try:
        d1.nmcli("connection", "up", CONNECTION_ID)
        assert log.read_text().splitlines() == [f"{CONNECTION_ID} down {CONNECTION_ID}",
                                                f"{CONNECTION_ID} up {CONNECTION_ID}"]
    finally:
        hook.unlink()
        unsafe.unlink()


def test_nmcli_removed_keyfile_takes_the_tunnel_down(make_lab: Callable[..., Lab],
                                                     hand_lab: Lab) -> None:
    d1 = hand_lab.devices[0]
    d1.remove_vpn()  # both config files go: the handler deletes the connection
    assert d1.read_keyfile() is None
    assert d1.wg_dump(d1.interface) == {}
    assert not d1.ping_once(SERVER_IP)
    config = ServerConfigFile(hand_lab.server.endpoint, IPv4Address(SERVER_IP),
                              hand_lab.server.public_key)
    assert d1.vpn_ip is not None
    d1.configure_vpn(config, d1.vpn_ip)
    assert d1.ping(SERVER_IP, timeout=10)


def test_engineer_ssh_to_device_with_key_auth_and_checked_host_key(hand_lab: Lab) -> None:
    d1, d2 = hand_lab.devices
    eng = hand_lab.engineers[0]
    out = eng.ssh(d1.underlay_ip, "hostname; cat", KEYFILE)
    # the session runs in the device's own namespaces
    assert out.stdout.splitlines()[0] == d1.device_name
    assert "address1=10.42.42.2" in out.stdout
    # a known_hosts entry with another device's key under d1's address: refused
    wrong = eng.home / "wrong_known_hosts"
    d2_key = (d2.home / "sshd" / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    wrong.write_text(f"{d1.underlay_ip} {' '.join(d2_key)}\n")
    argv = [a if not a.startswith("UserKnownHostsFile=") else f"UserKnownHostsFile={wrong}"
            for a in eng.ssh_argv(d1.underlay_ip, "true")]
    bad = eng.run(argv, check=False)
    assert bad.returncode == 255
    assert "host key" in bad.stderr.lower()
    # an unknown key is not let in
    stranger = eng.home / "stranger"
    hand_lab.ssh_keygen(stranger, comment="stranger")
    argv = [a if a != str(eng.identity_file) else str(stranger)
            for a in eng.ssh_argv(d1.underlay_ip, "true")]
    denied = eng.run(argv, check=False)
    assert denied.returncode == 255
    assert "permission denied" in denied.stderr.lower()


def test_probes_run_inside_namespaces(hand_lab: Lab) -> None:
    d1 = hand_lab.devices[0]
    eng = hand_lab.engineers[0]
    assert not eng.ping_once(SERVER_IP)  # the engineer has no tunnel
    assert eng.tcp_connect(d1.underlay_ip, 22)
    assert not eng.tcp_connect(d1.underlay_ip, 23, timeout=1)
    with d1.ping_stream(SERVER_IP, interval=0.1) as stream:
        wait_for(lambda: stream.child.log_tail().count("bytes from") >= 5, timeout=10,
                 what="5 ping replies")
    stats = stream.stop()
    assert stats.sent >= 5
    assert stats.lost == 0


def test_teardown_leaves_nothing(tmp_path: Path) -> None:
    records = tmp_path / "records"
    lab = Lab.build(devices=1, engineers=1, factory=False, record_dir=records)
    prefix, lab_dir = lab.prefix, lab.dir
    try:
        assert (records / f"{prefix}.json").exists()
        # a daemonized wireguard-go (what wg-quick leaves) is not a child of ours
        eng = lab.engineers[0]
        eng.run(["wireguard-go", eng.interface], env={"LOG_LEVEL": "silent"})
        assert Path(f"/run/wireguard/{eng.interface}.sock").exists()
        assert leftovers(prefix)
    finally:
        lab.close()
    assert leftovers(prefix) == []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           check=True).stdout
    assert prefix not in netns
    assert not lab_dir.exists()
    assert not (records / f"{prefix}.json").exists()


def fiovpn(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "fiovpn"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, check=False,
                          timeout=120, env={**os.environ, "FIOVPN_LAB_DIR": ""})


def test_kept_lab_is_entered_by_lab_exec_and_removed_by_lab_down(tmp_path: Path) -> None:
    records = tmp_path / "records"
    with Lab.create(devices=["gw-a"], engineers=1, factory=False, keep=True,
                    record_dir=records) as lab:
        prefix, lab_dir = lab.prefix, lab.dir
        children = [c.popen for c in lab.children]
    try:
        # still there after the with block
        assert lab_dir.exists()
        status = fiovpn("lab", "status", "--lab-dir", str(records), "--json")
        assert status.returncode == 0, status.stderr
        (entry,) = json.loads(status.stdout)
        assert entry["prefix"] == prefix and entry["running"]
        assert entry["roles"]["device1"]["device_name"] == "gw-a"
        # by device name, inside the device's own mount namespace
        out = fiovpn("lab", "exec", "--lab-dir", str(records), "gw-a", "--",
                     "ip", "-o", "addr", "show")
        assert out.returncode == 0, out.stderr
        assert "198.18.0.10/24" in out.stdout
        env = fiovpn("lab", "exec", "--lab-dir", str(records), "engineer1", "--", "env")
        assert "FIOVPN_DEVICE_USER=root" in env.stdout
        assert f"HOME={lab_dir}/engineer1" in env.stdout
        failing = fiovpn("lab", "exec", "--lab-dir", str(records), "server", "--", "false")
        assert failing.returncode == 1
        unknown = fiovpn("lab", "exec", "--lab-dir", str(records), "nobody", "--", "true")
        assert unknown.returncode == 2 and "no role" in unknown.stderr
        # fiovpn's SSH control-socket dir of each namespace (/tmp/fiovpn-0/ns-<inode>)
        made = fiovpn("lab", "exec", "--lab-dir", str(records), "engineer1", "--",
                      sys.executable, "-c",
                      "from fiovpn.adapters.ssh import runtime_dir; print(runtime_dir())")
        assert made.returncode == 0, made.stderr
        runtime = Path(made.stdout.strip())
        assert runtime.is_dir() and runtime.name.startswith("ns-")
        down = fiovpn("lab", "down", "--lab-dir", str(records))
        assert down.returncode == 0, down.stderr
        assert not runtime.exists(), "lab down removes the namespace's runtime dir"
        for popen in children:
            popen.wait(timeout=10)
        assert leftovers(prefix) == []
        assert not lab_dir.exists()
        assert fiovpn("lab", "status", "--lab-dir", str(records), "--json").stdout.strip() \
            == "[]"
    finally:
        lab.close()  # a no-op when `lab down` removed everything


@pytest.mark.skipif(not sandbox_available(), reason="the sandbox factory is not built yet")
def test_factory_sandbox_controls_and_device_config(lab: Lab) -> None:
    factory = lab.factory
    assert factory is not None
    before = factory.request_count()
    ips = {row["name"]: row["ip"] for row in factory.wireguard_ips()}
    assert ips == {"device1": "10.42.42.2", "device2": "10.42.42.3"}
    assert factory.request_count() > before
    # the token from the seeded state (never on the sandbox's command line) is enforced
    wrong = factory.http("GET", f"{factory.api_url}/ota/factories/{lab.factory_name}/config/",
                         token="not-the-token")
    assert wrong.status in (401, 403)
    factory.fail(503, count=1)
    failed = factory.api("GET", f"/ota/factories/{lab.factory_name}/wireguard-ips/",
                         check=False)
    assert failed.status == 503
    assert factory.api("GET", f"/ota/factories/{lab.factory_name}/wireguard-ips/").ok
    for device in ("device1", "device2"):
        factory.set_device(device, last_seen="2020-01-01T00:00:00+00:00")
    seen_before = {d["name"]: d["last-seen"] for d in factory.devices()}
    # the server publishes wireguard-server; devices apply it as fioconfig would
    lab.server.enable()
    assert lab.apply_factory_config() == {"device1": True, "device2": True}
    text = lab.devices[0].read_keyfile()
    assert text is not None
    assert f"[wireguard-peer.{lab.server.public_key}]" in text
    assert "endpoint=198.18.0.1:5555" in text
    # devices checked in when they fetched their config: last-seen moved
    listed = {d["name"]: d for d in factory.devices()}
    assert listed["device1"]["last-seen"] > seen_before["device1"] == "2020-01-01T00:00:00+00:00"
    assert listed["device1"]["device-group"] == "lab"
    assert listed["device1"]["network-info"]["local_ipv4"] == lab.devices[0].underlay_ip
    # the lab sets a device's group and tag as the factory would; the list filters
    factory.set_device("device2", group="east", tag="beta")
    assert [d["name"] for d in factory.devices(group="east")] == ["device2"]
    assert [d["name"] for d in factory.devices(match_tag="beta")] == ["device2"]
    factory.set_device("device2", group="lab", tag="")
    # the engineer reaches the factory API over the underlay with its settings
    eng = lab.engineers[0]
    assert eng.env["FIOVPN_API_URL"] == factory.api_url
    assert eng.http("GET", f"{factory.api_url}/ota/devices/?factory={lab.factory_name}",
                    token=factory.token).ok


def test_lab_runs_the_real_vpn(vpn_lab: Lab) -> None:
    """The lab with the real daemon and client commands: an engineer joins (first-admin
    flow) and reaches a device through the server; host keys are checked by fiovpn ssh."""
    lab = vpn_lab
    eng, outsider = lab.engineers
    address = lab.join(eng)
    assert address == "10.42.42.200"
    d1 = lab.devices[0]
    assert eng.ping(str(d1.vpn_ip), timeout=10)
    out = eng.fiovpn("ssh", "device1", "--", "hostname")
    assert out.stdout.strip() == "device1"
    # not registered, not connected: no way in
    assert not outsider.ping_once(SERVER_IP)


def test_devices_with_their_own_names_are_seeded_under_those_names(
        make_lab: Callable[..., Lab]) -> None:
    from fiovpn.lab import DeviceSpec

    lab = make_lab(devices=[DeviceSpec("gateway-a")], engineers=0)
    assert lab.factory is not None
    assert [row["name"] for row in lab.factory.wireguard_ips()] == ["gateway-a"]
    lab.server.enable()
    assert lab.apply_factory_config() == {"gateway-a": True}
