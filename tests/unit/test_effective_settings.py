"""With no daemon running, the CLI applies with the settings the last daemon
recorded (``effective.json``), told apart from a settings-file edit made since.

Before, the recorded settings won whatever happened to server.toml after the
daemon started: a file edit (``allow-device-to-device = true``) was ignored by
every CLI apply until the next daemon start, and a moved subnet or interface was
applied with the old one without a word.

Fakes stand in for `wg`/`nft`; the files and locks are real.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from tests.unit.test_control import D2D, RunningDaemon, _ctx
from tests.unit.test_reconcile import FakeApi, FakeWg, env  # noqa: F401 - fixture

from fiovpn.core.keys import KeyPair
from fiovpn.errors import PermanentError
from fiovpn.services import server as svc
from fiovpn.settings import ServerSettings, server_overrides

Env = tuple[ServerSettings, FakeWg, FakeApi]


def _ran(settings: ServerSettings, fake: FakeWg, api: FakeApi,
         overrides: dict[str, object]) -> None:
    """A daemon ran with ``settings`` (``overrides`` from its command line), stopped."""
    running = RunningDaemon(settings, fake, api)
    running.daemon.overrides = dict(overrides)
    with running:
        pass


def _add(settings: ServerSettings, fake: FakeWg) -> dict[str, object]:
    return svc.ask(settings, "clients.add", {"public_key": str(KeyPair.generate().public)},
                   build=lambda s: _ctx(s, fake))


def _tables(fake: FakeWg, since: int) -> list[str]:
    return [r for r in fake.rulesets[since:] if "delete table" in r]


def test_a_settings_file_edit_since_the_daemon_started_is_applied_and_said(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    toml, fake, api = env
    _ran(toml, fake, api, overrides={})  # started from the file alone: no d2d
    edited = replace(toml, allow_device_to_device=True)  # then: the file says d2d
    before = len(fake.rulesets)
    answer = _add(edited, fake)
    assert answer["applied"]["by"] == "cli"  # type: ignore[index]
    tables = _tables(fake, before)
    assert tables and all(D2D in r for r in tables)  # was: the recorded "false"
    said = [r.getMessage() for r in caplog.records if "settings changed" in r.getMessage()]
    assert any("allow-device-to-device False -> True" in m and "as the daemon will" in m
               for m in said), said


def test_a_flag_on_the_daemons_command_line_is_kept(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    toml, fake, api = env
    _ran(replace(toml, allow_device_to_device=True), fake, api,
         overrides={"allow_device_to_device": True})
    before = len(fake.rulesets)
    _add(toml, fake)  # the file never said d2d: the flag still holds
    tables = _tables(fake, before)
    assert tables and all(D2D in r for r in tables)
    assert not [r for r in caplog.records if "settings changed" in r.getMessage()]


def test_an_interface_given_as_a_flag_is_not_taken_for_a_move(env: Env) -> None:  # noqa: F811
    toml, fake, api = env
    _ran(replace(toml, interface="fvflag0"), fake, api, overrides={"interface": "fvflag0"})
    answer = _add(toml, fake)
    assert answer["applied"]["by"] == "cli"  # type: ignore[index]
    assert any(c[:4] == ("wg", "set", "fvflag0", "peer") for c in fake.wg_sets)


@pytest.mark.parametrize("edit, word", [
    (dict(subnet="10.43.0.0/24"), "subnet 10.42.42.0/24 -> 10.43.0.0/24"),
    (dict(interface="fvother0"), "interface fvtest0 -> fvother0"),
    # was: "applying the current ones" said, then applied in the old state dir with
    # none of the file's edits (http, here)
    (dict(state_dir="<tmp>/moved", http="127.0.0.1:9999"), "state-dir"),
])
def test_a_move_of_the_live_state_is_refused_until_the_daemon_runs(
        env: Env, edit: dict[str, str], word: str, tmp_path: Path) -> None:  # noqa: F811
    toml, fake, api = env
    edit = {k: Path(v.replace("<tmp>", str(tmp_path))) if v.startswith("<tmp>") else v
            for k, v in edit.items()}
    _ran(toml, fake, api, overrides={})
    before, peers = len(fake.rulesets), dict(fake.peers)
    registry = toml.clients_file.read_bytes() if toml.clients_file.exists() else None
    with pytest.raises(PermanentError) as info:
        _add(replace(toml, **edit), fake)  # type: ignore[arg-type]
    assert info.value.code == "settings_changed" and word in info.value.message
    assert info.value.hint is not None and "start the daemon" in info.value.hint
    assert fake.rulesets[before:] == [] and fake.peers == peers
    assert (toml.clients_file.read_bytes() if toml.clients_file.exists() else None) == registry


def test_an_older_daemons_record_still_wins_as_before(env: Env) -> None:  # noqa: F811
    """effective.json without ``overrides`` (an older daemon): flags and file edits
    cannot be told apart, so the record is applied as it always was."""
    toml, fake, api = env
    _ran(replace(toml, allow_device_to_device=True), fake, api, overrides={})
    doc = toml.state_dir / "effective.json"
    data = json.loads(doc.read_text())
    del data["overrides"]
    doc.write_text(json.dumps(data))
    assert svc.effective_settings(toml).allow_device_to_device is True


def test_server_overrides_are_the_flags_and_env_given() -> None:
    flags = {"state_dir": Path("/srv/state"), "interface": None,
             "allow_device_to_device": True, "once": True}
    assert server_overrides(flags, env={"FIOVPN_FACTORY": "acme", "FIOVPN_JOURNAL": "x"}) == {
        "state_dir": "/srv/state", "allow_device_to_device": True, "factory": "acme"}


# --- the daemon read another settings file than the CLI ----------------------------------


def _ran_from(settings: ServerSettings, fake: FakeWg, api: FakeApi, settings_file: Path
              ) -> None:
    """A daemon ran with ``settings``, all of them from ``settings_file`` (its
    `--config`), stopped."""
    running = RunningDaemon(settings, fake, api)
    running.daemon.overrides = {}
    running.ctx.state.settings_file = str(settings_file)
    with running:
        pass


def test_a_cli_reading_another_settings_file_applies_the_daemons_settings(
        env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    """The daemon runs with `--config acme.toml` (d2d on there); an admin forgets
    `--config`: the default file says nothing of d2d. That is not an edit since the
    daemon started: the CLI must not drop the d2d rule from the live table."""
    toml, fake, api = env
    _ran_from(replace(toml, allow_device_to_device=True), fake, api, tmp_path / "acme.toml")
    assert json.loads((toml.state_dir / "effective.json").read_text())["settings_file"] == \
        str(tmp_path / "acme.toml")  # recorded by the daemon
    before = len(fake.rulesets)
    answer = svc.ask(toml, "clients.add", {"public_key": str(KeyPair.generate().public)},
                     build=lambda s: _ctx(s, fake), settings_file=tmp_path / "server.toml")
    assert answer["applied"]["by"] == "cli"
    tables = _tables(fake, before)
    assert tables and all(D2D in r for r in tables)  # was: dropped
    said = [r.getMessage() for r in caplog.records if "read its settings from" in r.getMessage()]
    assert said and f"--config {tmp_path / 'acme.toml'}" in said[0]


def test_another_settings_file_is_not_refused_as_a_move(
        env: Env, tmp_path: Path) -> None:  # noqa: F811
    toml, fake, api = env
    _ran_from(replace(toml, subnet="10.50.0.0/24"), fake, api, tmp_path / "acme.toml")
    answer = svc.ask(toml, "clients.add", {"public_key": str(KeyPair.generate().public)},
                     build=lambda s: _ctx(s, fake), settings_file=tmp_path / "server.toml")
    # was: refused as "settings changed since the daemon ...: subnet ... -> ..."
    assert answer["entry"]["ip"].startswith("10.50.0.")


def test_an_edit_of_the_daemons_own_settings_file_is_still_applied(
        env: Env, tmp_path: Path) -> None:  # noqa: F811
    toml, fake, api = env
    _ran_from(toml, fake, api, tmp_path / "server.toml")
    before = len(fake.rulesets)
    svc.ask(replace(toml, allow_device_to_device=True), "clients.add",
            {"public_key": str(KeyPair.generate().public)}, build=lambda s: _ctx(s, fake),
            settings_file=tmp_path / "." / "server.toml")  # the same file
    tables = _tables(fake, before)
    assert tables and all(D2D in r for r in tables)


def test_server_daemon_records_the_settings_file_it_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from fiovpn.cli import server as cli_server
    from fiovpn.cli.main import cli

    config = tmp_path / "acme.toml"
    config.write_text(f'state-dir = "{tmp_path}/state"\nfactory = "acme"\n')
    seen: list[str | None] = []

    class Daemon:
        def __init__(self, ctx: svc.ServerContext, **_kw: object) -> None:
            self.ctx = ctx

        def run(self, *, once: bool = False) -> int:
            seen.append(self.ctx.state.settings_file)
            return 0

    monkeypatch.setattr(cli_server.service, "Daemon", Daemon)
    monkeypatch.setattr(cli_server.service, "build_api", lambda _s: None)
    out = CliRunner().invoke(cli, ["server", "--config", str(config), "daemon", "--once"])
    assert out.exit_code == 0, out.output
    assert seen == [str(config.absolute())]


@pytest.mark.parametrize("args", [
    ("clients", "add", "--public-key", str(KeyPair.generate().public)),
    ("access", "grant", "--name", "bob", "--device", "dev-a", "--for", "1h"),
    ("admins", "remove", "--name", "bob"),
])
def test_every_change_command_says_which_settings_file_it_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]) -> None:
    from click.testing import CliRunner

    from fiovpn.cli.main import cli
    from fiovpn.services import server as service

    config = tmp_path / "acme.toml"
    config.write_text(f'state-dir = "{tmp_path}/state"\n')
    seen: list[object] = []

    def ask(*_a: object, settings_file: object = None, **_kw: object) -> dict[str, object]:
        seen.append(settings_file)
        raise PermanentError("stop here", code="test")

    monkeypatch.setattr(service, "ask", ask)
    out = CliRunner().invoke(cli, ["server", *args, "--config", str(config)])
    assert out.exit_code == 1, out.output
    assert seen == [config.absolute()]
