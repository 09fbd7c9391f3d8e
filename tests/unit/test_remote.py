from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path

import pytest

from fiovpn.adapters.runner import Completed, FakeRunner
from fiovpn.adapters.ssh import SshOptions
from fiovpn.core.keys import KeyPair
from fiovpn.errors import (
    BadInput,
    Conflict,
    PermanentError,
    RemoteCommandError,
    TemporaryError,
)
from fiovpn.services import remote
from fiovpn.settings import ClientSettings

PUB = str(KeyPair.generate().public)
NO_SHARING = SshOptions()


def settings(**kw: object) -> ClientSettings:
    return ClientSettings(config=Path("/nonexistent/foundries.conf"), **kw)  # type: ignore[arg-type]


def remote_argv(call: tuple[tuple[str, ...], str | None]) -> list[str]:
    argv = call[0]
    assert argv[0] == "ssh" and argv[-3] == "--"
    return shlex.split(argv[-1])


def server(reply: object) -> FakeRunner:
    runner = FakeRunner()

    def answer(argv: Sequence[str], _i: str | None) -> Completed:
        if isinstance(reply, Completed):
            return Completed(tuple(argv), reply.returncode, reply.stdout, reply.stderr)
        return Completed(tuple(argv), 0, json.dumps(reply), "")

    runner.on("ssh", reply=answer)
    return runner


def test_register_runs_server_clients_add_and_parses_its_json() -> None:
    runner = server({"public_key": PUB, "ip": "10.42.42.200", "name": "alice"})
    data = remote.register(settings(), runner, public_key=PUB, name="alice",
                           options=NO_SHARING)
    assert data == {"public_key": PUB, "ip": "10.42.42.200", "name": "alice"}
    (call,) = runner.calls
    assert remote_argv(call) == ["fiovpn", "server", "clients", "add", "--public-key", PUB,
                                 "--ip", "auto", "--name", "alice", "--json"]
    argv = call[0]
    assert argv[argv.index("-p") + 1] == "5025"
    assert argv[argv.index("-l") + 1] == "root"
    assert argv[-2] == "10.42.42.1"


def test_server_ssh_and_command_settings() -> None:
    runner = server({"public_key": PUB, "ip": "10.42.42.201", "name": None})
    s = settings(server_ssh="admin@198.18.0.1:2222",
                 server_command="'/opt/fio vpn/bin/python' -m fiovpn")
    remote.register(s, runner, public_key=PUB, ip="10.42.42.201", options=NO_SHARING)
    (call,) = runner.calls
    words = remote_argv(call)
    assert words[:3] == ["sudo", "-n", "--"]  # not root: sudo -n, never a password
    assert words[3:6] == ["/opt/fio vpn/bin/python", "-m", "fiovpn"]
    assert words[-3:] == ["--ip", "10.42.42.201", "--json"]
    assert call[0][-2] == "198.18.0.1"


@pytest.mark.parametrize("kw", [
    {"public_key": "not-a-key"},
    {"public_key": PUB + "; reboot"},
    {"public_key": PUB, "name": "bob; rm -rf /"},
    {"public_key": PUB, "name": "$(id)"},
    {"public_key": PUB, "name": "a b"},
    {"public_key": PUB, "ip": "10.42.42.300"},
    {"public_key": PUB, "ip": "10.42.42.2;id"},
])
def test_bad_input_is_refused_before_any_ssh(kw: dict[str, str]) -> None:
    runner = server({})
    with pytest.raises(BadInput):
        remote.register(settings(), runner, options=NO_SHARING, **kw)
    assert runner.calls == []


def test_bad_server_settings_are_refused_before_any_ssh() -> None:
    runner = server({})
    for s in (settings(server_ssh="root@10.42.42.1;id:5025"),
              settings(server_command="fiovpn 'unterminated")):
        with pytest.raises(BadInput):
            remote.register(s, runner, public_key=PUB, options=NO_SHARING)
    assert runner.calls == []


def test_server_error_comes_back_as_the_same_kind() -> None:
    body = json.dumps({"error": {"code": "ip_taken", "message": "10.42.42.200 is taken"}})
    runner = server(Completed((), 2, body, "error: 10.42.42.200 is taken"))
    with pytest.raises(Conflict, match=r"10\.42\.42\.200 is taken"):
        remote.register(settings(), runner, public_key=PUB, ip="10.42.42.200",
                        options=NO_SHARING)


def test_missing_server_command_says_use_server_command() -> None:
    runner = server(Completed((), 127, "", "bash: line 1: fiovpn: command not found"))
    with pytest.raises(RemoteCommandError) as exc:
        remote.register(settings(), runner, public_key=PUB, options=NO_SHARING)
    assert "--server-command" in str(exc.value)


def test_unreachable_server_is_temporary_with_next_step() -> None:
    runner = server(Completed((), 255, "", "ssh: connect to host 10.42.42.1 port 5025: "
                                           "Connection timed out"))
    with pytest.raises(TemporaryError) as exc:
        remote.register(settings(), runner, public_key=PUB, options=NO_SHARING)
    assert "fiovpn verify" in str(exc.value)


def test_non_json_answer() -> None:
    runner = server(Completed((), 0, "Registered!\n", ""))
    with pytest.raises(RemoteCommandError, match="did not answer JSON"):
        remote.register(settings(), runner, public_key=PUB, options=NO_SHARING)


def test_unregister_by_key_or_name() -> None:
    runner = server({"removed": True})
    remote.unregister(settings(), runner, name="alice", options=NO_SHARING)
    remote.unregister(settings(), runner, public_key=PUB, options=NO_SHARING)
    assert remote_argv(runner.calls[0])[3:6] == ["remove", "--name", "alice"]
    assert remote_argv(runner.calls[1])[3:6] == ["remove", "--public-key", PUB]
    for kw in ({}, {"name": "a", "public_key": PUB}, {"name": "a;b"}):
        with pytest.raises(BadInput):
            remote.unregister(settings(), runner, options=NO_SHARING, **kw)
    assert len(runner.calls) == 2


def test_check_registered_remote() -> None:
    answer = {"registered": True, "in_registry": True, "on_interface": True,
              "ip": "10.42.42.200"}
    runner = server(answer)
    data = remote.check_registered_remote(settings(), runner, public_key=PUB,
                                          options=NO_SHARING)
    assert data == {"public_key": PUB, **answer}
    assert remote_argv(runner.calls[0])[3:] == ["check", "--public-key", PUB, "--json"]


def test_sudo_password_names_a_rule_that_allows_every_registration() -> None:
    runner = server(Completed((), 1, "", "sudo: a password is required\n"))
    s = settings(server_ssh="admin@198.18.0.1:5025")
    with pytest.raises(PermanentError) as exc:
        remote.register(s, runner, public_key=PUB, name="alice", options=NO_SHARING)
    assert exc.value.code == "sudo_password"
    assert "admin ALL=(root) NOPASSWD: /usr/bin/fiovpn server clients *" in str(exc.value)
    assert PUB not in str(exc.value)  # not a rule for this one key only


@pytest.mark.parametrize("flag", ["identity_file", "known_hosts"])
def test_a_missing_ssh_file_is_bad_input_before_any_ssh(tmp_path: Path, flag: str) -> None:
    runner = server({"public_key": PUB, "ip": "10.42.42.200", "name": None})
    s = settings(**{flag: tmp_path / "missing"})
    with pytest.raises(BadInput, match="does not exist"):
        remote.register(s, runner, public_key=PUB)
    assert runner.calls == []
