"""Section 11 core: registry attributes, durations, grants, the journal, the
admins' forced command and authorized_keys, the access rules (pure parts)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from ipaddress import IPv4Address as A
from pathlib import Path

import pytest

from fiovpn.core.forced import parse_forced_command
from fiovpn.core.grants import Grant, upsert
from fiovpn.core.keys import KeyPair
from fiovpn.core.peers import Peer
from fiovpn.core.registry import Registry
from fiovpn.core.timespec import parse_duration, parse_expiry, parse_timestamp
from fiovpn.errors import BadInput, Conflict, NotFound
from fiovpn.services.access import access_rules, earliest_end
from fiovpn.services.admins import AdminKeys
from fiovpn.services.grants import GrantStore
from fiovpn.services.journal import Journal, actor_from_env

K1, K2, K3 = (KeyPair.generate().public for _ in range(3))
NOW = 1_800_000_000


# --------------------------------------------------------------------------- timespec


@pytest.mark.parametrize(("text", "seconds"), [("5s", 5), ("10m", 600), ("1h30m", 5400),
                                                ("7d", 604800), ("2w", 1209600)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5x", "", "5", "-5s", "0s", "s", "5 s", "1.5h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(BadInput):
        parse_duration(text)


def test_expiry_from_duration_or_timestamp_never_in_the_past() -> None:
    assert parse_expiry("3s", NOW) == NOW + 3
    assert parse_expiry("2030-01-01T00:00:00Z", NOW) == parse_timestamp("2030-01-01T00:00:00Z")
    with pytest.raises(BadInput, match="past"):
        parse_expiry("2020-01-01T00:00:00Z", NOW)
    with pytest.raises(BadInput):
        parse_expiry("tomorrow", NOW)


# --------------------------------------------------------------------------- registry


DOC = (f"# team\n{K1} 10.42.42.200 alice groups=lab,field expires=2030-01-01T00:00:00Z\n"
       f"{K2} 10.42.42.201 bob   team=red   # contractor\n"
       f"{K3} 10.42.42.202 carol groups=lab,\n")


def test_attributes_parsed_and_unknown_ones_kept_and_reported() -> None:
    reg = Registry.parse(DOC)
    alice, bob = reg.entries
    assert alice.groups == ("lab", "field")
    assert alice.expires == parse_timestamp("2030-01-01T00:00:00Z")
    assert bob.groups is None and bob.extra == (("team", "red"),)
    assert [n.line for n in reg.notes] == [3] and "team" in reg.notes[0].message
    assert [p.line for p in reg.problems] == [4]  # bad groups=: the line is skipped
    assert reg.render() == DOC


def test_a_line_without_attributes_means_what_it_did() -> None:
    reg = Registry.parse(f"{K1} 10.42.42.200 alice\n{K2} 10.42.42.201\n")
    assert [(e.groups, e.expires) for e in reg.entries] == [(None, None), (None, None)]


def test_renew_rewrites_only_the_expires_token() -> None:
    reg = Registry.parse(DOC)
    new, changed = reg.set_expires(NOW, name="bob")
    lines = new.render().splitlines()
    assert lines[2] == f"{K2} 10.42.42.201 bob team=red expires=2027-01-15T08:00:00Z   " \
                       "# contractor"
    assert changed[0].expires == NOW and changed[0].extra == (("team", "red"),)
    assert new.render().splitlines()[:2] == DOC.splitlines()[:2]
    again, _ = new.set_expires(NOW + 60, name="alice")
    assert "expires=2027-01-15T08:01:00Z" in again.render().splitlines()[1]
    with pytest.raises(NotFound):
        reg.set_expires(NOW, name="nobody")


def test_entry_json_and_expired() -> None:
    alice = Registry.parse(DOC).entries[0]
    assert alice.to_json(NOW)["expired"] is False
    assert alice.to_json(parse_timestamp("2030-01-01T00:00:00Z"))["expired"] is True
    assert alice.to_json()["groups"] == ["lab", "field"]


# --------------------------------------------------------------------------- grants


def test_grant_store_round_trip_prunes_ended_and_is_private(tmp_path: Path) -> None:
    store = GrantStore(tmp_path / "grants.json")
    g1 = Grant(K1, "alice", "prod", None, NOW + 5, NOW, "root")
    g2 = Grant(K1, "alice", None, "gw-1", NOW + 1, NOW, "root")
    store.update(lambda gs: upsert(upsert(gs, g1), g2), now=NOW)
    assert store.load() == [g1, g2]
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert store.live(NOW + 2) == [g1]
    store.update(lambda gs: gs, now=NOW + 2)  # the next write drops the ended one
    assert store.load() == [g1]
    longer = Grant(K1, "alice", "prod", None, NOW + 50, NOW, "root")
    assert store.update(lambda gs: upsert(gs, longer), now=NOW) == [longer]
    assert longer.to_json(NOW + 10) == {"client": "alice", "public_key": str(K1),
                                        "group": "prod", "device": None,
                                        "expires": "2027-01-15T08:00:50Z",
                                        "remaining_s": 40}


# --------------------------------------------------------------------------- journal


def test_journal_appends_private_lines_and_filters(tmp_path: Path) -> None:
    clock = iter([NOW, NOW + 100, NOW + 200]).__next__
    j = Journal(tmp_path / "sub" / "journal.jsonl", clock=lambda: float(clock()))
    j.append(actor="alice", action="grant", target="bob", detail={"group": "prod"})
    j.append(actor="daemon", action="expire", target="bob")
    j.append(actor="alice", action="grant", target="carol")
    assert stat.S_IMODE(os.stat(j.path).st_mode) == 0o600
    lines = [json.loads(t) for t in j.path.read_text().splitlines()]
    assert list(lines[0]) == ["at", "actor", "action", "target", "detail"]
    assert [ln["target"] for ln in j.read(action="grant")] == ["bob", "carol"]
    assert [ln["target"] for ln in j.read(since=NOW + 150)] == ["carol"]


def test_actor_from_forced_command_then_ssh_source_address() -> None:
    names = {"10.42.42.200": "alice"}
    assert actor_from_env({"FIOVPN_ADMIN": "root-less", "SSH_CONNECTION": "x"}, names) \
        == "root-less"
    assert actor_from_env({"SSH_CONNECTION": "10.42.42.200 5 10.42.42.1 5025"}, names) \
        == "alice"
    assert actor_from_env({"SSH_CONNECTION": "10.42.42.9 5 10.42.42.1 5025"}, names) \
        == "ssh:10.42.42.9"
    assert actor_from_env({}, names).startswith("local:")


# --------------------------------------------------------------------------- forced command


def test_forced_command_keeps_fiovpn_register_working() -> None:
    sent = ("'/opt/fiovpn/bin/fiovpn' 'server' 'clients' 'add' '--public-key' "
            f"'{K1}' '--ip' 'auto' '--name' 'eng1' '--groups' 'lab' '--json'")
    assert parse_forced_command(sent) == [
        "server", "clients", "add", "--public-key", str(K1), "--ip", "auto", "--name",
        "eng1", "--groups", "lab", "--json"]
    assert parse_forced_command("python3 -m fiovpn server journal --since=1h") == [
        "server", "journal", "--since", "1h"]
    assert parse_forced_command("sudo -n -- fiovpn server status --json") == [
        "server", "status", "--json"]


@pytest.mark.parametrize("sent", [
    None, "", "id", "sh", "bash -c id", "/bin/sh -c 'fiovpn server status'",
    "fiovpn server daemon", "fiovpn server admins add --name x --ssh-public-key /k",
    "fiovpn server clients add --name 'a;id'", "fiovpn server clients add --name '$(id)'",
    "fiovpn server clients add --name 'a b'", "fiovpn server clients add --name `id`",
    "fiovpn server clients list --config /etc/passwd", "fiovpn server clients list\nid",
    "fiovpn server clients add --name", "fiovpn server clients add --name --json",
    "fiovpn devices list", "fiovpn server clients add --name 'a|b'",
    "fiovpn server clients add --name \"unterminated",
])
def test_forced_command_refuses(sent: str | None) -> None:
    with pytest.raises(BadInput) as err:
        parse_forced_command(sent)
    assert err.value.code == "not_allowed"


# --------------------------------------------------------------------------- admins


def _ssh_key(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f",
                    str(path)], check=True, capture_output=True)
    return (tmp_path / f"{name}.pub").read_text()


def test_admins_add_list_remove_keep_other_lines(tmp_path: Path) -> None:
    ak = tmp_path / "authorized_keys"
    ak.write_text("# root's own key\nssh-ed25519 AAAAC3Nza root@laptop\n")
    keys = AdminKeys(ak, ["/usr/bin/fiovpn"], "/etc/fiovpn/server.toml")
    alice = _ssh_key(tmp_path, "alice")
    keys.add("alice", alice)
    line = ak.read_text().splitlines()[-1]
    assert line.startswith('command="/usr/bin/fiovpn server --config /etc/fiovpn/server.toml '
                           'admin-command --name alice",restrict ssh-ed25519 ')
    assert line.endswith(" fiovpn-admin:alice")
    assert stat.S_IMODE(os.stat(ak).st_mode) == 0o600
    assert [a.name for a in keys.list()] == ["alice"]
    with pytest.raises(Conflict):
        keys.add("alice", _ssh_key(tmp_path, "other"))
    with pytest.raises(Conflict):
        keys.add("alice2", alice)
    before = ak.read_bytes()
    for bad in ("", "not a key", 'command="sh" ' + alice, "ssh-ed25519 !!!"):
        with pytest.raises(BadInput):
            keys.add("bob", bad)
    with pytest.raises(BadInput):
        keys.add("b;ob", _ssh_key(tmp_path, "bob"))
    assert ak.read_bytes() == before
    keys.remove("alice")
    assert ak.read_text() == "# root's own key\nssh-ed25519 AAAAC3Nza root@laptop\n"
    with pytest.raises(NotFound):
        keys.remove("alice")


# --------------------------------------------------------------------------- rules


def test_access_rules_resolve_names_to_addresses() -> None:
    peers = [Peer("device", "lab-1", K3, A("10.42.42.2")),
             Peer("client", "alice", K1, A("10.42.42.200")),
             Peer("client", "bob", K2, A("10.42.42.201"))]
    reg = Registry.parse(f"{K1} 10.42.42.200 alice groups=lab expires=2030-01-01T00:00:00Z\n"
                         f"{K2} 10.42.42.201 bob\n")
    grants = [Grant(K2, "bob", None, "lab-1", NOW + 5), Grant(K2, "bob", "prod", None, NOW - 1)]
    rules = access_rules(peers, reg.entries, {"lab-1": "lab", "gone": "x"}, grants, NOW)
    assert rules.device_groups == {A("10.42.42.2"): "lab"}
    assert rules.client_groups == {A("10.42.42.200"): ("lab",)}
    assert rules.client_ends == {A("10.42.42.200"): parse_timestamp("2030-01-01T00:00:00Z")}
    assert rules.device_grants == ((A("10.42.42.201"), A("10.42.42.2"), NOW + 5),)
    assert rules.group_grants == ()
    assert earliest_end(reg.entries, NOW) == parse_timestamp("2030-01-01T00:00:00Z")


@pytest.mark.parametrize("kind", [("ed25519",), ("rsa", "-b", "2048"), ("ecdsa", "-b", "256"),
                                  ("ecdsa", "-b", "384"), ("ecdsa", "-b", "521")])
def test_every_key_ssh_keygen_makes_is_taken_and_its_truncation_refused(
        tmp_path: Path, kind: tuple[str, ...]) -> None:
    from fiovpn.core.sshkeys import check_public_key, parse_public_key

    path = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", *kind, "-N", "", "-C", "c", "-f", str(path)],
                   check=True, capture_output=True)
    text = (tmp_path / "k.pub").read_text()
    key_type, blob = parse_public_key(text)
    assert f"{key_type} {blob} c\n" == text
    # a blob cut short by a copy and paste (kept valid base64) is no key
    cut = blob[:len(blob) // 2 // 4 * 4]
    with pytest.raises(BadInput) as refused:
        check_public_key(key_type, cut)
    assert refused.value.code == "bad_ssh_key"
