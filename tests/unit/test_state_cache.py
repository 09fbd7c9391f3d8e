from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

from fiovpn.adapters.factory_api import WireguardIp
from fiovpn.core.keys import KeyPair
from fiovpn.services.state import StateCache


def test_device_cache_is_rewritten_only_when_the_list_changes(tmp_path: Path) -> None:
    cache = StateCache(tmp_path / "state")
    rows = [WireguardIp("d1", IPv4Address("10.42.42.2"), True, KeyPair.generate().public)]
    assert cache.save_devices(rows, "t1") is True
    inode = cache.devices_path.stat().st_ino
    assert cache.save_devices(list(rows), "t2") is False
    assert cache.devices_path.stat().st_ino == inode  # not rewritten
    moved = [WireguardIp("d1", IPv4Address("10.42.42.9"), True, rows[0].pubkey)]
    assert cache.save_devices(moved, "t3") is True
    assert cache.load_devices() == moved
    assert cache.devices_path.stat().st_mode & 0o777 == 0o600
    # a new process (fresh cache object) writes its first list even when equal
    assert StateCache(tmp_path / "state").save_devices(moved, "t4") is True
