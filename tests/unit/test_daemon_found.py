"""A running daemon is found by every CLI, whatever was only on its command line
(``run-dir`` announcements), so the CLI never writes live state next to it.

Before: a daemon given ``--state-dir`` only on its command line was not found by
a CLI reading ``server.toml``; the CLI took the lock of *its* state directory,
found no daemon and rewrote the interface and the nft table itself, with
``server.toml``'s settings (two writers, the device-to-device rule gone).

Fakes stand in for `wg`/`nft`; the sockets, locks, files and threads are real.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from tests.unit.test_control import D2D, RunningDaemon, _ctx
from tests.unit.test_reconcile import FakeApi, FakeWg, env  # noqa: F401 - fixture

from fiovpn.core.keys import KeyPair
from fiovpn.errors import PermanentError
from fiovpn.services import server as svc
from fiovpn.services.server.announce import RunDir, netns_id
from fiovpn.settings import ServerSettings

Env = tuple[ServerSettings, FakeWg, FakeApi]


def _command_line(toml: ServerSettings, tmp: Path) -> ServerSettings:
    """What the daemon runs with: server.toml plus `--state-dir X
    --allow-device-to-device` on its command line only."""
    return replace(toml, state_dir=tmp / "cmdline-state", allow_device_to_device=True)


def _toml_of(toml: ServerSettings, tmp: Path) -> Path:
    """server.toml with ``toml``'s settings (and none of a daemon's command line)."""
    config = tmp / "server.toml"
    config.write_text(
        f'factory = "acme"\ninterface = "{toml.interface}"\n'
        f'clients-file = "{toml.clients_file}"\nstate-dir = "{toml.state_dir}"\n'
        f'private-key = "{toml.private_key}"\nhosts-file = "{toml.hosts_file}"\n'
        f'ip-forward-file = "{toml.ip_forward_file}"\n')
    return config


def _whole_tables(fake: FakeWg, since: int = 0) -> list[str]:
    return [r for r in fake.rulesets[since:] if "delete table" in r]


def test_a_daemon_with_its_state_dir_only_on_its_command_line_is_asked(
        env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    toml, fake, api = env
    daemon_settings = _command_line(toml, tmp_path)
    key = str(KeyPair.generate().public)
    with RunningDaemon(daemon_settings, fake, api) as running:
        before = len(fake.rulesets)
        # (build: were the CLI to apply itself, it would do so on the fake too)
        answer = svc.ask(toml, "clients.add", {"public_key": key, "name": "alice"},
                         build=lambda s: _ctx(s, fake))
        assert answer["applied"]["by"] == "daemon"  # was "cli": a second writer
        assert key in fake.peers
        removed = svc.ask(toml, "clients.remove", {"public_key": key},
                          build=lambda s: _ctx(s, fake))
        assert removed["applied"]["by"] == "daemon" and key not in fake.peers
        assert running.thread.is_alive()
    # the rule the daemon has from its command line was never dropped by a CLI
    assert all(D2D in r for r in _whole_tables(fake, before))
    # the CLI took no lock and wrote no state in server.toml's state dir
    assert not toml.state_dir.exists()
    said = [r.getMessage() for r in caplog.records if "using it" in r.getMessage()]
    assert said and str(daemon_settings.state_dir) in said[0]


def test_after_that_daemon_stopped_the_cli_applies_with_its_recorded_settings(
        env: Env, tmp_path: Path) -> None:  # noqa: F811
    toml, fake, api = env
    with RunningDaemon(_command_line(toml, tmp_path), fake, api):
        pass
    before = len(fake.rulesets)
    key = str(KeyPair.generate().public)
    answer = svc.ask(toml, "clients.add", {"public_key": key}, build=lambda s: _ctx(s, fake))
    assert answer["applied"]["by"] == "cli" and answer["applied"]["firewall_applied"]
    tables = _whole_tables(fake, before)
    assert tables and all(D2D in r for r in tables)


def test_a_second_daemon_on_the_same_interface_is_refused_before_it_writes(
        env: Env, tmp_path: Path) -> None:  # noqa: F811
    toml, fake, api = env
    other = FakeWg()
    with RunningDaemon(toml, fake, api):
        second = svc.Daemon(_ctx(replace(toml, state_dir=tmp_path / "other-state"),
                                 other, api))
        with pytest.raises(PermanentError) as info:
            second.run(once=True)
    assert info.value.code == "daemon_running"
    assert f"interface {toml.interface}" in info.value.message
    assert other.rulesets == [] and other.wg_sets == []


def test_no_daemon_starts_writing_while_a_cli_applies_without_one(
        env: Env, tmp_path: Path) -> None:  # noqa: F811
    """The CLI found no daemon and applies: a daemon starting meanwhile (another
    state dir) waits for it instead of writing the same interface at once."""
    toml, fake, api = env
    daemon = svc.Daemon(_ctx(_command_line(toml, tmp_path), fake, api))
    codes: list[int] = []
    with RunDir(toml.run_dir).no_daemon_starts():
        thread = threading.Thread(target=lambda: codes.append(daemon.run(once=True)))
        thread.start()
        time.sleep(0.5)
        assert fake.rulesets == [] and daemon.passes == 0  # waiting, wrote nothing
    thread.join(timeout=10)
    assert codes == [0] and fake.rulesets


def test_a_stopped_or_killed_daemon_is_not_taken_for_a_running_one(
        env: Env, tmp_path: Path) -> None:  # noqa: F811
    toml, _fake, _api = env
    run = RunDir(toml.run_dir)
    with run.announce(toml, started_at="2026-01-01T00:00:00Z") as mine:
        (entry,) = run.entries()
        assert entry.running and entry.pid == mine.pid and entry.netns == netns_id()
        with run.no_daemon_starts():
            assert run.find(toml)[0] is not None
    (entry,) = run.entries()  # the lock went with the process: kill -9 is the same
    assert not entry.running
    with run.no_daemon_starts():
        running, last = run.find(toml)
    assert running is None and last is not None and last.settings == toml


def test_interface_and_table_are_matched_in_the_same_network_namespace_only(
        env: Env, tmp_path: Path) -> None:  # noqa: F811
    toml, _fake, _api = env
    run = RunDir(toml.run_dir)
    elsewhere = replace(toml, state_dir=tmp_path / "s2", clients_file=tmp_path / "c2")
    with run.announce(elsewhere, started_at="2026-01-01T00:00:00Z") as mine:
        data = json.loads(mine.path.read_text())
        mine.path.write_text(json.dumps({**data, "netns": "0:1"}))
        with run.no_daemon_starts():
            assert run.find(toml)[0] is None  # another namespace's interface
            shared_file = replace(toml, clients_file=elsewhere.clients_file)
            assert run.find(shared_file)[0] is not None  # a file is a file anywhere


def test_two_running_daemons_matching_one_cli_are_refused_naming_both(
        env: Env, tmp_path: Path) -> None:  # noqa: F811
    toml, _fake, _api = env
    run = RunDir(toml.run_dir)
    a = replace(toml, interface="fva0", nft_table="fva", clients_file=tmp_path / "a.conf")
    b = replace(toml, interface="fvb0", nft_table="fvb", state_dir=tmp_path / "b-state")
    cli = replace(toml, interface="fvb0")  # a's state dir, b's interface
    with (run.announce(a, started_at="1"), run.announce(b, started_at="2"),
          pytest.raises(PermanentError) as info):
        svc.ask(cli, "clients.add", {"public_key": str(KeyPair.generate().public)})
    assert info.value.code == "daemons_ambiguous"
    assert str(tmp_path / "b-state") in info.value.message
    assert not (tmp_path / "a.conf").exists() and not toml.clients_file.exists()


def test_the_cli_reads_and_changes_through_that_daemon(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """`server status`, `clients add/list`, `access grant/list` and `journal` through
    the real CLI, with a server.toml that does not have the daemon's --state-dir."""
    from click.testing import CliRunner

    from fiovpn.cli.main import cli

    toml, fake, api = env
    config = _toml_of(toml, tmp_path)
    monkeypatch.setenv("FIOVPN_RUN_DIR", str(toml.run_dir))

    def run(*args: str) -> object:
        result = CliRunner().invoke(cli, ["server", "--config", str(config), *args, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    key = str(KeyPair.generate().public)
    with RunningDaemon(_command_line(toml, tmp_path), fake, api):
        status = run("status")
        assert isinstance(status, dict) and status["daemon_running"] is True
        run("clients", "add", "--public-key", key, "--name", "bob")
        assert key in fake.peers
        listed = run("clients", "list")
        assert isinstance(listed, list) and [e["name"] for e in listed] == ["bob"]
        grant = run("access", "grant", "--name", "bob", "--device", "dev-a", "--for", "1h")
        assert isinstance(grant, dict) and grant["device"] == "dev-a"
        grants = run("access", "list")  # read from the daemon's state dir
        assert isinstance(grants, list) and [g["device"] for g in grants] == ["dev-a"]
        journal = run("journal")  # the daemon's journal, where the ops wrote
        assert isinstance(journal, list)
        assert [ln["action"] for ln in journal if ln["target"] == "bob"] == ["client_add", "grant"]
    assert all(D2D in r for r in _whole_tables(fake))
    assert not toml.state_dir.exists()


def test_a_daemon_writing_into_a_named_namespace_is_matched_there(
        env: Env, tmp_path: Path) -> None:  # noqa: F811
    """A daemon whose runner enters `ip netns` NAME owns the interface there, not
    one of that name in the CLI's own namespace."""
    toml, _fake, _api = env
    run = RunDir(toml.run_dir)
    theirs = replace(toml, state_dir=tmp_path / "s2", clients_file=tmp_path / "c2")
    with run.announce(theirs, started_at="1", netns="fvnotthere") as entry:
        assert entry.netns == netns_id("fvnotthere") != netns_id()
        with run.no_daemon_starts():
            assert run.find(toml)[0] is None
            assert run.find(replace(toml, state_dir=theirs.state_dir))[0] is not None


def test_a_refused_admin_command_is_journaled_where_that_daemon_journals(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from click.testing import CliRunner

    from fiovpn.cli.main import cli
    from fiovpn.services.journal import Journal

    toml, _fake, _api = env
    config = tmp_path / "server.toml"
    config.write_text(f'interface = "{toml.interface}"\nstate-dir = "{toml.state_dir}"\n'
                      f'clients-file = "{toml.clients_file}"\n')
    monkeypatch.setenv("FIOVPN_RUN_DIR", str(toml.run_dir))
    daemon = _command_line(toml, tmp_path)
    with RunDir(toml.run_dir).announce(daemon, started_at="1"):
        out = CliRunner(env={"SSH_ORIGINAL_COMMAND": "id"}).invoke(
            cli, ["server", "--config", str(config), "admin-command", "--name", "mallory"])
    assert out.exit_code == 2, out.output
    (line,) = Journal.in_state_dir(daemon.state_dir).read(action="refused")
    assert line["actor"] == "mallory"
    assert not (toml.state_dir / "journal.jsonl").exists()


def test_the_host_run_dir_guard_sees_a_cli_lock_not_only_announcements(
        env: Env, tmp_path: Path) -> None:  # noqa: F811
    """conftest fails the run when a test writes to the host's /run/fiovpn: a CLI
    applying without a daemon (``ask``) takes ``daemons.lock`` there, with no
    announcement, and that must fail it too."""
    from tests.conftest import run_dir_entries, written_in_run_dir

    toml, fake, _api = env
    host = tmp_path / "host-run"  # stands in for /run/fiovpn
    before = run_dir_entries(str(host))
    assert before is None
    svc.ask(replace(toml, run_dir=host), "clients.add",
            {"public_key": str(KeyPair.generate().public)}, build=lambda s: _ctx(s, fake))
    assert not list(host.glob("daemon-*.json"))  # what the guard looked for alone
    assert written_in_run_dir(str(host), before) == [str(host), "daemons.lock"]
    assert written_in_run_dir(str(host), run_dir_entries(str(host))) == []


def test_server_health_checks_the_daemon_found_not_the_settings_files_state_dir(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    """keepalived's track_script (`server --config F health`, the fast path, and the
    full command) with the daemon's --state-dir only on its command line: it said
    "no daemon has run here" and made a serving server give up the VIP."""
    from click.testing import CliRunner

    from fiovpn import entry
    from fiovpn.cli.main import cli

    toml, fake, api = env
    config = tmp_path / "server.toml"
    config.write_text(f'interface = "{toml.interface}"\nstate-dir = "{toml.state_dir}"\n'
                      f'clients-file = "{toml.clients_file}"\n')
    monkeypatch.setenv("FIOVPN_RUN_DIR", str(toml.run_dir))
    with RunningDaemon(_command_line(toml, tmp_path), fake, api):
        entry.health_main(config, True)
        fast = json.loads(capsys.readouterr().out)
        full = CliRunner().invoke(cli, ["server", "--config", str(config), "health", "--json"])
    for data in (fast, json.loads(full.stdout)):
        checks = {c["name"]: c for c in data["checks"]}
        assert checks["daemon"]["ok"], checks["daemon"]  # was: no daemon has run here
        assert checks["last_sync"]["ok"], checks["last_sync"]
    assert not toml.state_dir.exists()  # nothing written where the daemon is not


def test_the_health_fast_path_finds_the_daemon_without_loading_the_server_package(
        tmp_path: Path) -> None:
    """keepalived runs `server health` every couple of seconds: looking in run-dir must
    not bring in the daemon, the reconcile or the factory client."""
    import subprocess
    import sys
    import textwrap

    config = tmp_path / "server.toml"
    config.write_text(f'state-dir = "{tmp_path}/state"\nrun-dir = "{tmp_path}/run"\n'
                      'interface = "fvnoexist0"\n')
    (tmp_path / "run").mkdir()  # a run dir to look in
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from fiovpn import entry
        entry.health_main(Path({str(config)!r}), True)
        loaded = sorted(m for m in sys.modules if m.startswith("fiovpn.services.server")
                        or m in ("click", "rich", "httpx", "fiovpn.services.state"))
        print("LOADED", " ".join(loaded), file=sys.stderr)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert "LOADED" in out.stderr, out.stderr
    assert out.stderr.split("LOADED", 1)[1].split() == [], out.stderr


def test_with_that_daemon_stopped_a_change_is_read_back_where_it_was_made(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """No daemon runs: `access grant` and `clients add` apply with the last daemon's
    recorded settings (its --state-dir); `access list` and `journal` read there too
    (they read server.toml's state dir: a grant just made was not listed)."""
    from click.testing import CliRunner

    from fiovpn.cli.main import cli

    toml, fake, api = env
    toml = replace(toml, interface="fvnoexist7")  # no such interface: nothing live here
    config = _toml_of(toml, tmp_path)
    monkeypatch.setenv("FIOVPN_RUN_DIR", str(toml.run_dir))
    with RunningDaemon(_command_line(toml, tmp_path), fake, api):
        pass

    def run(*args: str) -> object:
        result = CliRunner().invoke(cli, ["server", "--config", str(config), *args, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    run("clients", "add", "--public-key", str(KeyPair.generate().public), "--name", "bob")
    run("access", "grant", "--name", "bob", "--device", "dev-a", "--for", "1h")
    grants = run("access", "list")
    assert isinstance(grants, list) and [g["device"] for g in grants] == ["dev-a"]  # was []
    journal = run("journal")
    assert isinstance(journal, list)
    assert [ln["action"] for ln in journal if ln["target"] == "bob"] == ["client_add", "grant"]
    assert not (toml.state_dir / "grants.json").exists()


def test_the_actives_copy_goes_where_the_standby_daemon_reads_it(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """`server ha-receive` (the active's copy, over SSH) and `ha-notify` (keepalived) on
    a standby whose daemon has --state-dir on its command line only: the endpoints
    went into server.toml's state dir, where that daemon never looks (a takeover then
    had no endpoint to restore)."""
    from click.testing import CliRunner

    from fiovpn.cli.main import cli
    from fiovpn.core.ha import SyncMessage

    toml, _fake, _api = env
    fib = tmp_path / "fib_trie"
    fib.write_text("")  # not holding the VIP: the standby
    toml = replace(toml, ha_vip="198.18.0.3", local_addresses_file=fib,
                   authorized_keys=tmp_path / "authorized_keys")
    config = tmp_path / "server.toml"
    config.write_text(f'interface = "{toml.interface}"\nstate-dir = "{toml.state_dir}"\n'
                      f'clients-file = "{toml.clients_file}"\nha-vip = "198.18.0.3"\n'
                      f'local-addresses-file = "{fib}"\n'
                      f'authorized-keys = "{toml.authorized_keys}"\n')
    monkeypatch.setenv("FIOVPN_RUN_DIR", str(toml.run_dir))
    daemon = _command_line(toml, tmp_path)
    key = str(KeyPair.generate().public)
    message = SyncMessage(time.time(), "active", {key: "198.18.0.9:4000"})
    with RunDir(toml.run_dir).announce(daemon, started_at="1"):
        got = CliRunner().invoke(cli, ["server", "--config", str(config), "ha-receive",
                                       "--json"], input=json.dumps(message.to_json()))
        assert got.exit_code == 0, got.output
        noted = CliRunner().invoke(cli, ["server", "--config", str(config), "ha-notify",
                                         "INSTANCE", "fiovpn", "BACKUP", "100"])
        assert noted.exit_code == 0, noted.output
    from fiovpn.services.ha import HaFiles

    files = HaFiles(daemon.state_dir)
    assert files.endpoints()["endpoints"] == {key: "198.18.0.9:4000"}
    assert files.state()["vrrp_state"] == "BACKUP"
    assert not toml.state_dir.exists()


@pytest.mark.parametrize("args", [
    ("clients", "add", "--public-key", str(KeyPair.generate().public)),
    ("access", "grant", "--name", "bob", "--device", "dev-a", "--for", "1h"),
    ("admins", "remove", "--name", "bob"),
])
def test_an_admin_over_ssh_is_named_from_the_daemons_registry(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        args: tuple[str, ...]) -> None:
    """The journal's actor for a change made over SSH is the registry name of the
    session's VPN address: from the registry of the daemon found (its --clients-file
    only on its command line), not server.toml's."""
    from click.testing import CliRunner

    from fiovpn.cli.main import cli

    toml, _fake, _api = env
    daemon = replace(_command_line(toml, tmp_path), clients_file=tmp_path / "cmdline.conf")
    daemon.clients_file.write_text(f"{KeyPair.generate().public} 10.42.42.200 alice\n")
    config = tmp_path / "server.toml"
    config.write_text(f'interface = "{toml.interface}"\nstate-dir = "{toml.state_dir}"\n'
                      f'clients-file = "{toml.clients_file}"\n')
    monkeypatch.setenv("FIOVPN_RUN_DIR", str(toml.run_dir))
    monkeypatch.setenv("SSH_CONNECTION", "10.42.42.200 40000 10.42.42.1 5025")
    monkeypatch.delenv("FIOVPN_ADMIN", raising=False)
    seen: list[object] = []

    def ask(_settings: object, _op: str, params: dict[str, object], **_kw: object
            ) -> dict[str, object]:
        seen.append(params["actor"])
        raise PermanentError("stop here", code="test")

    monkeypatch.setattr(svc, "ask", ask)
    with RunDir(toml.run_dir).announce(daemon, started_at="1"):
        out = CliRunner().invoke(cli, ["server", *args, "--config", str(config)])
    assert out.exit_code == 1, out.output
    assert seen == ["alice"]  # was: ssh:10.42.42.200
