"""The engineer and admin flows of SPEC section 1, for real, in the namespace lab:
first-admin bootstrap, engineer onboarding with registration over SSH through the
tunnel, devices reachable after enable-vpn, device-to-device on and off, and bad
input that changes nothing. Every probe runs inside a lab namespace.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address
from typing import Any

import pytest

from fiovpn.core.keys import KeyPair
from fiovpn.lab import DeviceSpec, Engineer, Lab, wait_for

pytestmark = pytest.mark.e2e

SERVER_IP = "10.42.42.1"


@pytest.fixture(scope="module")
def fleet(make_lab: Callable[..., Lab]) -> Lab:
    """Server daemon (device-to-device allowed, fast sync), device1/device2 on the VPN,
    device3 not yet; engineer1 is the (first) admin, engineer2 a new engineer."""
    lab = make_lab(devices=[DeviceSpec("device1"), DeviceSpec("device2"),
                            DeviceSpec("device3", vpn=False)],
                   engineers=2, admins=1,
                   server_settings={"allow-device-to-device": True, "interval": 2})
    lab.server.enable()
    lab.server.start_daemon()
    lab.server.wait_synced(timeout=30)
    assert lab.apply_factory_config() == {"device1": True, "device2": True, "device3": False}
    return lab


def js(role: Engineer, *args: str, check: bool = True, timeout: float = 60.0) -> Any:
    return role.fiovpn_json(*args, check=check, timeout=timeout)


def fails(role: Engineer, *args: str, code: int = 2) -> tuple[dict[str, Any], str]:
    argv = ["ssh", "--json", *args[1:]] if args[0] == "ssh" else [*args, "--json"]
    result = role.fiovpn(*argv, check=False, timeout=60)
    assert result.returncode == code, (result.stdout, result.stderr)
    return json.loads(result.stdout), result.stderr


def ssh_json(role: Engineer, device: str, *command: str) -> Any:
    """``fiovpn ssh --json DEVICE -- CMD``: --json must come before the remote command."""
    result = role.fiovpn("ssh", "--json", device, "--", *command, check=False, timeout=60)
    return json.loads(result.stdout)


def registry(lab: Lab) -> str:
    return lab.server.clients_file.read_text() if lab.server.clients_file.exists() else ""


def test_first_admin_bootstrap(fleet: Lab) -> None:
    admin = fleet.engineers[0]
    keys = js(admin, "keys", "generate")
    pub = keys["public_key"]
    # one-time direct access to the server: register own key locally there
    added = fleet.server.fiovpn_json("server", "clients", "add", "--public-key", pub,
                                     "--name", "admin1")
    assert added["public_key"] == pub and added["name"] == "admin1"
    init = js(admin, "client", "init", "--address", added["ip"])
    assert init["public_key"] == pub  # the key from `keys generate`
    assert init["address"] == added["ip"]
    assert js(admin, "connect")["connected"] is True
    again = js(admin, "connect")
    assert again["changed"] is False and "already connected" in again["message"]
    verify = js(admin, "verify")
    assert verify["connected"] is True and verify["server_reachable"] is True
    assert verify["handshake_age_s"] is not None and verify["handshake_age_s"] < 30
    assert admin.ping(SERVER_IP, timeout=5)
    # and the admin reaches the devices through the server
    assert admin.ping("10.42.42.2", timeout=10)


def test_engineer_onboarding(fleet: Lab) -> None:
    admin, eng = fleet.engineers
    init = js(eng, "client", "init")
    pub = init["public_key"]
    assert init["address"] is None
    assert f"fiovpn register --public-key {pub}" in init["next_step"]

    result = eng.fiovpn("check-registered", "--timeout", "4", check=False, timeout=60)
    assert result.returncode == 1
    assert "not registered (or server unreachable)" in result.stdout
    assert f"fiovpn register --public-key {pub}" in result.stdout
    assert not eng.run(["wg", "show", eng.interface], check=False).ok  # put back down

    # an engineer is not an admin: no SSH to the server
    denied = eng.fiovpn("register", "--public-key", pub, check=False)
    assert denied.returncode == 1

    # the admin registers them over SSH through the tunnel to 10.42.42.1:5025
    reg = js(admin, "register", "--public-key", pub, "--name", "engineer2")
    assert reg["public_key"] == pub and reg["name"] == "engineer2"
    assert reg["ip"].startswith("10.42.42.2")  # from the client pool .200-.254
    assert pub in registry(fleet)
    check = js(admin, "check-registered", "--public-key", pub)
    assert check["registered"] is True and check["ip"] == reg["ip"]

    assert js(eng, "check-registered", "--timeout", "20")["registered"] is True
    assert js(eng, "client", "init", "--address", reg["ip"])["public_key"] == pub
    assert js(eng, "connect")["connected"] is True
    verify = js(eng, "verify")
    assert verify == {**verify, "connected": True, "server_reachable": True}
    assert eng.ping("10.42.42.2", timeout=10)

    ssh = ssh_json(eng, "device1", "sh", "-c", "echo $0 on $(hostname -I)", "a b;c")
    assert ssh["exit_code"] == 0
    assert ssh["stdout"].startswith("a b;c on ")  # the remote shell split nothing
    code = eng.fiovpn("ssh", "device1", "--", "sh", "-c", "exit 7", check=False)
    assert code.returncode == 7

    # without a command: a session whose stdin is ours (no terminal here)
    session = eng.fiovpn("ssh", "device1", input="echo from-stdin\nexit 3\n", check=False)
    assert session.returncode == 3 and "from-stdin" in session.stdout

    status = js(eng, "status")
    assert status["connected"] and status["address"] == reg["ip"]
    assert status["peer"]["public_key"] == str(fleet.server.public_key)
    assert status["peer"]["rx"] > 0 and status["peer"]["handshake_age_s"] is not None

    doctor = js(eng, "doctor", "--device", "device1")
    assert all(c["ok"] for c in doctor), doctor


def test_admin_unregisters_a_client(fleet: Lab) -> None:
    admin = fleet.engineers[0]
    key = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA="
    reg = js(admin, "register", "--public-key", key, "--name", "leaver")
    assert js(admin, "check-registered", "--public-key", key)["registered"] is True
    fleet.server.wait_peers({**{str(d.keys.public): str(d.vpn_ip) for d in fleet.devices
                                if d.vpn_ip is not None}, **_client_peers(fleet)})
    assert key in fleet.server.peers()
    js(admin, "unregister", "--name", "leaver")
    gone = js(admin, "check-registered", "--public-key", key, check=False)
    assert gone["registered"] is False and gone["in_registry"] is False
    assert key not in registry(fleet) and key not in fleet.server.peers()
    assert reg["ip"] not in registry(fleet)


def test_enable_vpn_device_reachable_after_next_sync(fleet: Lab) -> None:
    eng = fleet.engineers[1]
    assert not eng.ping_once("10.42.42.4")
    data = js(eng, "devices", "enable-vpn", "device3")
    assert data["name"] == "device3"
    ip = data["vpn_ip"]
    assert ip == "10.42.42.4"  # fioctl's choice: first free after the server
    # the device applies its new config; the daemon adds the peer on its next reconcile
    device3 = fleet.device("device3")
    assert device3.apply_factory_config()
    fleet.server.wait_peers({**{str(d.keys.public): str(d.vpn_ip) for d in fleet.devices},
                             **_client_peers(fleet)}, timeout=30)
    assert eng.ping(ip, timeout=15)
    ssh = ssh_json(eng, "device3", "true")
    assert ssh["exit_code"] == 0


def _client_peers(lab: Lab) -> dict[str, str]:
    out = {}
    for line in registry(lab).splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2:
            out[fields[0]] = fields[1]
    return out


def test_device_to_device_on_and_off(fleet: Lab) -> None:
    eng = fleet.engineers[1]
    d1, d2 = fleet.device("device1"), fleet.device("device2")
    assert not d1.ping_once(str(d2.vpn_ip))  # isolated by default

    first = js(eng, "devices", "enable-d2d", "device1")
    assert first["changed"] is True and first["allowed_ips"] == ["10.42.42.0/24"], first
    assert first["persistent"] is True and "reboot" in first["warning"]
    assert js(eng, "devices", "enable-d2d", "device1")["changed"] is False  # idempotent
    assert js(eng, "devices", "enable-d2d", "device2")["changed"] is True
    assert d1.server_allowed_ips() == ("10.42.42.0/24",)
    assert d1.ping(str(d2.vpn_ip), timeout=10)
    assert d2.ping(str(d1.vpn_ip), timeout=10)

    off = js(eng, "devices", "disable-d2d", "device1")
    assert off["changed"] is True and off["allowed_ips"] == ["10.42.42.1/32"]
    assert d1.server_allowed_ips() == ("10.42.42.1/32",)
    assert not d1.ping_once(str(d2.vpn_ip), wait=2)
    assert d1.ping(SERVER_IP, timeout=5)  # still on the VPN
    # the handler-written file is back, byte for byte but for the edits we undid
    text = d1.read_keyfile() or ""
    assert "allowed-ips=10.42.42.1\n" in text

    assert js(eng, "devices", "disable-d2d", "device1")["changed"] is False  # idempotent
    assert js(eng, "devices", "disable-d2d", "device2")["changed"] is True


def test_bad_input_is_a_clear_error_and_changes_nothing(fleet: Lab) -> None:
    admin = fleet.engineers[0]
    before = registry(fleet)
    config_before = admin.config_path.read_bytes()
    keyfile_before = fleet.device("device1").read_keyfile()

    err, msg = fails(admin, "ssh", "no-such-device", "--", "true")
    assert err["error"]["code"] == "unknown_device" and "no-such-device" in msg
    err, _ = fails(admin, "devices", "enable-d2d", "no-such-device")
    assert err["error"]["code"] == "unknown_device"
    err, msg = fails(admin, "register", "--public-key", "not-a-key")
    assert "invalid WireGuard public key" in msg
    zero = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="  # a low-order point: no real key
    err, msg = fails(admin, "register", "--public-key", zero)
    assert err["error"]["code"] == "bad_key" and "low-order" in msg
    valid = str(KeyPair.generate().public)
    err, msg = fails(admin, "register", "--public-key", valid, "--name", "x;reboot")
    assert "invalid client name" in msg
    err, msg = fails(admin, "ssh", "dev$(id)", "--", "true")
    assert "invalid device name" in msg
    err, _ = fails(admin, "client", "init", "--address", "10.42.42.300")
    assert registry(fleet) == before
    assert admin.config_path.read_bytes() == config_before
    assert fleet.device("device1").read_keyfile() == keyfile_before

    # an unreachable server: a clear temporary error, no registry change
    result = admin.fiovpn("register", "--public-key", valid, "--server-ssh",
                          "root@10.42.42.99:5025", "--json", check=False, timeout=60)
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"]["code"] == "ssh_unreachable"
    assert registry(fleet) == before


def test_check_registered_right_after_the_admin_removed_the_key(fleet: Lab) -> None:
    """Issue 9 item 3: the engineer's handshake is seconds old when the admin removes
    the key; check-registered and doctor must say 'not registered' at once, and
    'registered' again once the key is back (through a fresh handshake)."""
    admin, eng = fleet.engineers
    status = js(eng, "status")
    pub, ip = status["public_key"], status["address"]
    assert js(eng, "check-registered")["registered"] is True
    assert eng.ping(SERVER_IP, timeout=5)  # a live session, handshake seconds old
    js(admin, "unregister", "--public-key", pub)
    assert pub not in fleet.server.peers()
    started = time.monotonic()
    gone = eng.fiovpn("check-registered", "--json", check=False, timeout=60)
    took = time.monotonic() - started
    assert gone.returncode == 1, gone.stdout
    assert json.loads(gone.stdout)["registered"] is False
    assert took < 20, f"check-registered took {took:.1f}s"
    doctor = {c["name"]: c["ok"] for c in js(eng, "doctor", check=False)}
    assert doctor["registered"] is False
    # back in the registry at the same IP: the server holds a new peer without our old
    # session; a fresh handshake proves the key again
    js(admin, "register", "--public-key", pub, "--name", "engineer2", "--ip", ip)
    assert js(eng, "check-registered")["registered"] is True
    assert eng.ping(SERVER_IP, timeout=5)


def test_disconnect_is_idempotent(fleet: Lab) -> None:
    eng = fleet.engineers[1]
    assert js(eng, "disconnect")["changed"] is True
    assert js(eng, "disconnect")["changed"] is False
    assert js(eng, "verify", check=False)["connected"] is False
    wait_for(lambda: not eng.run(["wg", "show", eng.interface], check=False).ok,
             timeout=10, what="the engineer's interface to go away")


def test_concurrent_enable_vpn_from_two_engineers_ends_with_distinct_ips(fleet: Lab) -> None:
    """SPEC 10: 8 `enable-vpn` at once, 4 from each engineer's namespace, all choosing
    from the same free list: every device ends with an address of its own, none in
    the client pool, and re-running changes nothing."""
    assert fleet.factory is not None
    names = [f"race{n}" for n in range(1, 9)]
    for name in names:  # devices that only published their key (factory-side only)
        fleet.factory.add_device(name, pubkey=str(KeyPair.generate().public))
    jobs = [(fleet.engineers[n % 2], name) for n, name in enumerate(names)]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(lambda job: js(job[0], "devices", "enable-vpn", job[1],
                                               timeout=120), jobs))
    said = {r["name"]: r["vpn_ip"] for r in results}
    rows = {row["name"]: row for row in fleet.factory.wireguard_ips()}
    ips = [rows[name]["ip"] for name in names]
    assert all(rows[name]["enabled"] for name in names)
    assert len(set(ips)) == 8, rows
    every = [row["ip"] for row in rows.values()]
    assert len(set(every)) == len(every)  # no clash with the lab's own devices either
    pool_start = IPv4Address("10.42.42.200")
    assert all(IPv4Address(ip) < pool_start for ip in ips)
    # what each command said is where the device ended up
    assert said == {name: rows[name]["ip"] for name in names}
    again = js(fleet.engineers[0], "devices", "enable-vpn", "race1")
    assert again["vpn_ip"] == rows["race1"]["ip"]
