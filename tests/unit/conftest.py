"""Fixtures shared by the unit tests of the server command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A server.toml whose every path is under ``tmp_path``, and a state dir that
    knows devices lab-1 (group lab) and prod-1 (group prod)."""
    path = tmp_path / "server.toml"
    state = tmp_path / "state"
    state.mkdir()
    (state / "device_groups.json").write_text(
        json.dumps({"saved_at": "x", "groups": {"lab-1": "lab", "prod-1": "prod"}}))
    (state / "devices.json").write_text(json.dumps({"saved_at": "x", "devices": [
        {"name": "lab-1", "ip": "10.42.42.2", "enabled": True, "pubkey": None},
        {"name": "prod-1", "ip": "10.42.42.3", "enabled": True, "pubkey": None}]}))
    path.write_text(f'clients-file = "{tmp_path}/clients.conf"\ninterface = "nosuch0"\n'
                    f'state-dir = "{state}"\nprivate-key = "{tmp_path}/server.key"\n'
                    f'hosts-file = "{tmp_path}/hosts"\n'
                    f'authorized-keys = "{tmp_path}/authorized_keys"\n')
    return path
