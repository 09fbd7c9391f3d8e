"""`fiovpn server clients …` and `server status` through the CLI: SPEC's JSON
keys and exit codes (no interface exists here: `ip link show` only reads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fiovpn.cli.main import cli
from fiovpn.core.keys import KeyPair


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(f'interface = "fvnoexist0"\nclients-file = "{tmp_path}/clients.conf"\n'
                    f'state-dir = "{tmp_path}/state"\nprivate-key = "{tmp_path}/server.key"\n'
                    f'hosts-file = "{tmp_path}/hosts"\n')
    return path


def run(config: Path, *args: str) -> tuple[int, object]:
    result = CliRunner().invoke(cli, ["server", "--config", str(config), *args, "--json"])
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else None


def test_clients_add_list_check_remove(config: Path) -> None:
    key = str(KeyPair.generate().public)
    code, data = run(config, "clients", "add", "--public-key", key, "--name", "alice")
    assert code == 0 and data == {"public_key": key, "ip": "10.42.42.200", "name": "alice"}
    code, data = run(config, "clients", "list")
    assert code == 0 and data == [{"public_key": key, "ip": "10.42.42.200", "name": "alice",
                                   "groups": None, "expires": None, "expired": False}]
    code, data = run(config, "clients", "check", "--public-key", key)
    assert code == 0 and data == {"registered": False, "in_registry": True,
                                  "on_interface": False, "ip": "10.42.42.200"}
    code, data = run(config, "clients", "remove", "--name", "alice")
    assert code == 0 and data == [{"public_key": key, "ip": "10.42.42.200", "name": "alice"}]
    code, data = run(config, "clients", "list")
    assert data == []


def test_bad_input_exit_2_with_json_error(config: Path) -> None:
    code, data = run(config, "clients", "add", "--public-key", "nope")
    assert code == 2 and isinstance(data, dict) and data["error"]["code"] == "bad_key"
    code, data = run(config, "clients", "remove", "--name", "ghost")
    assert code == 2 and isinstance(data, dict) and data["error"]["code"] == "not_found"


def test_status_without_daemon(config: Path) -> None:
    code, data = run(config, "status")
    assert code == 0 and isinstance(data, dict)
    assert data["interface_up"] is False and data["daemon_running"] is False
    assert data["peers"] == [] and data["last_sync"] is None
    for key in ("conflicts", "last_error", "registry_problems"):
        assert key in data


def test_status_before_the_daemon_ever_ran_says_what_to_do(config: Path) -> None:
    from fiovpn.core.keys import public_key
    from fiovpn.services.keys import ensure_key_file

    config.write_text(config.read_text() + 'factory = "acme"\n')
    private, _ = ensure_key_file(config.parent / "server.key")
    code, data = run(config, "status")
    assert code == 0 and isinstance(data, dict)
    assert data["public_key"] == str(public_key(private))
    result = CliRunner().invoke(cli, ["server", "--config", str(config), "status"])
    assert result.exit_code == 0
    assert "systemctl enable --now fiovpn-acme" in " ".join(result.stdout.split())


def test_config_from_environment(config: Path) -> None:
    result = CliRunner().invoke(cli, ["server", "clients", "list", "--json"],
                                env={"FIOVPN_SERVER_CONFIG": str(config)})
    assert result.exit_code == 0 and json.loads(result.stdout) == []


def test_enable_writes_a_settings_file_that_does_not_exist_yet(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.unit.test_reconcile import FakeApi

    from fiovpn.services import server as service
    from fiovpn.services.server import setup

    api = FakeApi()
    monkeypatch.setattr(service, "build_api", lambda settings: api)
    # no flag sets unit-dir: keep the unit in tmp_path, never /etc/systemd/system
    monkeypatch.setattr(setup, "unit_path",
                        lambda settings: tmp_path / f"fiovpn-{settings.factory}.service")
    config = tmp_path / "new" / "server.toml"
    result = CliRunner().invoke(cli, [
        "server", "enable", "--config", str(config), "--factory", "acme",
        "--endpoint", "vpn.example.com", "--private-key", str(tmp_path / "server.key"),
        "--json"], env={"FIOVPN_API_TOKEN": ""})
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["config_written"] is True and data["config"] == str(config)
    assert 'factory = "acme"' in config.read_text() and len(api.patches) == 1
    assert data["unit"] == str(tmp_path / "fiovpn-acme.service")
