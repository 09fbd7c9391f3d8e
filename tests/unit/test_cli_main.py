from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from fiovpn.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out, err = capsys.readouterr()
    code = exc.value.code
    return (code if isinstance(code, int) else 1), out, err


def test_usage_error_with_json_is_exit_2_and_a_json_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "client", "init", "--bogus", "--json")
    assert code == 2
    assert json.loads(out) == {"error": {"code": "usage",
                                         "message": "No such option '--bogus'."}}
    assert "No such option '--bogus'" in err


def test_usage_error_without_json_keeps_stdout_clean(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "nosuch")
    assert (code, out) == (2, "")
    assert "No such command 'nosuch'" in err


def test_json_after_double_dash_belongs_to_the_remote_command(
        capsys: pytest.CaptureFixture[str]) -> None:
    from fiovpn.cli.main import _wants_json

    assert _wants_json(["ssh", "d1", "--json", "--", "x"])
    assert not _wants_json(["ssh", "d1", "--", "cat", "--json"])


def test_version_and_help_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--version")[0] == 0
    assert run(capsys, "server", "--help")[0] == 0


def test_json_before_the_subcommand_on_any_group(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "server", "--json", "clients", "list", "--config",
                       "/nonexistent/server.toml")
    assert code == 2
    assert json.loads(out)["error"]["code"] == "bad_setting"


def test_an_unexpected_os_error_is_one_clear_line_not_a_traceback() -> None:
    import click
    from click.testing import CliRunner

    from fiovpn.cli.output import Result, command

    @click.command()
    @command
    def broken() -> Result:
        raise PermissionError(13, "Permission denied", "/etc/fiovpn/server.key")

    result = CliRunner().invoke(broken, ["--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"error": {
        "code": "os_error", "message": "Permission denied: /etc/fiovpn/server.key"}}
    assert "Traceback" not in result.output


@pytest.mark.parametrize("argv, says, hint", [
    (["doctor", "--bogus"], "No such option '--bogus'", "Try 'fiovpn doctor --help'"),
    (["nosuch"], "No such command 'nosuch'", "Try 'fiovpn --help'"),
    (["server", "clients", "add"], "Missing option '--public-key'",
     "Try 'fiovpn server clients add --help'"),
    (["server", "clients", "add", "--json"], "Missing option '--public-key'",
     "Try 'fiovpn server clients add --help'"),
])
def test_a_usage_error_is_one_line_on_stderr(capsys: pytest.CaptureFixture[str],
                                             argv: list[str], says: str, hint: str) -> None:
    """SPEC 5: one clear line (click prints usage, a blank line and the error)."""
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith("error: ") and says in err and hint in err
    assert "Usage:" not in err
    if "--json" in argv:
        assert json.loads(out)["error"]["code"] == "usage"
    else:
        assert out == ""


def test_the_ssh_fast_path_takes_plain_calls_and_leaves_the_rest_to_the_full_cli() -> None:
    from fiovpn.entry import _ssh_args

    assert _ssh_args(["ssh", "device1"]) == ({}, "device1", [])
    assert _ssh_args(["ssh", "device1", "--", "sh", "-c", "exit 255"]) == (
        {}, "device1", ["sh", "-c", "exit 255"])
    assert _ssh_args(["ssh", "device1", "uname", "-a"]) == ({}, "device1", ["uname", "-a"])
    assert _ssh_args(["ssh", "--user", "root", "--timeout=5", "d", "--", "--json"]) == (
        {"user": "root", "timeout": "5"}, "d", ["--json"])
    for full in (["ssh"], ["ssh", "--help"], ["ssh", "--json", "d", "--", "id"],
                 ["ssh", "d", "--json", "--", "id"], ["ssh", "--user"],
                 ["ssh", "--user", "a", "--user", "b", "d"], ["ssh", "--bogus", "d"],
                 ["ssh", "--user", "root", "--", "id"], ["--json", "ssh", "d"],
                 ["ssh", "--timeout", "soon", "d", "--", "id"], []):
        assert _ssh_args(full) is None, full


@pytest.mark.parametrize(("argv", "code", "said"), [
    (["ssh", "--timeout", "0", "device1", "--", "true"], 2, "--timeout must be positive"),
    (["ssh", "dev;rm", "--", "true"], 2, "dev;rm"),
    (["ssh", "8.8.8.8", "--", "true"], 2, "is not a VPN address"),
])
def test_the_ssh_fast_path_refuses_bad_input_like_the_full_command(
        argv: list[str], code: int, said: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    from fiovpn.entry import _ssh_args, ssh_main

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr("subprocess.Popen", None)  # nothing may be run
    fast = _ssh_args(argv)
    assert fast is not None
    assert ssh_main(*fast) == code
    fast_err = capsys.readouterr().err
    assert fast_err.startswith("error: ") and said in fast_err and fast_err.count("\n") == 1
    with pytest.raises(SystemExit) as full:
        main(argv)
    assert full.value.code == code
    assert said in capsys.readouterr().err


def test_the_ssh_fast_path_loads_no_command_line_library(tmp_path: Path) -> None:
    """What makes it fast: `fiovpn ssh IP -- CMD` runs ssh without loading click, rich,
    the HTTP client or cryptography (ssh itself is a stand-in here that exits 0)."""
    import subprocess
    import sys
    import textwrap

    from fiovpn.core.keys import KeyPair

    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "ssh").symlink_to("/bin/true")
    conf = tmp_path / "wg0.conf"
    conf.write_text(f"[Interface]\nPrivateKey = {KeyPair.generate().private}\n"
                    "Address = 10.42.42.5/32\n\n[Peer]\n"
                    f"PublicKey = {KeyPair.generate().public}\n"
                    "Endpoint = 198.18.0.1:5555\nAllowedIPs = 10.42.42.0/24\n")
    code = textwrap.dedent("""
        import sys
        from fiovpn import entry
        code = entry.ssh_main(*entry._ssh_args(sys.argv[1:]))
        loaded = {m for m in sys.modules if sys.modules[m] is not None}
        heavy = sorted({m.split(".")[0] for m in loaded}
                       & {"click", "rich", "httpx", "cryptography", "yaml"})
        heavy += sorted(m for m in loaded if m.startswith("fiovpn.cli"))
        print(code, " ".join(heavy))
    """)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path),
           "FIOVPN_JOURNAL": str(tmp_path / "journal.jsonl")}
    out = subprocess.run([sys.executable, "-c", code, "ssh", "--config", str(conf),
                          "10.42.42.2", "--", "true"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0"], out.stdout


def _fast_path_home(tmp_path: Path, ssh_script: str,
                    monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, str], Path]:
    """A HOME with a client config, the device cache knowing device1 (10.42.42.7) and
    a stand-in ``ssh`` on PATH running ``ssh_script``; the environment to run in."""
    from fiovpn.adapters.factory_api import WireguardIp
    from fiovpn.core.keys import KeyPair
    from fiovpn.services import device_cache
    from fiovpn.settings import load_client

    bindir = tmp_path / "bin"
    bindir.mkdir()
    ssh = bindir / "ssh"
    ssh.write_text(f"#!/bin/sh\n{ssh_script}\n")
    ssh.chmod(0o755)
    conf = tmp_path / "wg0.conf"
    conf.write_text(f"[Interface]\nPrivateKey = {KeyPair.generate().private}\n"
                    "Address = 10.42.42.5/32\n\n[Peer]\n"
                    f"PublicKey = {KeyPair.generate().public}\n"
                    "Endpoint = 198.18.0.1:5555\nAllowedIPs = 10.42.42.0/24\n")
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path),
           "FIOVPN_JOURNAL": str(tmp_path / "journal.jsonl"),
           "FIOVPN_FACTORY": "lab", "FIOVPN_API_URL": "http://127.0.0.1:9/"}
    for name in list(os.environ):  # the cache is keyed on the environment it is made in
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    device_cache.store(load_client({"config": str(conf)}),
                       [WireguardIp("device1", IPv4Address("10.42.42.7"), True, None)])
    return env, conf


def test_the_ssh_fast_path_by_cached_name_loads_only_what_it_uses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`fiovpn ssh NAME` with the name in the device cache: no factory client, no fioctl
    parser, no hosts-file or WireGuard-config parser, no TOML reader (no settings file
    here), no logging, no OpenSSL (hashlib), no datetime. Each of these cost
    milliseconds of every call."""
    env, conf = _fast_path_home(tmp_path, 'echo "$@" > "$HOME/argv"', monkeypatch)
    code = textwrap.dedent("""
        import sys
        from fiovpn import entry
        code = entry.ssh_main(*entry._ssh_args(sys.argv[1:]))
        loaded = {m for m in sys.modules if sys.modules[m] is not None}
        unwanted = {"click", "rich", "httpx", "cryptography", "yaml", "logging", "tomllib",
                    "hashlib", "datetime",
                    "fiovpn.adapters.fioctl", "fiovpn.adapters.factory", "fiovpn.core.hosts",
                    "fiovpn.core.wgquick", "fiovpn.core.registry", "fiovpn.core.keys"}
        print(code, " ".join(sorted(loaded & unwanted)))
    """)
    out = subprocess.run([sys.executable, "-c", code, "ssh", "--config", str(conf),
                          "device1", "--", "true"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0"], out.stdout
    assert "10.42.42.7 true" in (tmp_path / "argv").read_text()  # the cached IP was used


def test_the_ssh_fast_path_exits_with_ssh_code_and_flushed_output(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the installed entry point (it leaves without interpreter clean-up): the
    remote command's exit code is fiovpn's, and what fiovpn itself printed arrives."""
    env, conf = _fast_path_home(tmp_path, 'printf out; printf err >&2; exit 7', monkeypatch)
    entry = [sys.executable, "-c", "from fiovpn.entry import main; main()"]
    out = subprocess.run([*entry, "ssh", "--config", str(conf), "device1", "--", "true"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (7, "out", "err")
    bad = subprocess.run([*entry, "ssh", "--config", str(conf), "nosuch", "--", "true"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2, bad  # bad input, as the full command says it
    assert bad.stderr.startswith("error: unknown device 'nosuch'"), bad.stderr
