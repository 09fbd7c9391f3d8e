from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from fiovpn.adapters.runner import Completed, FakeRunner
from fiovpn.adapters.ssh import (
    RemoteError,
    SshClient,
    SshOptions,
    SshTarget,
    sudoers_line,
)
from fiovpn.errors import BadInput, PermanentError, TemporaryError


def client(user: str = "root", **opts: object) -> tuple[SshClient, FakeRunner]:
    runner = FakeRunner()
    options = SshOptions(**opts)  # type: ignore[arg-type]
    return SshClient(runner, SshTarget(user, "10.42.42.7", 22), options), runner


def remote_words(argv: tuple[str, ...] | list[str]) -> list[str]:
    """What the remote shell would see: the last argv item, split as a shell does."""
    assert argv[-3] == "--"
    return shlex.split(argv[-1])


def opts(argv: list[str] | tuple[str, ...]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]


def test_key_auth_only_and_host_keys_checked() -> None:
    ssh, _ = client(known_hosts=Path("/k/known_hosts"), identity_file=Path("/k/id"))
    argv = ssh.argv(["true"])
    o = opts(argv)
    assert "BatchMode=yes" in o
    assert "PasswordAuthentication=no" in o
    assert "KbdInteractiveAuthentication=no" in o
    assert "StrictHostKeyChecking=yes" in o
    assert "UserKnownHostsFile=/k/known_hosts" in o
    assert not any(x.startswith("StrictHostKeyChecking=") and x != "StrictHostKeyChecking=yes"
                   for x in o)
    assert argv[argv.index("-i") + 1] == "/k/id"
    assert argv[argv.index("-p") + 1] == "22"
    assert "sshpass" not in " ".join(argv)


def test_connection_sharing_uses_a_private_control_dir() -> None:
    ssh, _ = client(control_dir=Path("/run/user/0/fiovpn"))
    o = opts(ssh.argv(["true"]))
    assert "ControlMaster=auto" in o
    (path,) = [x for x in o if x.startswith("ControlPath=")]
    assert path.startswith("ControlPath=/run/user/0/fiovpn/") and path.endswith("-%C")
    assert any(x.startswith("ControlPersist=") for x in o)


def test_a_shared_connection_is_never_reused_under_other_trust_options() -> None:
    def control_path(**kw: object) -> str:
        ssh, _ = client(control_dir=Path("/run/fv"), **kw)
        return next(x for x in opts(ssh.argv(["true"])) if x.startswith("ControlPath="))

    base = control_path(known_hosts=Path("/a/known_hosts"))
    assert base == control_path(known_hosts=Path("/a/known_hosts"))
    assert base != control_path(known_hosts=Path("/b/known_hosts"))
    assert base != control_path(known_hosts=Path("/a/known_hosts"), identity_file=Path("/k"))


@pytest.mark.parametrize("arg", [
    "a b", "$(reboot)", "`id`", "x; rm -rf /", "a|b", "'quoted'", '"dq"', "back\\slash",
    "new\nline", "*", "~root", "&", "",
])
def test_remote_shell_interprets_no_argument(arg: str) -> None:
    ssh, runner = client()
    ssh.run(["printf", "%s", arg])
    argv = runner.calls[0][0]
    assert remote_words(argv) == ["printf", "%s", arg]


def test_host_cannot_be_an_option() -> None:
    with pytest.raises(BadInput):
        SshTarget.parse("root@-oProxyCommand=sh:22")
    with pytest.raises(BadInput):
        SshTarget.parse("-l@host")


def test_parse_targets() -> None:
    assert SshTarget.parse("root@10.42.42.1:5025") == SshTarget("root", "10.42.42.1", 5025)
    assert SshTarget.parse("10.42.42.1", default_port=5025) == SshTarget("root", "10.42.42.1",
                                                                        5025)
    assert SshTarget.parse("fio@[fd00::1]:2222") == SshTarget("fio", "fd00::1", 2222)
    for bad in ("root@host:0", "root@host:x", "ro ot@host", "root@ho;st", "@host"):
        with pytest.raises(BadInput):
            SshTarget.parse(bad)


def test_unsafe_extra_options_are_refused() -> None:
    for bad in ("StrictHostKeyChecking=no", "stricthostkeychecking = accept-new",
                "PasswordAuthentication=yes", "ProxyCommand=sh -c x", "BatchMode=no",
                # ssh also takes "Key Value", as in its config file
                "StrictHostKeyChecking no", "ProxyCommand sh -c x",
                "PasswordAuthentication\tyes", "LocalCommand id"):
        with pytest.raises(BadInput):
            SshOptions(extra=(bad,))
    SshOptions(extra=("ConnectionAttempts=2", "BatchMode=yes", "IdentitiesOnly=yes",
                      "PasswordAuthentication=no"))


def test_sudo_wraps_only_for_non_root() -> None:
    ssh, runner = client(user="fio")
    ssh.run(["cat", "/etc/x"], sudo=True)
    assert remote_words(runner.calls[0][0]) == ["sudo", "-n", "--", "cat", "/etc/x"]
    root, runner2 = client(user="root")
    root.run(["cat", "/etc/x"], sudo=True)
    assert remote_words(runner2.calls[0][0]) == ["cat", "/etc/x"]


def test_sudo_password_prompt_stops_with_the_sudoers_line() -> None:
    ssh, runner = client(user="fio")
    runner.on("ssh", reply=lambda a, i: Completed(tuple(a), 1, "",
                                                   "sudo: a password is required\n"))
    with pytest.raises(PermanentError) as exc:
        ssh.run(["nmcli", "connection", "reload"], sudo=True)
    msg = str(exc.value)
    assert "sudo wants a password: allow this command with NOPASSWD in sudoers" in msg
    assert "fio ALL=(root) NOPASSWD: /usr/bin/nmcli connection reload" in msg
    # exactly one attempt, and nothing that could carry a password
    assert len(runner.calls) == 1
    assert runner.calls[0][1] is None


def test_sudoers_line_escapes_special_characters() -> None:
    line = sudoers_line("fio", ["/bin/cat", "/etc/a b,c:d=e"])
    assert line == "fio ALL=(root) NOPASSWD: /bin/cat /etc/a\\ b\\,c\\:d\\=e"


@pytest.mark.parametrize(("stderr", "kind", "code"), [
    ("Host key verification failed.", PermanentError, "ssh_host_key"),
    ("root@10.42.42.7: Permission denied (publickey).", PermanentError, "ssh_auth"),
    ("ssh: connect to host 10.42.42.7 port 22: Connection timed out", TemporaryError,
     "ssh_unreachable"),
    ("ssh: connect to host 10.42.42.7 port 22: No route to host", TemporaryError,
     "ssh_unreachable"),
    ("something odd", TemporaryError, "ssh_failed"),
])
def test_ssh_failures_are_clear(stderr: str, kind: type[Exception], code: str) -> None:
    ssh, runner = client()
    runner.on("ssh", reply=lambda a, i: Completed(tuple(a), 255, "", stderr))
    with pytest.raises(kind) as exc:
        ssh.run(["true"], check=False)
    assert getattr(exc.value, "code", None) == code


def test_remote_failure_keeps_exit_code_and_output() -> None:
    ssh, runner = client()
    runner.on("ssh", reply=lambda a, i: Completed(tuple(a), 3, "out", "it broke"))
    assert ssh.run(["false"], check=False).returncode == 3
    with pytest.raises(RemoteError) as exc:
        ssh.run(["false"])
    assert exc.value.result.returncode == 3
    assert "it broke" in str(exc.value)


def test_stdin_goes_to_the_runner_not_argv() -> None:
    ssh, runner = client()
    secret = "private-key=SECRET"
    ssh.run(["install", "-m", "600", "/dev/stdin", "/x.tmp"], input=secret)
    argv, stdin = runner.calls[0]
    assert stdin == secret
    assert all("SECRET" not in a for a in argv)


def test_ssh_config_file_is_a_setting() -> None:
    default, _ = client()
    assert "-F" not in default.argv(["true"])
    isolated, _ = client(config_file=Path("/dev/null"))
    argv = isolated.argv(["true"])
    assert argv[argv.index("-F") + 1] == "/dev/null"


def test_control_socket_paths_stay_within_the_unix_socket_limit(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fiovpn.adapters.ssh import MAX_CONTROL_DIR, runtime_dir

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / ("x" * 80)))
    assert len(str(runtime_dir())) <= MAX_CONTROL_DIR
    too_long, _ = client(control_dir=Path("/" + "d" * 90))
    assert not any(o.startswith("ControlPath") for o in opts(too_long.argv(["true"])))
    short, _ = client(control_dir=Path("/run/fv"))
    assert any(x.startswith("ControlPath=/run/fv/") for x in opts(short.argv(["true"])))
