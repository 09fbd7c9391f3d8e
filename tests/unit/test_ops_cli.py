"""`server enable --http`, `server daemon --http` validation and `server status --watch`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from fiovpn.cli.main import cli
from fiovpn.cli.server import status_view
from fiovpn.cli.watch import watch
from fiovpn.services.server.setup import set_setting
from fiovpn.settings import ServerSettings, load


def _enable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: Path,
            *extra: str) -> Any:
    from tests.unit.test_reconcile import FakeApi

    from fiovpn.services import server as service

    monkeypatch.setattr(service, "build_api", lambda settings: FakeApi())
    # The unit goes to tmp_path through the real flag (patching the package's
    # unit_path never reached setup.py, and the unit landed in /etc/systemd/system).
    result = CliRunner().invoke(cli, [
        "server", "enable", "--config", str(config), "--factory", "acme",
        "--endpoint", "vpn.example.com", "--private-key", str(tmp_path / "server.key"),
        "--unit-dir", str(tmp_path / "units"), *extra, "--json"],
        env={"FIOVPN_API_TOKEN": ""})
    return result


def test_enable_http_writes_it_into_new_and_existing_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "server.toml"
    r = _enable(tmp_path, monkeypatch, config, "--http", "10.42.42.1:9100")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["http"] == "10.42.42.1:9100"
    settings = load(ServerSettings, toml_path=config, toml_required=True, flags={}, env={})
    assert settings.http == "10.42.42.1:9100"
    # an existing file: only the http line changes, the comment and the rest stay
    config.write_text("# mine\n" + config.read_text())
    r = _enable(tmp_path, monkeypatch, config, "--http", "10.42.42.1:9200")
    assert r.exit_code == 0, r.output
    text = config.read_text()
    assert text.startswith("# mine\n") and 'http = "10.42.42.1:9200"' in text
    assert text.count("http =") == 1 and oct(config.stat().st_mode & 0o777) == "0o600"


def test_enable_refuses_a_bad_http_and_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "server.toml"
    r = _enable(tmp_path, monkeypatch, config, "--http", "everywhere")
    assert r.exit_code == 2
    assert json.loads(r.stdout)["error"]["code"] == "bad_http_listen"
    assert not config.exists()


def test_daemon_refuses_a_bad_http(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'state-dir = "{tmp_path}/state"\n')
    r = CliRunner().invoke(cli, ["server", "daemon", "--config", str(config),
                                 "--http", "10.42.42.1:99999", "--json"])
    assert r.exit_code == 2 and "port" in json.loads(r.stdout)["error"]["message"]


def test_set_setting_appends_or_replaces(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('factory = "a"\n')
    path.chmod(0o640)
    assert set_setting(path, "http", "1.2.3.4:5")
    assert not set_setting(path, "http", "1.2.3.4:5")
    assert set_setting(path, "http", "1.2.3.4:6")
    assert path.read_text() == 'factory = "a"\nhttp = "1.2.3.4:6"\n'
    assert path.stat().st_mode & 0o777 == 0o640


STATUS: dict[str, Any] = {
    "factory": "lab", "interface": "factory", "server_address": "10.42.42.1", "port": 5555,
    "interface_up": True, "daemon_running": True, "last_sync": "s", "last_error": None,
    "conflicts": [], "skipped": [], "registry_problems": [], "peers": []}


def test_watch_redraws_until_ctrl_c() -> None:
    docs = iter(range(100))
    seen: list[int] = []

    def fetch() -> dict[str, Any]:
        n = next(docs)
        seen.append(n)
        peers = [{"kind": "device", "name": f"device{i}", "ip": f"10.42.42.{i + 2}",
                  "public_key": f"key{i}"} for i in range(n)]
        return {**STATUS, "peers": peers}

    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    console = Console(record=True, width=120, force_terminal=True)
    assert watch(fetch, status_view, interval=0.5, console=console, sleep=sleep,
                 clock=lambda: "12:00:00") == 0
    assert seen == [0, 1, 2] and sleeps == [0.5, 0.5, 0.5]
    out = console.export_text()
    assert "2 peers" in out and "device1" in out and "updated 12:00:00" in out


def test_watch_json_prints_one_document_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    n = [0]

    def sleep(_s: float) -> None:
        n[0] += 1
        if n[0] == 2:
            raise KeyboardInterrupt

    assert watch(lambda: {"n": n[0]}, status_view, interval=1, console=Console(),
                 as_json=True, sleep=sleep) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(x) for x in lines] == [{"n": 0}, {"n": 1}]


def test_status_watch_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fiovpn.cli import watch as watch_module

    calls: list[float] = []
    real = watch_module.watch

    def fake_sleep(seconds: float) -> None:
        calls.append(seconds)
        raise KeyboardInterrupt

    monkeypatch.setattr(watch_module, "watch",
                        lambda *a, **kw: real(*a, **kw, sleep=fake_sleep))
    config = tmp_path / "server.toml"
    config.write_text(f'interface = "fvnoexist0"\nstate-dir = "{tmp_path}/state"\n'
                      f'clients-file = "{tmp_path}/c.conf"\n')
    r = CliRunner().invoke(cli, ["server", "--config", str(config), "status", "--watch",
                                 "--every", "0.5"])
    assert r.exit_code == 0, r.output
    assert calls == [0.5] and "0 peers" in r.output
