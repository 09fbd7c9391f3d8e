"""The client registry service: locked, atomic, 0600; refusals change nothing."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ProcessPoolExecutor
from ipaddress import IPv4Address as A
from pathlib import Path

import pytest

from fiovpn.adapters.factory_api import WireguardIp
from fiovpn.adapters.runner import FakeRunner
from fiovpn.adapters.wireguard import WireGuard
from fiovpn.core.addresses import VpnNetwork
from fiovpn.core.keys import KeyPair
from fiovpn.core.registry import Registry
from fiovpn.errors import BadInput, Conflict, NotFound, PermanentError
from fiovpn.services.registry import ClientRegistry, LiveInterface
from fiovpn.services.state import StateCache

NET = VpnNetwork.build()


def _add_one(path: str, key: str) -> str:
    reg = ClientRegistry(Path(path), VpnNetwork.build())
    return str(reg.add(key, name=f"c{key[:6].replace('+', 'p').replace('/', 's')}").ip)


def test_fifty_concurrent_adds_get_fifty_distinct_ips(tmp_path: Path) -> None:
    path = tmp_path / "factory-clients.conf"
    path.write_text("# keep me\n")
    keys = [str(KeyPair.generate().public) for _ in range(50)]
    with ProcessPoolExecutor(max_workers=8) as pool:
        ips = list(pool.map(_add_one, [str(path)] * 50, keys))
    assert len(set(ips)) == 50
    assert all(A(ip) in NET.pool for ip in ips)
    reg = Registry.parse(path.read_text())
    assert reg.problems == []
    assert sorted(str(e.public_key) for e in reg.entries) == sorted(keys)
    assert path.read_text().startswith("# keep me\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.fixture
def registry(tmp_path: Path) -> ClientRegistry:
    path = tmp_path / "clients.conf"
    path.write_text("# admins\n\n")
    state = StateCache(tmp_path / "state")
    device_key = KeyPair.generate().public
    state.save_devices([WireguardIp("dev1", A("10.42.42.250"), True, device_key)],
                       "2026-01-01T00:00:00Z")
    reg = ClientRegistry(path, NET, state=state)
    reg.add(str(KeyPair.generate().public), ip="10.42.42.201", name="alice")
    return reg


def _device_key(reg: ClientRegistry) -> str:
    assert reg.state is not None
    rows = reg.state.load_devices()
    assert rows and rows[0].pubkey
    return str(rows[0].pubkey)


@pytest.mark.parametrize("case", [
    "bad-key", "dup-key", "dup-name", "taken-ip", "device-ip", "device-key",
    "outside-subnet", "outside-pool", "server-ip", "shell-name", "bad-ip",
])
def test_refusals_leave_the_file_byte_identical(registry: ClientRegistry, case: str) -> None:
    before = registry.path.read_bytes()
    existing = str(registry.list()[0].public_key)
    fresh = str(KeyPair.generate().public)
    calls = {
        "bad-key": lambda: registry.add("not-a-key"),
        "dup-key": lambda: registry.add(existing),
        "dup-name": lambda: registry.add(fresh, name="alice"),
        "taken-ip": lambda: registry.add(fresh, ip="10.42.42.201"),
        "device-ip": lambda: registry.add(fresh, ip="10.42.42.250"),
        "device-key": lambda: registry.add(_device_key(registry)),
        "outside-subnet": lambda: registry.add(fresh, ip="10.42.43.200"),
        "outside-pool": lambda: registry.add(fresh, ip="10.42.42.20"),
        "server-ip": lambda: registry.add(fresh, ip="10.42.42.1"),
        "shell-name": lambda: registry.add(fresh, name="a;rm -rf /"),
        "bad-ip": lambda: registry.add(fresh, ip="10.42.42.300"),
    }
    with pytest.raises(BadInput) as info:
        calls[case]()
    assert info.value.exit_code == 2
    if case in ("dup-key", "dup-name", "taken-ip", "device-ip", "device-key"):
        assert isinstance(info.value, Conflict)
    assert registry.path.read_bytes() == before


def test_auto_ip_skips_clients_and_device_ips(registry: ClientRegistry) -> None:
    assert str(registry.add(str(KeyPair.generate().public)).ip) == "10.42.42.200"
    assert str(registry.add(str(KeyPair.generate().public)).ip) == "10.42.42.202"


def test_remove_by_name_and_key(registry: ClientRegistry) -> None:
    key = str(KeyPair.generate().public)
    registry.add(key, name="bob")
    assert [e.name for e in registry.remove(name="alice")] == ["alice"]
    assert [str(e.public_key) for e in registry.remove(public_key=key)] == [key]
    assert registry.list() == []
    assert registry.path.read_text().startswith("# admins\n")
    before = registry.path.read_bytes()
    with pytest.raises(NotFound):
        registry.remove(name="alice")
    with pytest.raises(BadInput):
        registry.remove()
    assert registry.path.read_bytes() == before


def test_changes_reach_the_live_interface_hook(registry: ClientRegistry) -> None:
    calls: list[int] = []
    registry.on_change = lambda: calls.append(1)
    key = str(KeyPair.generate().public)
    registry.add(key)
    registry.remove(public_key=key)
    assert calls == [1, 1]
    before = registry.path.read_bytes()
    with pytest.raises(BadInput):
        registry.add("nope")
    assert calls == [1, 1] and registry.path.read_bytes() == before


def test_check_reports_registry_and_interface(registry: ClientRegistry) -> None:
    alice = registry.list()[0]
    other = KeyPair.generate().public
    runner = FakeRunner()
    runner.on("ip", "link", "show", reply=lambda a, i: "ok")
    runner.on("wg", "show", reply=lambda a, i: (
        f"(none)\t(none)\t5555\toff\n{alice.public_key}\t(none)\t(none)\t10.42.42.201/32"
        "\t0\t0\t0\toff\n"))
    registry.live = LiveInterface(WireGuard(runner), "factory")
    assert registry.check(str(alice.public_key)) == {
        "registered": True, "in_registry": True, "on_interface": True, "ip": "10.42.42.201"}
    assert registry.check(str(other)) == {
        "registered": False, "in_registry": False, "on_interface": False, "ip": None}
    assert os.path.exists(registry.path)


def test_a_line_that_is_not_utf8_is_one_bad_line_and_its_bytes_are_kept(
        registry: ClientRegistry) -> None:
    key = str(KeyPair.generate().public)
    registry.path.write_bytes(f"# caf\xe9\n{key} 10.42.42.210 bob\n".encode("latin-1")
                              + b"\xff\xfe junk\n")
    doc = registry.read()
    assert [e.name for e in doc.entries] == ["bob"]
    assert [(p.line, p.message) for p in doc.problems] == [
        (1, "not valid UTF-8 text"), (3, "not valid UTF-8 text")]
    new_key = str(KeyPair.generate().public)
    registry.add(new_key)
    raw = registry.path.read_bytes()
    assert raw.startswith(b"# caf\xe9\n") and b"\xff\xfe junk\n" in raw
    assert raw.endswith(f"{new_key} 10.42.42.200\n".encode())


def test_an_unreadable_registry_is_one_clear_error(registry: ClientRegistry) -> None:
    registry.path.unlink()
    registry.path.mkdir()
    with pytest.raises(PermanentError, match=r"cannot read the client registry .*directory"):
        registry.add(str(KeyPair.generate().public))
    with pytest.raises(PermanentError, match="cannot read the client registry"):
        registry.list()


def test_a_registry_that_cannot_be_written_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    reg = ClientRegistry(blocker / "clients.conf", NET)
    with pytest.raises(PermanentError, match=r"cannot update the client registry .*clients.conf"):
        reg.add(str(KeyPair.generate().public))
    assert blocker.read_text() == ""
