"""Issue 9 items 5, 7, 8 and 9 through the CLI: `server enable --unit-dir`, a
loose --api-token-file, the `server status` table at 80 columns, low-order keys."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console
from tests.unit.test_reconcile import FakeApi, FakeWg, env  # noqa: F401 - fixture

from fiovpn.cli.main import cli
from fiovpn.cli.server import status_view
from fiovpn.core.factory_files import ClientConfigFile
from fiovpn.core.keys import Key, KeyPair
from fiovpn.core.registry import Registry
from fiovpn.errors import BadInput
from fiovpn.services import server as svc
from fiovpn.settings import ServerSettings

ZERO = "A" * 43 + "="
# order-8 point (RFC 7748 / libsodium list), and the all-zero point with the top bit set
LOW_ORDER = [ZERO, "4Ot6fDtBuK4WVuP68Z/EatoJjeucMrH9hmIFFl9JuAA=",
             "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAIA="]


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi()
    monkeypatch.setattr(svc, "build_api", lambda settings: fake)
    return fake


def enable(tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [
        "server", "enable", "--config", str(tmp_path / "etc" / "server.toml"),
        "--factory", "acme", "--endpoint", "vpn.example.com",
        "--private-key", str(tmp_path / "server.key"), *extra, "--json"],
        env={"FIOVPN_API_TOKEN": ""})
    return result.exit_code, result.stdout, result.stderr


# --------------------------------------------------------------------------- item 5


def test_enable_unit_dir_is_a_flag_written_to_the_settings_and_printed(
        tmp_path: Path, api: FakeApi) -> None:
    units = tmp_path / "units"
    code, out, _ = enable(tmp_path, "--unit-dir", str(units))
    assert code == 0, out
    data = json.loads(out)
    assert data["unit"] == str(units / "fiovpn-acme.service")
    assert (units / "fiovpn-acme.service").is_file()
    toml = (tmp_path / "etc" / "server.toml").read_text()
    assert f'unit-dir = "{units}"' in toml
    human = CliRunner().invoke(cli, [
        "server", "enable", "--config", str(tmp_path / "etc" / "server.toml"),
        "--factory", "acme", "--endpoint", "vpn.example.com",
        "--private-key", str(tmp_path / "server.key")], env={"FIOVPN_API_TOKEN": ""})
    assert human.exit_code == 0, human.output
    # the settings file now names the unit dir: a second enable writes there too
    assert f"Unit written to {units / 'fiovpn-acme.service'}" in " ".join(
        human.stdout.split())


def test_daemon_help_names_the_run_dir_setting_it_has_no_flag_for() -> None:
    """The setting that decides whether a CLI finds the daemon has no flag: the help
    page is where someone running `server daemon --state-dir X` learns of it."""
    result = CliRunner().invoke(cli, ["server", "daemon", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "run-dir" in text and "/run/fiovpn" in text and "$FIOVPN_RUN_DIR" in text
    assert "second daemon" in text


def test_enable_help_says_where_the_unit_goes() -> None:
    result = CliRunner().invoke(cli, ["server", "enable", "--help"])
    text = " ".join(result.stdout.split())
    assert "--unit-dir" in text and "/etc/systemd/system" in text


# --------------------------------------------------------------------------- item 7


def test_enable_refuses_a_token_file_others_can_read_unless_force(
        tmp_path: Path, api: FakeApi) -> None:
    token = tmp_path / "token"
    token.write_text("secret-token\n")
    token.chmod(0o644)
    code, out, _ = enable(tmp_path, "--api-token-file", str(token),
                          "--unit-dir", str(tmp_path / "units"))
    assert code == 2
    err = json.loads(out)["error"]
    assert err["code"] == "token_file_mode" and str(token) in err["message"]
    assert "chmod 600" in err["message"] + (err.get("hint") or "")
    assert api.patches == [] and not (tmp_path / "etc" / "server.toml").exists()
    code, out, _ = enable(tmp_path, "--api-token-file", str(token),
                          "--unit-dir", str(tmp_path / "units"), "--force")
    assert code == 0, out
    assert any(str(token) in w for w in json.loads(out)["warnings"])
    token.chmod(0o600)


def test_daemon_warns_about_a_token_file_others_can_read(
        env: tuple[ServerSettings, FakeWg, FakeApi],  # noqa: F811
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings, fake, api = env
    token = tmp_path / "token"
    token.write_text("secret-token\n")
    token.chmod(0o640)
    from dataclasses import replace

    settings = replace(settings, api_token_file=token)
    caplog.set_level(logging.WARNING, logger="fiovpn.server")
    ctx = svc.ServerContext.from_settings(settings, runner=fake.runner, api=api)
    assert svc.Daemon(ctx).run(once=True) == 0
    warned = [r.getMessage() for r in caplog.records if str(token) in r.getMessage()]
    assert warned and "chmod 600" in warned[0]
    assert "secret-token" not in caplog.text


# --------------------------------------------------------------------------- item 8


def test_status_table_never_cuts_ip_name_or_handshake_at_80_columns() -> None:
    peers = [{"kind": "client" if i % 2 else "device", "name": f"laptop-{i:02d}",
              "ip": f"10.42.42.{200 + i}", "public_key": str(KeyPair.generate().public),
              "latest_handshake": None, "rx": 1234, "tx": 98765}
             for i in range(5)]
    data = {"interface": "factory", "interface_up": True, "server_address": "10.42.42.1",
            "port": 5555, "factory": "acme", "daemon_running": True,
            "last_sync": "2026-12-01T00:00:00Z", "last_error": None, "peers": peers,
            "conflicts": [], "skipped": [], "registry_problems": []}
    console = Console(width=80, record=True, color_system=None)
    console.print(status_view(data))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    for p in peers:
        assert re.search(rf"\b{re.escape(p['ip'])}\b", text), text
        assert p["name"] in text, text
    cells = [line.split("│") for line in text.splitlines() if line.startswith("│")]
    assert not any("…" in c[i] for c in cells for i in (1, 2, 3, 5))  # kind name ip handshake
    assert [c[5].strip() for c in cells if c[5].strip()] == ["never"] * 5
    # the key column folds: each key is whole, read down its column
    column = "".join(c[4].strip() for c in cells)
    assert all(p["public_key"] in column for p in peers), text


# --------------------------------------------------------------------------- item 9


@pytest.mark.parametrize("key", LOW_ORDER)
def test_low_order_public_keys_are_refused_everywhere(key: str, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="low-order"):
        Key.parse_public(key)
    Key.parse(key)  # a well-formed base64 key as such: only peers' keys are judged
    line = Registry.parse(f"{key} 10.42.42.200 zero\n")
    assert line.entries == [] and "low-order" in line.problems[0].message
    with pytest.raises(BadInput):
        ClientConfigFile.parse(f"address=10.42.42.9\npubkey={key}")
    config = tmp_path / "server.toml"
    config.write_text(f'interface = "fvnoexist0"\nclients-file = "{tmp_path}/c.conf"\n'
                      f'state-dir = "{tmp_path}/state"\nprivate-key = "{tmp_path}/k"\n')
    result = CliRunner().invoke(cli, ["server", "--config", str(config), "clients", "add",
                                      "--public-key", key, "--json"])
    assert result.exit_code == 2 and json.loads(result.stdout)["error"]["code"] == "bad_key"
    assert not (tmp_path / "c.conf").exists()
    init = CliRunner().invoke(cli, ["client", "init", "--config", str(tmp_path / "w.conf"),
                                    "--address", "10.42.42.200", "--server-endpoint",
                                    "vpn.example.com:5555", "--server-public-key", key,
                                    "--json"], env={"HOME": str(tmp_path)})
    assert init.exit_code == 2 and not (tmp_path / "w.conf").exists()
