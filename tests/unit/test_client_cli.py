"""The engineer commands' command line: what a user types reaches the right place."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fiovpn.cli.main import cli
from fiovpn.services import client as client_service
from fiovpn.services import device_access, remote


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[list[str]]:
    """Record the command `fiovpn ssh` would run on the device (no SSH, no network)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    calls: list[list[str]] = []

    def run_on_device(_settings: Any, _runner: Any, device: str, command: list[str],
                      **_kw: Any) -> device_access.SshResult:
        calls.append(command)
        return device_access.SshResult(device, IPv4Address("10.42.42.2"), 0, b"hi\n", b"")

    def ssh_session(_settings: Any, _runner: Any, device: str, command: list[str],
                    **_kw: Any) -> int:
        calls.append(command)
        return 0

    monkeypatch.setattr(device_access, "run_on_device", run_on_device)
    monkeypatch.setattr(device_access, "ssh_session", ssh_session)
    return calls


@pytest.mark.parametrize("args", [
    ["ssh", "--json", "device1", "--", "echo", "hi"],
    ["ssh", "device1", "--json", "--", "echo", "hi"],  # the form our own error suggested
])
def test_ssh_json_flag_is_fiovpns_wherever_it_stands(sent: list[list[str]],
                                                     args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert sent == [["echo", "hi"]]
    assert json.loads(result.stdout)["stdout"] == "hi\n"


def test_ssh_passes_options_of_the_remote_command_through(sent: list[list[str]]) -> None:
    result = CliRunner().invoke(cli, ["ssh", "device1", "--", "grep", "--json", "x"])
    assert result.exit_code == 0, result.output
    assert sent == [["grep", "--json", "x"]]


def test_ssh_options_after_device_are_a_usage_error_not_a_command(
        sent: list[list[str]]) -> None:
    result = CliRunner().invoke(cli, ["ssh", "device1", "--user", "root", "--", "id"])
    assert result.exit_code == 2
    assert "options go before DEVICE: fiovpn ssh --user root DEVICE -- CMD" in result.stderr
    assert sent == []


def test_ssh_json_without_a_command_is_a_usage_error(sent: list[list[str]]) -> None:
    result = CliRunner().invoke(cli, ["ssh", "device1", "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["code"] == "bad_usage"
    assert sent == []


def test_verify_when_down_says_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_service, "verify", lambda *_a, **_k: client_service.VerifyResult(
        False, None, False, "10.42.42.1", "foundries"))
    result = CliRunner().invoke(cli, ["verify"])
    assert result.exit_code == 1
    assert "Next: run `fiovpn connect`" in result.stdout


KEY = "FSEfQcuzRffozXrYgcQY9qsgzdQNH9POMcEzQ//F6Cs="


def test_check_registered_names_the_register_command_when_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote, "check_registered_remote", lambda *_a, **_k: {
        "public_key": KEY, "registered": False, "in_registry": False,
        "on_interface": False, "ip": None})
    result = CliRunner().invoke(cli, ["check-registered", "--public-key", KEY])
    assert result.exit_code == 1
    assert f"Next: fiovpn register --public-key {KEY}" in result.stdout


@pytest.mark.parametrize(("command", "teaches"), [
    ("register", "fiovpn register --public-key KEY --name alice"),
    ("register", "fiovpn client init --address IP"),
    ("check-registered", "no admin rights"),
    ("ssh", "fiovpn ssh device1 -- uname -a"),
    ("ssh", "-- sh -c 'A | B'"),
])
def test_help_teaches_with_examples(command: str, teaches: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert teaches in " ".join(result.stdout.split())


def test_keys_generate_points_to_client_init(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    result = CliRunner().invoke(cli, ["keys", "generate"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "fiovpn client init" in result.stdout
    assert "fiovpn register --public-key" in result.stdout


def test_keys_generate_warns_when_the_config_has_another_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("FIOVPN_CLIENT_SETTINGS", raising=False)
    init = CliRunner().invoke(cli, ["client", "init", "--json", "--server-endpoint",
                                    "198.18.0.1:5555", "--server-public-key", KEY])
    assert init.exit_code == 0, init.output
    config_pub = json.loads(init.stdout)["public_key"]
    result = CliRunner().invoke(cli, ["keys", "generate"], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert f"already has its own key (public key {config_pub})" in text
    assert "Next: `fiovpn client init` writes your VPN config with this key" not in text


def test_client_init_takes_the_key_of_keys_generate_at_any_path(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fiovpn.core.keys import KeyPair

    monkeypatch.setenv("HOME", str(tmp_path))
    key = tmp_path / "keys" / "laptop.key"
    made = CliRunner().invoke(cli, ["keys", "generate", "--private-key", str(key), "--json"])
    assert made.exit_code == 0, made.output
    public = json.loads(made.stdout)["public_key"]
    conf = tmp_path / "vpn.conf"
    server = str(KeyPair.generate().public)
    base = ["client", "init", "--config", str(conf), "--server-endpoint", "198.18.0.1:5555",
            "--server-public-key", server, "--json"]
    missing = CliRunner().invoke(cli, [*base, "--private-key", str(tmp_path / "nope.key")])
    assert missing.exit_code == 2 and not conf.exists()
    result = CliRunner().invoke(cli, [*base, "--private-key", str(key)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["public_key"] == public


@pytest.mark.parametrize("device, code", [("a;b", "bad_name"), ("$(id)", "bad_name"),
                                          ("8.8.8.8", "not_vpn_ip")])
def test_doctor_bad_device_is_exit_2_before_anything_runs(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, device: str, code: str) -> None:
    from fiovpn.adapters.runner import FakeRunner
    from fiovpn.cli import client as client_cli

    monkeypatch.setenv("HOME", str(tmp_path))
    fake = FakeRunner()
    monkeypatch.setattr(client_cli, "runner", lambda: fake)
    result = CliRunner().invoke(cli, ["doctor", "--device", device, "--json"])
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout)["error"]["code"] == code
    assert fake.calls == [], "nothing was probed"


def test_client_init_in_device_space_warns_on_stderr_and_exits_0(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fiovpn.core.keys import KeyPair

    monkeypatch.setenv("HOME", str(tmp_path))
    result = CliRunner().invoke(cli, [
        "client", "init", "--server-endpoint", "198.18.0.1",
        "--server-public-key", str(KeyPair.generate().public), "--address", "10.42.42.5",
        "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["address"] == "10.42.42.5"
    assert "warning:" in result.stderr and "outside the client pool" in result.stderr
    assert "conflict with a device" in result.stderr
