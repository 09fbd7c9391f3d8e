"""Device-to-device that lasts, on lab devices that behave like LmP devices: the
dispatcher hook keeps it on across reboots and factory VPN config changes (which
make fioconfig's handler rewrite every device's connection), `d2d-status` and
`doctor --device` read the device's live state from any engineer's machine, and
bad input changes nothing. Every keyfile is also read by real NetworkManager
(`nmcli --offline`) when it is installed. Every probe runs inside a namespace.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from ipaddress import IPv4Interface, IPv4Network
from typing import Any

import pytest

from fiovpn.core.d2d import HOOK_NAME
from fiovpn.core.factory_files import VPN_HANDLER, WIREGUARD_SERVER_FILE, ServerConfigFile
from fiovpn.lab import Device, DeviceSpec, Engineer, Lab, networkmanager

pytestmark = pytest.mark.e2e

SERVER_IP = "10.42.42.1"
SUBNET = "10.42.42.0/24"


@pytest.fixture(scope="module")
def d2d_lab(make_lab: Callable[..., Lab]) -> Lab:
    """device1, device2 on the VPN, device3 not; the server allows device-to-device;
    engineer1 and engineer2 connected."""
    lab = make_lab(devices=[DeviceSpec("device1"), DeviceSpec("device2"),
                            DeviceSpec("device3", vpn=False)],
                   engineers=2, admins=1,
                   server_settings={"allow-device-to-device": True, "interval": 2})
    lab.start_vpn()
    for eng in lab.engineers:
        lab.join(eng)
    return lab


def js(role: Engineer, *args: str, check: bool = True) -> Any:
    return role.fiovpn_json(*args, check=check, timeout=90)


def fails(role: Engineer, *args: str, code: int) -> dict[str, Any]:
    result = role.fiovpn(*args, "--json", check=False, timeout=90)
    assert result.returncode == code, (result.stdout, result.stderr)
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, result.stderr  # one clear line (after the progress line)
    return dict(json.loads(result.stdout)["error"])


def ssh_ok(role: Engineer, device: str) -> bool:
    """``fiovpn ssh --json DEVICE -- true`` (--json before the remote command) exits 0."""
    result = role.fiovpn("ssh", "--json", device, "--", "true", check=False, timeout=60)
    return result.returncode == 0 and json.loads(result.stdout)["exit_code"] == 0


def both_ways(a: Device, b: Device, timeout: float = 20.0) -> bool:
    return a.ping(str(b.vpn_ip), timeout=timeout) and b.ping(str(a.vpn_ip), timeout=timeout)


def neither_way(a: Device, b: Device) -> bool:
    return not a.ping_once(str(b.vpn_ip), wait=2) and not b.ping_once(str(a.vpn_ip), wait=2)


def hook_installed(device: Device) -> bool:
    return (device.dispatcher_dir / HOOK_NAME).exists()


def state(device: Device) -> tuple[str | None, bool, tuple[str, ...]]:
    return device.read_keyfile(), hook_installed(device), device.server_allowed_ips()


def nm_view(device: Device) -> tuple[list[IPv4Network], IPv4Interface | None] | None:
    """The device's keyfile as real NetworkManager reads it (None: nmcli missing)."""
    text = device.read_keyfile()
    assert text is not None
    return networkmanager.server_peer_view(text) if networkmanager.available() else None


def assert_keyfile(device: Device, allowed: str, endpoint: str | None = None) -> None:
    view = nm_view(device)
    if view is not None:
        assert view == ([IPv4Network(allowed)], IPv4Interface(f"{device.vpn_ip}/24"))
    if endpoint is not None:
        assert f"endpoint={endpoint}\n" in (device.read_keyfile() or "")


def counters(device: Device) -> tuple[int, int]:
    peer = next(iter(device.wg_dump(device.interface).values()))
    return peer.rx, peer.tx


def test_enable_d2d_keeps_the_ssh_session_and_works_both_ways(d2d_lab: Lab) -> None:
    eng = d2d_lab.engineers[0]
    d1, d2 = d2d_lab.device("device1"), d2d_lab.device("device2")
    assert neither_way(d1, d2)  # isolated by default
    assert ssh_ok(eng, "device1")
    before = counters(d1)
    first = js(eng, "devices", "enable-d2d", "device1")
    assert first["changed"] is True and first["persistent"] is True
    assert first["allowed_ips"] == [SUBNET]
    assert "reboot" in first["warning"] and "wireguard-server" in first["warning"]
    # the session that carried the change is fine: the next ssh works at once ...
    assert ssh_ok(eng, "device1")
    # ... and the tunnel's peer was changed in place, not re-created (counters go on)
    assert counters(d1) >= before
    assert js(eng, "devices", "enable-d2d", "device1")["changed"] is False  # idempotent
    assert js(eng, "devices", "enable-d2d", "device2")["changed"] is True
    assert hook_installed(d1) and hook_installed(d2)
    assert d1.server_allowed_ips() == (SUBNET,)
    assert_keyfile(d1, SUBNET)
    assert both_ways(d1, d2)


def test_d2d_lasts_across_a_reboot(d2d_lab: Lab) -> None:
    d1, d2 = d2d_lab.device("device1"), d2d_lab.device("device2")
    runs = len(d1.fioconfig.runs)
    d1.reboot()
    # fioconfig extract ran the handler for both VPN files: the keyfile is the
    # handler's again (server only), and the hook widened the live interface
    assert [r.file for r in d1.fioconfig.runs[runs:]].count(WIREGUARD_SERVER_FILE) == 1
    assert_keyfile(d1, f"{SERVER_IP}/32")
    assert d1.server_allowed_ips() == (SUBNET,)
    assert both_ways(d1, d2)
    status = js(d2d_lab.engineers[1], "devices", "d2d-status", "device1")
    assert status == {"name": "device1", "d2d": True, "allowed_ips": [SUBNET],
                      "persistent": True, "vpn_ip": str(d1.vpn_ip)}


def test_d2d_lasts_when_the_factory_vpn_config_changes(d2d_lab: Lab) -> None:
    d1, d2 = d2d_lab.device("device1"), d2d_lab.device("device2")
    factory, server = d2d_lab.factory, d2d_lab.server
    assert factory is not None
    # the server is also reachable on 5556 (its own nft table in its namespace) ...
    server.run(["nft", "-f", "-"], input=(
        "table ip fvlabredir {\n chain pre {\n  type nat hook prerouting priority -100;\n"
        "  udp dport 5556 redirect to :5555\n }\n}\n"))
    # ... and the factory's wireguard-server file now says so: every device's handler runs
    current = ServerConfigFile.parse(factory.factory_files()[WIREGUARD_SERVER_FILE])
    moved = ServerConfigFile(f"{current.endpoint_host}:5556", current.server_address,
                             current.pubkey)
    factory.api("PATCH", f"/ota/factories/{factory.factory}/config/", {
        "reason": "lab: new endpoint port", "files": [{
            "name": WIREGUARD_SERVER_FILE, "value": moved.render(), "unencrypted": True,
            "on-changed": [VPN_HANDLER]}]})
    runs = {d.name: len(d.fioconfig.runs) for d in (d1, d2)}
    assert d2d_lab.apply_factory_config()["device1"]
    for d in (d1, d2):
        assert [r.file for r in d.fioconfig.runs[runs[d.name]:]] == [WIREGUARD_SERVER_FILE]
        assert_keyfile(d, f"{SERVER_IP}/32", endpoint=moved.endpoint)  # rewritten narrow
        assert d.server_allowed_ips() == (SUBNET,)  # the hook widened it again
    assert both_ways(d1, d2)
    # a check-in with nothing new runs nothing
    d2d_lab.apply_factory_config()
    assert len(d1.fioconfig.runs) == runs["device1"] + 1


def test_an_engineer_who_did_not_enable_it_sees_the_true_state(d2d_lab: Lab) -> None:
    other = d2d_lab.engineers[1]  # never ran enable-d2d: no local record to lean on
    d2 = d2d_lab.device("device2")
    assert js(other, "devices", "d2d-status", "device2")["d2d"] is True
    doctor = js(other, "doctor", "--device", "device2", check=False)
    check = next(c for c in doctor if c["name"] == "device_to_device")
    assert check["ok"] is True and "lasts" in check["detail"], check
    # the hook removed by hand: on now, but it would not survive a reboot
    d2.run(["rm", "-f", f"/etc/NetworkManager/dispatcher.d/{HOOK_NAME}"])
    status = js(other, "devices", "d2d-status", "device2")
    assert (status["d2d"], status["persistent"]) == (True, False)
    doctor = js(other, "doctor", "--device", "device2", check=False)
    check = next(c for c in doctor if c["name"] == "device_to_device")
    assert check["ok"] is False and "enable-d2d device2" in check["next_step"], check
    again = js(other, "devices", "enable-d2d", "device2")
    # the hook back; the keyfile too (the handler rewrote it at the config change);
    # the live interface was still wide
    assert again["changed_parts"] == ["hook", "keyfile"] and hook_installed(d2)


def test_disable_d2d_stays_off_after_a_reboot(d2d_lab: Lab) -> None:
    eng = d2d_lab.engineers[0]
    d1, d2 = d2d_lab.device("device1"), d2d_lab.device("device2")
    off = js(eng, "devices", "disable-d2d", "device1")
    assert off["changed"] is True and off["allowed_ips"] == [f"{SERVER_IP}/32"]
    assert not hook_installed(d1)
    assert_keyfile(d1, f"{SERVER_IP}/32")
    d1.reboot()
    assert d1.server_allowed_ips() == (f"{SERVER_IP}/32",)
    assert neither_way(d1, d2)
    assert d1.ping(SERVER_IP, timeout=15)  # still on the VPN
    status = js(d2d_lab.engineers[1], "devices", "d2d-status", "device1")
    assert (status["d2d"], status["persistent"]) == (False, False)
    assert js(eng, "devices", "disable-d2d", "device1")["changed"] is False


def test_bad_input_is_one_clear_error_and_changes_nothing(d2d_lab: Lab) -> None:
    eng = d2d_lab.engineers[0]
    d1, d2 = d2d_lab.device("device1"), d2d_lab.device("device2")
    before = {d.name: state(d) for d in (d1, d2)}
    assert fails(eng, "devices", "enable-d2d", "no-such-device", code=2)["code"] == \
        "unknown_device"
    # device3 exists but is not on the VPN (the factory may list no VPN address for it)
    off = {"vpn_disabled", "unknown_device"}
    assert fails(eng, "devices", "enable-d2d", "device3", code=2)["code"] in off
    assert fails(eng, "devices", "d2d-status", "device3", code=2)["code"] in off
    assert fails(eng, "devices", "disable-d2d", "no-such-device", code=2)["code"] == \
        "unknown_device"
    assert {d.name: state(d) for d in (d1, d2)} == before


@pytest.mark.skipif(shutil.which("sudo") is None,
                    reason="sudo is not installed (scripts/install.sh --test installs it)")
def test_device_user_without_sudo_rights(d2d_lab: Lab) -> None:
    """A real non-root user `fio` on device1 (in its own /etc) and the real sudo: first
    without any sudo rights, then with NOPASSWD rights."""
    eng = d2d_lab.engineers[0]
    d1 = d2d_lab.device("device1")
    d1.add_user("fio")
    before = state(d1)
    err = fails(eng, "devices", "enable-d2d", "device1", "--user", "fio", code=1)
    assert err["code"] == "sudo_password" and "nothing was changed" in err["message"]
    assert "fio ALL=(root) NOPASSWD:" in err["message"]
    assert state(d1) == before
    # with the rights the message asks for, it works through `sudo -n`
    d1.set_sudo("fio", True)
    try:
        on = js(eng, "devices", "enable-d2d", "device1", "--user", "fio")
        assert on["persistent"] is True and d1.server_allowed_ips() == (SUBNET,)
        status = js(eng, "devices", "d2d-status", "device1", "--user", "fio")
        assert status["d2d"] is True
        js(eng, "devices", "disable-d2d", "device1", "--user", "fio")
        assert state(d1)[1:] == before[1:]
    finally:
        d1.set_sudo("fio", False)
