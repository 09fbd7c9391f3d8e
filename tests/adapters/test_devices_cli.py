"""`fiovpn devices list|enable-vpn|disable-vpn` against the sandbox factory on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

import fiovpn.cli.devices as cli_devices
from fiovpn.adapters.factory import build_factory_client
from fiovpn.cli.devices import devices
from fiovpn.core.factory_files import VPN_HANDLER
from fiovpn.sandbox.server import SandboxServer

TOKEN = "cli-test-token"
SERVER_VALUE = ("endpoint=vpn.test:5555\nserver_address=10.42.42.1\n"
                "pubkey=zGUGd1W4qgrNx1dJvA4nE7nSBXrk9wqQOgEGLTyT2Uk=")


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(factory="acme", token=TOKEN, devices=5) as server:
        r = httpx.patch(f"{server.url}/ota/factories/acme/config/", headers={"OSF-TOKEN": TOKEN},
                        json={"reason": "server", "files": [
                            {"name": "wireguard-server", "value": SERVER_VALUE,
                             "unencrypted": True, "on-changed": [VPN_HANDLER]}]}, timeout=5)
        r.raise_for_status()
        yield server


@pytest.fixture
def env(sandbox: SandboxServer, tmp_path: Path) -> dict[str, str]:
    return {"HOME": str(tmp_path), "FIOVPN_API_URL": sandbox.url, "FIOVPN_FACTORY": "acme",
            "FIOVPN_API_TOKEN": TOKEN, "FIOVPN_CLIENT_SETTINGS": ""}


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(devices, list(args), env=env)


def served(sandbox: SandboxServer) -> int:
    r = httpx.get(f"{sandbox.url}/_sandbox/requests", headers={"OSF-TOKEN": TOKEN}, timeout=5)
    return int(r.json()["requests"])


def device_rows(env: dict[str, str]) -> dict[str, Any]:
    result = run(env, "list", "--json")
    assert result.exit_code == 0, result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)}


def test_list_json(env: dict[str, str]) -> None:
    rows = device_rows(env)
    assert sorted(rows) == [f"device-0{n}" for n in range(1, 6)]
    for row in rows.values():
        assert {"name", "status", "vpn_ip", "vpn_enabled", "last_seen", "target",
                "pubkey"} <= set(row)
    assert rows["device-01"]["vpn_ip"] == "10.42.42.2" and rows["device-01"]["vpn_enabled"]
    assert rows["device-03"]["vpn_ip"] is None and not rows["device-03"]["vpn_enabled"]


def test_list_for_humans_is_a_table(env: dict[str, str]) -> None:
    result = run(env, "list")
    assert result.exit_code == 0
    assert "device-01" in result.stdout and "10.42.42.2" in result.stdout


def test_enable_disable_enable(env: dict[str, str]) -> None:
    result = run(env, "enable-vpn", "device-04", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"name": "device-04", "vpn_ip": "10.42.42.4",
                                         "changed": True}
    assert device_rows(env)["device-04"]["vpn_enabled"] is True
    result = run(env, "disable-vpn", "device-04", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["vpn_ip"] == "10.42.42.4"
    assert device_rows(env)["device-04"] == {**device_rows(env)["device-04"],
                                             "vpn_ip": "10.42.42.4", "vpn_enabled": False}
    result = run(env, "enable-vpn", "device-03", "--json")
    assert json.loads(result.stdout)["vpn_ip"] == "10.42.42.5"  # .4 stays with device-04
    result = run(env, "enable-vpn", "device-04")
    assert result.exit_code == 0 and "10.42.42.4" in result.stdout


def test_unknown_device_exits_2_with_a_json_error(env: dict[str, str]) -> None:
    result = run(env, "enable-vpn", "ghost", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"error": {"code": "not_found", "message": (
        "device 'ghost' not found in factory 'acme' "
        "(`fiovpn devices list` shows the factory's devices)")}}
    assert "ghost" in result.stderr


def test_bad_name_exits_2_before_any_api_call(env: dict[str, str],
                                              sandbox: SandboxServer) -> None:
    before = served(sandbox)
    result = run(env, "enable-vpn", "device-01;reboot", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["code"] == "bad_name"
    assert served(sandbox) == before


def test_wrong_token_exits_1_naming_its_source_not_the_token(env: dict[str, str],
                                                             tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("not-the-token\n")
    result = run(env, "list", "--json", "--api-token-file", str(token_file))
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "auth" and str(token_file) in error["message"]
    assert "not-the-token" not in result.stdout + result.stderr


def test_no_token_anywhere_exits_1(env: dict[str, str]) -> None:
    result = run({**env, "FIOVPN_API_TOKEN": ""}, "list", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["code"] == "no_token"


def test_api_down_is_a_temporary_error(env: dict[str, str], sandbox: SandboxServer,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    httpx.post(f"{sandbox.url}/_sandbox/fail", headers={"OSF-TOKEN": TOKEN},
               json={"status": 503, "count": -1}, timeout=5)
    monkeypatch.setattr(cli_devices, "build_factory_client",
                        lambda settings: build_factory_client(settings, backoff=0.0,
                                                              attempts=2))
    before = served(sandbox)
    result = run(env, "list", "--json")
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "api_unavailable" and "503" in error["message"]
    assert served(sandbox) - before == 2


def test_the_installed_command(env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "fiovpn", "devices", "list", "--json"],
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 5
    proc = subprocess.run([sys.executable, "-m", "fiovpn", "devices", "disable-vpn",
                           "ghost", "--json"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and json.loads(proc.stdout)["error"]["code"] == "not_found"
