"""`server clients add/renew --groups/--expires`, `server access`, `server journal`
through the CLI (no interface: nothing live): bad input is exit 2 and leaves the
registry and the grants byte-identical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fiovpn.cli.main import cli
from fiovpn.core.keys import KeyPair

KEY = str(KeyPair.generate().public)


def run(config: Path, *args: str) -> tuple[int, object]:
    result = CliRunner().invoke(cli, ["server", "--config", str(config), *args, "--json"])
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else None


def test_add_with_groups_and_expires_then_renew_and_journal(config: Path) -> None:
    code, data = run(config, "clients", "add", "--public-key", KEY, "--name", "eng",
                     "--groups", "lab", "--expires", "1h")
    assert code == 0, data
    assert isinstance(data, dict) and data["groups"] == ["lab"] and data["expires"]
    code, data = run(config, "clients", "list")
    assert isinstance(data, list) and data[0]["expired"] is False
    code, data = run(config, "clients", "renew", "--name", "eng", "--expires",
                     "2031-01-01T00:00:00Z")
    assert code == 0 and isinstance(data, dict) and data["expires"] == "2031-01-01T00:00:00Z"
    code, lines = run(config, "journal")
    assert isinstance(lines, list)
    assert [ln["action"] for ln in lines] == ["client_add", "renew"]
    assert lines[0]["target"] == "eng" and lines[0]["actor"].startswith("local:")
    code, lines = run(config, "journal", "--action", "renew", "--since", "1h")
    assert isinstance(lines, list) and len(lines) == 1


def test_grant_list_revoke(config: Path) -> None:
    run(config, "clients", "add", "--public-key", KEY, "--name", "eng", "--groups", "lab")
    code, data = run(config, "access", "grant", "--name", "eng", "--group", "prod",
                     "--for", "5m")
    assert code == 0 and isinstance(data, dict)
    assert data["client"] == "eng" and data["group"] == "prod" and data["device"] is None
    code, data = run(config, "access", "grant", "--public-key", KEY, "--device", "prod-1",
                     "--for", "30s")
    assert code == 0
    code, data = run(config, "access", "list")
    assert isinstance(data, list) and [(g["group"], g["device"]) for g in data] == [
        (None, "prod-1"), ("prod", None)]
    assert 0 < data[0]["remaining_s"] <= 30
    code, data = run(config, "access", "revoke", "--name", "eng", "--group", "prod")
    assert code == 0
    code, data = run(config, "access", "list")
    assert isinstance(data, list) and len(data) == 1
    code, data = run(config, "access", "revoke", "--name", "eng", "--group", "prod")
    assert code == 2


@pytest.mark.parametrize("args", [
    ("clients", "add", "--public-key", "K2", "--groups", "nosuch"),
    ("clients", "add", "--public-key", "K2", "--groups", "lab,,prod"),
    ("clients", "add", "--public-key", "K2", "--groups", "l;b"),
    ("clients", "add", "--public-key", "K2", "--expires", "5x"),
    ("clients", "add", "--public-key", "K2", "--expires", "2020-01-01T00:00:00Z"),
    ("clients", "renew", "--name", "ghost", "--expires", "1d"),
    ("clients", "renew", "--name", "eng", "--expires", "5x"),
    ("clients", "renew", "--name", "eng", "--expires", "2001-01-01T00:00:00Z"),
    ("access", "grant", "--name", "ghost", "--group", "lab", "--for", "5s"),
    ("access", "grant", "--name", "eng", "--group", "nosuch", "--for", "5s"),
    ("access", "grant", "--name", "eng", "--device", "nosuch", "--for", "5s"),
    ("access", "grant", "--name", "eng", "--group", "lab", "--for", "5x"),
    ("access", "grant", "--name", "eng", "--for", "5s"),
    ("access", "grant", "--name", "eng", "--group", "lab", "--device", "lab-1", "--for", "5s"),
    ("journal", "--since", "5x"),
])
def test_bad_input_exit_2_nothing_changed(config: Path, tmp_path: Path,
                                          args: tuple[str, ...]) -> None:
    run(config, "clients", "add", "--public-key", KEY, "--name", "eng")
    run(config, "access", "grant", "--name", "eng", "--group", "lab", "--for", "1h")
    registry = (tmp_path / "clients.conf").read_bytes()
    grants = (tmp_path / "state" / "grants.json").read_bytes()
    args = tuple(str(KeyPair.generate().public) if a == "K2" else a for a in args)
    code, data = run(config, *args)
    assert code == 2, data
    assert isinstance(data, dict) and data["error"]["message"]
    assert (tmp_path / "clients.conf").read_bytes() == registry
    assert (tmp_path / "state" / "grants.json").read_bytes() == grants


ED25519_BLOB = "AAAAC3NzaC1lZDI1NTE5AAAAIEgRWolI133SI96HChqDtP0gHavaQEIcuX/9yqLpBsHh"


@pytest.mark.parametrize("how", ["flag", "group-flag", "env"])
def test_an_admins_forced_command_names_the_settings_file_this_command_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    # sshd runs the forced command from elsewhere: a relative --config (or
    # $FIOVPN_SERVER_CONFIG) must be written as the absolute path of that file,
    # the same by `server admins add` and by `server ha-receive` (AdminKeys.of_server)
    monkeypatch.chdir(tmp_path)
    fib = tmp_path / "fib"
    fib.write_text("")  # the VIP is not here: a standby, as ha-receive runs on
    Path("server.toml").write_text(
        f'clients-file = "{tmp_path}/clients.conf"\ninterface = "fvnoexist0"\n'
        f'state-dir = "{tmp_path}/state"\nprivate-key = "{tmp_path}/server.key"\n'
        f'authorized-keys = "{tmp_path}/authorized_keys"\n')
    Path("alice.pub").write_text(f"ssh-ed25519 {ED25519_BLOB} alice\n")
    env: dict[str, str] = {}
    if how == "env":
        env["FIOVPN_SERVER_CONFIG"] = "server.toml"

    def server(command: tuple[str, ...], *args: str) -> list[str]:
        flag = ["--config", "server.toml"]
        if how == "group-flag":
            return ["server", *flag, *command, *args]
        return ["server", *command, *(flag if how == "flag" else []), *args]

    out = CliRunner(env=env).invoke(cli, server(("admins", "add"), "--ssh-public-key",
                                                "alice.pub", "--name", "alice"))
    assert out.exit_code == 0, out.output
    wanted = f"--config {tmp_path / 'server.toml'} admin-command --name alice\""
    assert wanted in (tmp_path / "authorized_keys").read_text()
    # the same line as the standby's `ha-receive` writes it from the active's copy
    Path("server.toml").write_text(Path("server.toml").read_text().replace(
        "authorized-keys", f'ha-vip = "198.18.0.3"\nlocal-addresses-file = "{fib}"\n'
        "authorized-keys").replace("authorized_keys", "authorized_keys.b"))
    wire = json.dumps({"sent": 1, "sender_role": "active", "endpoints": {},
                       "admins": [{"name": "alice", "key_type": "ssh-ed25519",
                                   "public_key": ED25519_BLOB}]})
    out = CliRunner(env=env).invoke(cli, server(("ha-receive",), "--json"), input=wire)
    assert out.exit_code == 0, out.output
    assert (tmp_path / "authorized_keys.b").read_text() == \
        (tmp_path / "authorized_keys").read_text()
