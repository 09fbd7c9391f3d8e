from __future__ import annotations

import os
from ipaddress import IPv4Address
from pathlib import Path

import pytest

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


def test_device_cache_is_plain_json_that_round_trips_awkward_rows(tmp_path: Path) -> None:
    """The cache is written a row at a time (fast at 50,000 devices): still the JSON
    ``json.loads`` reads, names with quotes, backslashes, newlines and non-ASCII kept."""
    import json

    key = KeyPair.generate().public
    rows = [WireguardIp("plain-1", IPv4Address("10.42.0.2"), True, key),
            WireguardIp('qu"ote\\back\nnl-ünï', None, False, None),
            WireguardIp("", IPv4Address("10.42.0.3"), True, KeyPair.generate().public)]
    cache = StateCache(tmp_path / "state")
    cache.save_devices(rows, 'at "noon"')
    data = json.loads(cache.devices_path.read_text())
    assert data["saved_at"] == 'at "noon"'
    assert data["devices"][1] == {"name": 'qu"ote\\back\nnl-ünï', "ip": None,
                                  "enabled": False, "pubkey": None}
    assert data["devices"][0] == {"name": "plain-1", "ip": "10.42.0.2", "enabled": True,
                                  "pubkey": str(key)}
    assert StateCache(tmp_path / "state").load_devices() == rows


def test_only_the_files_a_restart_needs_wait_for_the_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The device cache (peers when the API is down after a reboot) is fsynced; the
    status document, made again by every pass, is not; an empty one (what a power cut
    can leave of it) reads as none."""
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    cache = StateCache(tmp_path / "state")
    cache.save_devices([WireguardIp("d1", IPv4Address("10.42.42.2"), True,
                                    KeyPair.generate().public)], "t1")
    assert len(synced) == 1
    cache.save_status({"peers": [], "last_sync": "t1"})
    assert len(synced) == 1 and cache.load_status() == {"peers": [], "last_sync": "t1"}
    assert cache.status_path.stat().st_mode & 0o777 == 0o600
    cache.status_path.write_text("")
    assert cache.load_status() is None
