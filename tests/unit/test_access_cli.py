"""`server clients add/renew --groups/--expires`, `server access`, `server journal`
through the CLI (no interface: nothing live): bad input is exit 2 and leaves the
registry and the grants byte-identical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fiovpn.cli.main import cli
from fiovpn.core.keys import KeyPair

KEY = str(KeyPair.generate().public)


@pytest.fixture
def config(tmp_path: Path) -> Path:
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
                    f'hosts-file = "{tmp_path}/hosts"\n')
    return path


def run(config: Path, *args: str) -> tuple[int, object]:
    result = CliRunner().invoke(cli, ["server", "--config", str(config), *args, "--json"])
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else None


def test_add_with_groups_and_expires_then_renew_and_journal(config: Path) -> None:
    code, data = run(config, "clients", "add", "--public-key", KEY, "--name", "eng",
                     "--groups", "lab", "--expires", "1h")
    assert code == 0, data
    assert isinstance(data, dict) and data["groups"] == ["lab"] and data["expires"]
    code, data = run(config, "clients", "list")
    assert isinstance(data, list) and data[0]["expired"] is False
    code, data = run(config, "clients", "renew", "--name", "eng", "--expires",
                     "2031-01-01T00:00:00Z")
    assert code == 0 and isinstance(data, dict) and data["expires"] == "2031-01-01T00:00:00Z"
    code, lines = run(config, "journal")
    assert isinstance(lines, list)
    assert [ln["action"] for ln in lines] == ["client_add", "renew"]
    assert lines[0]["target"] == "eng" and lines[0]["actor"].startswith("local:")
    code, lines = run(config, "journal", "--action", "renew", "--since", "1h")
    assert isinstance(lines, list) and len(lines) == 1


def test_grant_list_revoke(config: Path) -> None:
    run(config, "clients", "add", "--public-key", KEY, "--name", "eng", "--groups", "lab")
    code, data = run(config, "access", "grant", "--name", "eng", "--group", "prod",
                     "--for", "5m")
    assert code == 0 and isinstance(data, dict)
    assert data["client"] == "eng" and data["group"] == "prod" and data["device"] is None
    code, data = run(config, "access", "grant", "--public-key", KEY, "--device", "prod-1",
                     "--for", "30s")
    assert code == 0
    code, data = run(config, "access", "list")
    assert isinstance(data, list) and [(g["group"], g["device"]) for g in data] == [
        (None, "prod-1"), ("prod", None)]
    assert 0 < data[0]["remaining_s"] <= 30
    code, data = run(config, "access", "revoke", "--name", "eng", "--group", "prod")
    assert code == 0
    code, data = run(config, "access", "list")
    assert isinstance(data, list) and len(data) == 1
    code, data = run(config, "access", "revoke", "--name", "eng", "--group", "prod")
    assert code == 2


@pytest.mark.parametrize("args", [
    ("clients", "add", "--public-key", "K2", "--groups", "nosuch"),
    ("clients", "add", "--public-key", "K2", "--groups", "lab,,prod"),
    ("clients", "add", "--public-key", "K2", "--groups", "l;b"),
    ("clients", "add", "--public-key", "K2", "--expires", "5x"),
    ("clients", "add", "--public-key", "K2", "--expires", "2020-01-01T00:00:00Z"),
    ("clients", "renew", "--name", "ghost", "--expires", "1d"),
    ("clients", "renew", "--name", "eng", "--expires", "5x"),
    ("clients", "renew", "--name", "eng", "--expires", "2001-01-01T00:00:00Z"),
    ("access", "grant", "--name", "ghost", "--group", "lab", "--for", "5s"),
    ("access", "grant", "--name", "eng", "--group", "nosuch", "--for", "5s"),
    ("access", "grant", "--name", "eng", "--device", "nosuch", "--for", "5s"),
    ("access", "grant", "--name", "eng", "--group", "lab", "--for", "5x"),
    ("access", "grant", "--name", "eng", "--for", "5s"),
    ("access", "grant", "--name", "eng", "--group", "lab", "--device", "lab-1", "--for", "5s"),
    ("journal", "--since", "5x"),
])
def test_bad_input_exit_2_nothing_changed(config: Path, tmp_path: Path,
                                          args: tuple[str, ...]) -> None:
    run(config, "clients", "add", "--public-key", KEY, "--name", "eng")
    run(config, "access", "grant", "--name", "eng", "--group", "lab", "--for", "1h")
    registry = (tmp_path / "clients.conf").read_bytes()
    grants = (tmp_path / "state" / "grants.json").read_bytes()
    args = tuple(str(KeyPair.generate().public) if a == "K2" else a for a in args)
    code, data = run(config, *args)
    assert code == 2, data
    assert isinstance(data, dict) and data["error"]["message"]
    assert (tmp_path / "clients.conf").read_bytes() == registry
    assert (tmp_path / "state" / "grants.json").read_bytes() == grants
