"""The engineer commands' command line: what a user types reaches the right place."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fiovpn.cli.main import cli
from fiovpn.services import device_access


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[list[str]]:
    """Record the command `fiovpn ssh` would run on the device (no SSH, no network)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    calls: list[list[str]] = []

    def run_on_device(_settings: Any, _runner: Any, device: str, command: list[str],
                      **_kw: Any) -> device_access.SshResult:
        calls.append(command)
        return device_access.SshResult(device, IPv4Address("10.42.42.2"), 0, "hi\n", "")

    monkeypatch.setattr(device_access, "run_on_device", run_on_device)
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


def test_ssh_json_without_a_command_is_a_usage_error(sent: list[list[str]]) -> None:
    result = CliRunner().invoke(cli, ["ssh", "device1", "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["code"] == "bad_usage"
    assert sent == []
