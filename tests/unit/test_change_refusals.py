"""Bad input to `server clients renew`, `server access revoke` and `server admins
remove` (the ops ``clients.renew``, ``access.revoke``, ``admins.remove``): one clear
error, exit 2, and the registry, the grants, authorized_keys and the journal
byte-identical (SPEC 5: bad input changes nothing). No daemon runs here, so the CLI
runs each op in its own process, through the same ``ops.dispatch`` as the daemon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fiovpn.cli.main import cli
from fiovpn.core.keys import KeyPair
from fiovpn.errors import BadInput
from fiovpn.services.admins import AdminKeys
from fiovpn.services.server.ops import ask
from fiovpn.settings import load_server

KEY = str(KeyPair.generate().public)
STRANGER = str(KeyPair.generate().public)  # a well-formed key nobody registered
ED25519_BLOB = "AAAAC3NzaC1lZDI1NTE5AAAAIEgRWolI133SI96HChqDtP0gHavaQEIcuX/9yqLpBsHh"
SHELL = ("a;id", "$(id)", "`id`", "a b", "a|b", "../x", "a\nb", "", "-x")




def run(config: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["server", "--config", str(config), *args, "--json"])
    return result.exit_code, result.stdout, result.stderr


FILES = ("clients.conf", "state/grants.json", "authorized_keys", "state/journal.jsonl")


def on_disk(root: Path) -> dict[str, bytes | None]:
    return {name: (root / name).read_bytes() if (root / name).exists() else None
            for name in FILES}


def assert_refused(config: Path, tmp_path: Path, args: tuple[str, ...]) -> str:
    """Run ``args``: exit 2, one error (one JSON object on stdout, one line on
    stderr), every file as it was. The error's code."""
    before = on_disk(tmp_path)
    code, out, err = run(config, *args)
    assert code == 2, (args, out, err)
    data = json.loads(out)  # exactly one JSON document: the error
    assert set(data) == {"error"} and data["error"]["message"], data
    assert "\n" not in data["error"]["message"]
    assert [ln for ln in err.splitlines() if ln.strip()] == [f"error: {data['error']['message']}"
                                                             ], err
    assert on_disk(tmp_path) == before, args
    return str(data["error"]["code"])


@pytest.fixture
def server(config: Path, tmp_path: Path) -> Path:
    """A server with a client `eng`, a live grant of it to group lab, an admin alice
    and a root line of its own in authorized_keys (all of which must stay as they are)."""
    code, out, _ = run(config, "clients", "add", "--public-key", KEY, "--name", "eng",
                       "--expires", "1d")
    assert code == 0, out
    code, out, _ = run(config, "access", "grant", "--name", "eng", "--group", "lab",
                       "--for", "1h")
    assert code == 0, out
    (tmp_path / "authorized_keys").write_text("# root's own\nssh-ed25519 AAAAC3Nza root@x\n")
    key_file = tmp_path / "alice.pub"
    key_file.write_text(f"ssh-ed25519 {ED25519_BLOB} alice@laptop\n")
    code, out, _ = run(config, "admins", "add", "--ssh-public-key", str(key_file),
                       "--name", "alice")
    assert code == 0, out
    return config


# --------------------------------------------------------------------------- clients.renew


@pytest.mark.parametrize(("args", "code"), [
    (("--name", "ghost", "--expires", "1d"), "not_found"),
    (("--public-key", STRANGER, "--expires", "1d"), "not_found"),
    (("--public-key", "not-a-key", "--expires", "1d"), "bad_key"),
    (("--public-key", KEY[:-2], "--expires", "1d"), "bad_key"),
    (("--public-key", KEY + ";id", "--expires", "1d"), "bad_key"),
    (("--name", "eng", "--public-key", KEY, "--expires", "1d"), "usage"),
    (("--expires", "1d"), "usage"),
    (("--name", "eng", "--expires", "5x"), None),
    (("--name", "eng", "--expires", "2001-01-01T00:00:00Z"), None),
    (("--name", "eng", "--expires", "$(id)"), None),
    *((("--name", bad, "--expires", "1d"), "bad_name") for bad in SHELL),
])
def test_renew_refuses_bad_input(server: Path, tmp_path: Path, args: tuple[str, ...],
                                 code: str | None) -> None:
    got = assert_refused(server, tmp_path, ("clients", "renew", *args))
    if code is not None:
        assert got == code


# --------------------------------------------------------------------------- access.revoke


@pytest.mark.parametrize(("args", "code"), [
    (("--name", "ghost", "--group", "lab"), "no_client"),
    (("--public-key", STRANGER, "--group", "lab"), "no_client"),
    (("--public-key", "not-a-key", "--group", "lab"), "bad_key"),
    (("--public-key", KEY + "'", "--group", "lab"), "bad_key"),
    (("--name", "eng", "--group", "prod"), "no_grant"),  # a grant it never had
    (("--name", "eng", "--device", "lab-1"), "no_grant"),
    (("--name", "eng", "--device", "nosuch"), "no_grant"),
    (("--name", "eng"), "usage"),
    (("--name", "eng", "--group", "lab", "--device", "lab-1"), "usage"),
    (("--name", "eng", "--public-key", KEY, "--group", "lab"), "usage"),
    *((("--name", bad, "--group", "lab"), "bad_name") for bad in SHELL),
    *((("--name", "eng", "--group", bad), "bad_name") for bad in SHELL),
    *((("--name", "eng", "--device", bad), "bad_name") for bad in SHELL),
])
def test_revoke_refuses_bad_input(server: Path, tmp_path: Path, args: tuple[str, ...],
                                  code: str) -> None:
    assert assert_refused(server, tmp_path, ("access", "revoke", *args)) == code
    # and the grant it did not name is still there, as it was
    _, out, _ = run(server, "access", "list")
    assert [(g["client"], g["group"]) for g in json.loads(out)] == [("eng", "lab")]


def test_revoke_of_no_grant_writes_no_grants_file(config: Path, tmp_path: Path) -> None:
    # a server where nobody ever granted anything: revoking creates nothing
    run(config, "clients", "add", "--public-key", KEY, "--name", "eng")
    assert assert_refused(config, tmp_path, ("access", "revoke", "--name", "eng",
                                             "--group", "lab")) == "no_grant"
    assert not (tmp_path / "state" / "grants.json").exists()


def test_revoke_of_no_grant_leaves_other_grants_byte_identical(config: Path,
                                                               tmp_path: Path) -> None:
    # grants.json as another writer left it: an ended grant not yet swept and its own
    # layout. A refused revoke is no occasion to rewrite it.
    run(config, "clients", "add", "--public-key", KEY, "--name", "eng")
    (tmp_path / "state" / "grants.json").write_text(json.dumps({"version": 1, "grants": [
        {"client": KEY, "name": "eng", "group": "prod", "device": None, "end": 1000,
         "start": 900, "by": "alice"}]}))
    assert assert_refused(config, tmp_path, ("access", "revoke", "--name", "eng",
                                             "--group", "lab")) == "no_grant"


# --------------------------------------------------------------------------- admins.remove


@pytest.mark.parametrize(("name", "code"), [
    ("ghost", "not_found"), ("ALICE", "not_found"), ("alice2", "not_found"),
    *((bad, "bad_name") for bad in SHELL),
])
def test_admins_remove_refuses_bad_input(server: Path, tmp_path: Path, name: str,
                                         code: str) -> None:
    assert assert_refused(server, tmp_path, ("admins", "remove", "--name", name)) == code
    assert [a.name for a in AdminKeys(tmp_path / "authorized_keys", []).list()] == ["alice"]


def test_admins_remove_of_a_root_line_is_refused(server: Path, tmp_path: Path) -> None:
    # a key line without fiovpn's forced command is not an admin: never removed by name
    text = (tmp_path / "authorized_keys").read_text()
    (tmp_path / "authorized_keys").write_text(text + "ssh-ed25519 AAAAC3Nzb bob\n")
    assert assert_refused(server, tmp_path, ("admins", "remove", "--name", "bob")) \
        == "not_found"


def test_admins_remove_without_an_authorized_keys_file_creates_none(config: Path,
                                                                    tmp_path: Path) -> None:
    assert assert_refused(config, tmp_path, ("admins", "remove", "--name", "alice")) \
        == "not_found"
    assert not (tmp_path / "authorized_keys").exists()


# --------------------------------------------------------------------------- the ops themselves


@pytest.mark.parametrize(("op", "params"), [
    ("clients.renew", {"name": "eng"}),  # no expires
    ("clients.renew", {"name": 5, "expires": "1d"}),
    ("clients.renew", {"name": ["eng"], "expires": "1d"}),
    ("access.revoke", {"name": "eng", "group": 7}),
    ("access.revoke", {"name": {"eng": 1}, "group": "lab"}),
    ("admins.remove", {}),
    ("admins.remove", {"name": 5}),
    ("admins.remove", {"name": "alice", "program": "sh -c id"}),
    ("admins.remove", {"name": "alice", "program": []}),
])
def test_ops_refuse_malformed_params_from_any_socket_caller(
        server: Path, tmp_path: Path, op: str, params: dict[str, object]) -> None:
    # the control socket takes JSON from any local caller, not only this CLI
    before = on_disk(tmp_path)
    with pytest.raises(BadInput) as refused:
        ask(load_server({}, server), op, params)
    assert refused.value.exit_code == 2
    assert refused.value.code in ("bad_request", "usage"), refused.value
    assert on_disk(tmp_path) == before
