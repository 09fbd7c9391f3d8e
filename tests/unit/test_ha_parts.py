"""HA (SPEC 14) without a network: the VIP setting, roles from the namespace's own
addresses, the sync message, the firewall's VIP rules, the keepalived template,
the daemon's takeover/demotion steps and catch-up against a fake WireGuard and a
fake peer, health, and the CLI's bad input."""

from __future__ import annotations

import json
from collections.abc import Sequence
from ipaddress import IPv4Address as A
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fiovpn.adapters.runner import FakeRunner
from fiovpn.adapters.wireguard import WireGuard
from fiovpn.cli.main import cli
from fiovpn.core.addresses import VpnNetwork
from fiovpn.core.firewall import FirewallPolicy, render_ruleset
from fiovpn.core.ha import SyncMessage, journal_mark, local_ipv4, parse_vip, role_for
from fiovpn.core.keepalived import KeepalivedTemplate, render_keepalived
from fiovpn.core.keys import KeyPair
from fiovpn.entry import _health_args
from fiovpn.errors import BadInput, TemporaryError
from fiovpn.services import ha
from fiovpn.services.admins import AdminKeys
from fiovpn.services.health import health
from fiovpn.services.journal import Journal
from fiovpn.settings import ServerSettings

FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     +-- 198.18.0.0/24 2 0 2
        |-- 198.18.0.0
           /24 link UNICAST
        |-- 198.18.0.1
           /32 host LOCAL
        |-- 198.18.0.3
           /32 host LOCAL
        |-- 198.18.0.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
        |-- 198.18.0.1
           /32 host LOCAL
"""
NET = VpnNetwork.build("10.42.42.0/24", None, None)
K = [KeyPair.generate().public for _ in range(3)]
ED25519_BLOB = "AAAAC3NzaC1lZDI1NTE5AAAAIEgRWolI133SI96HChqDtP0gHavaQEIcuX/9yqLpBsHh"


def test_local_addresses_and_roles_from_fib_trie() -> None:
    local = local_ipv4(FIB_TRIE)
    assert local == {A("198.18.0.1"), A("198.18.0.3")}
    assert role_for(A("198.18.0.3"), local) == "active"
    assert role_for(A("198.18.0.9"), local) == "standby"
    assert role_for(None, local) == "single"


@pytest.mark.parametrize("text, word", [("nonsense", "expected the IPv4"),
                                        ("10.42.42.50", "inside the VPN subnet"),
                                        ("127.0.0.1", "cannot be a floating")])
def test_bad_vip_is_one_clear_error(text: str, word: str) -> None:
    with pytest.raises(BadInput) as err:
        parse_vip(text, NET)
    assert word in err.value.message and err.value.code == "bad_ha_vip"


def test_settings_refuse_bad_ha_values() -> None:
    with pytest.raises(BadInput):
        ServerSettings(ha_vip="10.42.42.9").validate()
    with pytest.raises(BadInput) as err:
        ServerSettings(ha_vip="198.18.0.3", ha_peer="root@-bad").validate()
    assert "--ha-peer" in err.value.message
    assert ServerSettings(ha_vip="198.18.0.3").validate().vip == A("198.18.0.3")


def test_sync_message_round_trip_and_refusals() -> None:
    msg = SyncMessage(1.5, "active", {str(K[0]): "198.18.0.10:51820"}, "x\n", "abc")
    assert SyncMessage.from_json(json.loads(json.dumps(msg.to_json()))) == msg
    for bad in ({"sent": 1, "sender_role": "boss", "endpoints": {}},
                {"sent": 1, "sender_role": "active", "endpoints": {"nokey": "1.2.3.4:5"}},
                {"sent": 1, "sender_role": "active", "endpoints": {str(K[0]): "1.2.3.4"}},
                [1, 2]):
        with pytest.raises(BadInput):
            SyncMessage.from_json(bad)


def test_firewall_answers_wireguard_only_at_the_vip() -> None:
    plain = render_ruleset(FirewallPolicy("fiovpn", "factory", A("10.42.42.1")), [])
    assert "HA:" not in plain
    text = render_ruleset(FirewallPolicy("fiovpn", "factory", A("10.42.42.1"),
                                         vip=A("198.18.0.3"), port=5555), [])
    assert "udp dport 5555 ip daddr != 198.18.0.3 drop" in text
    assert "udp sport 5555 ip saddr != 198.18.0.3 snat ip to 198.18.0.3" in text
    # untracked at the VIP: no conntrack entry can make NAT pick another port
    assert "hook prerouting priority raw" in text and "udp dport 5555 notrack" in text
    assert "udp sport 5555 ip saddr 198.18.0.3 notrack" in text
    # the VIP rule comes before the rule that passes everything off the VPN interface
    assert text.index("udp dport 5555") < text.index('iifname != "factory" accept')


def template(**kw: Any) -> KeepalivedTemplate:
    base: dict[str, Any] = dict(instance="fiovpn", interface="eth0",
                                vip=IPv4Interface("198.18.0.3/24"), src_ip=A("198.18.0.1"),
                                peer_ip=A("198.18.0.4"),
                                health_command=("/usr/bin/fiovpn", "server", "health"))
    base.update(kw)
    return KeepalivedTemplate(**base)


def test_keepalived_template_unicast_nopreempt_track_and_notify() -> None:
    text = render_keepalived(template())
    for line in ("state BACKUP", "nopreempt", "unicast_src_ip 198.18.0.1",
                 "unicast_peer {\n        198.18.0.4\n    }",
                 "198.18.0.3/24 dev eth0", 'script "/usr/bin/fiovpn server health"',
                 "track_script {\n        fiovpn_health", 'notify "fiovpn server ha-notify"'):
        assert line in text, line
    assert "nopreempt" not in render_keepalived(template(preempt=True))
    assert "'/opt/my dir/fiovpn'" in render_keepalived(
        template(health_command=("/opt/my dir/fiovpn", "server", "health")))


@pytest.mark.parametrize("kw", [dict(router_id=0), dict(priority=255),
                                dict(peer_ip=A("198.18.0.1")),
                                dict(vip=IPv4Interface("198.18.0.1/24")),
                                dict(instance="bad name"),
                                dict(health_command=('a"b',))])
def test_keepalived_template_refuses_bad_input(kw: dict[str, Any]) -> None:
    with pytest.raises(BadInput):
        render_keepalived(template(**kw))


def test_health_fast_path_only_for_exact_health_calls() -> None:
    assert _health_args(["server", "health"]) == (None, False)
    assert _health_args(["server", "--config", "/x", "health", "--json"]) == (Path("/x"), True)
    assert _health_args(["server", "health", "--config=/y"]) == (Path("/y"), False)
    assert _health_args(["server", "health", "--help"]) is None
    assert _health_args(["server", "status"]) is None
    assert _health_args(["health"]) is None


# --- the daemon's part with a fake wg ---------------------------------------------------


class FakeWg:
    def __init__(self, peers: dict[str, tuple[str, str, int]]) -> None:
        self.peers = peers  # key -> (endpoint, allowed, handshake)
        self.runner = FakeRunner()
        self.runner.on("ip", "link", "show", reply=lambda a, i: "")
        self.runner.on("wg", "show", reply=self._dump)

    def _dump(self, argv: Sequence[str], _input: str | None) -> str:
        lines = [f"(none)\t{KeyPair.generate().public}\t5555\toff"]
        for key, (ep, ips, hs) in self.peers.items():
            lines.append(f"{key}\t(none)\t{ep}\t{ips}\t{hs}\t10\t20\toff")
        return "\n".join(lines) + "\n"

    @property
    def sets(self) -> list[tuple[str, ...]]:
        return [c for c, _ in self.runner.calls if c[:2] == ("wg", "set")]


@pytest.fixture
def settings(tmp_path: Path) -> ServerSettings:
    fib = tmp_path / "fib_trie"
    fib.write_text(FIB_TRIE)
    return ServerSettings(interface="fvtest0", clients_file=tmp_path / "clients.conf",
                          state_dir=tmp_path / "state", run_dir=tmp_path / "run",
                          ha_vip="198.18.0.3",
                          local_addresses_file=fib,
                          authorized_keys=tmp_path / "authorized_keys")


def test_standby_forgets_every_session_and_endpoint(settings: ServerSettings) -> None:
    fake = FakeWg({str(K[0]): ("198.18.0.10:1", "10.42.42.2/32", 100),
                   str(K[1]): ("(none)", "10.42.42.3/32", 0)})
    node = ha.HaNode(settings, WireGuard(fake.runner))
    assert node.forget_sessions() == 1
    # what it knew is kept for a later takeover
    assert ha.HaFiles(settings.state_dir).endpoints()["endpoints"] == {
        str(K[0]): "198.18.0.10:1"}
    assert fake.sets == [("wg", "set", "fvtest0", "peer", str(K[0]), "remove", "peer",
                          str(K[0]), "allowed-ips", "10.42.42.2/32")]


def test_takeover_restores_endpoints_and_starts_handshakes(settings: ServerSettings) -> None:
    fake = FakeWg({str(K[0]): ("(none)", "10.42.42.2/32", 0),
                   str(K[1]): ("(none)", "10.42.42.3/32", 0)})
    ha.HaFiles(settings.state_dir).save_endpoints(
        SyncMessage(1.0, "active", {str(K[0]): "198.18.0.10:51820"}), 2.0)
    node = ha.HaNode(settings, WireGuard(fake.runner))
    assert node.take_over() == 1
    (argv,) = fake.sets
    assert argv == ("wg", "set", "fvtest0", "peer", str(K[0]), "endpoint",
                    "198.18.0.10:51820", "persistent-keepalive", "0", "peer", str(K[0]),
                    "persistent-keepalive", "25")
    assert node.keepalive_off_at is not None


def test_starting_on_the_vip_without_sessions_takes_over(settings: ServerSettings) -> None:
    fake = FakeWg({str(K[0]): ("198.18.0.10:1", "10.42.42.2/32", 0)})
    node = ha.HaNode(settings, WireGuard(fake.runner))
    assert node.tick(starting=True) == "active"
    assert fake.sets and "persistent-keepalive" in fake.sets[0]


def test_role_change_triggers_the_step(settings: ServerSettings) -> None:
    import time

    now = int(time.time())
    fake = FakeWg({str(K[0]): ("198.18.0.10:1", "10.42.42.2/32", now - 5)})
    node = ha.HaNode(settings, WireGuard(fake.runner))
    assert node.tick(starting=True) == "active"  # restart on the active: sessions kept
    assert fake.sets == []
    settings.local_addresses_file.write_text(FIB_TRIE.replace("198.18.0.3", "198.18.0.9"))
    assert node.tick() == "standby"
    assert fake.sets and "remove" in fake.sets[0]
    assert [t["to"] for t in node.transitions] == ["active", "standby"]


class FakeLink:
    def __init__(self, snap: dict[str, Any] | Exception) -> None:
        self.snap = snap
        self.sent: list[SyncMessage] = []

    def snapshot(self) -> dict[str, Any]:
        if isinstance(self.snap, Exception):
            raise self.snap
        return self.snap

    def send(self, message: SyncMessage) -> dict[str, Any]:
        self.sent.append(message)
        return {"registry_sha": message.registry_sha}


def test_catch_up_takes_the_active_registry_first(settings: ServerSettings) -> None:
    settings.clients_file.write_text("# mine\n")
    text = f"# theirs\n{K[2]} 10.42.42.200 alice\n"
    link = FakeLink({"role": "active", "registry": text,
                     "endpoints": {str(K[0]): "198.18.0.10:5"}, "at": 3.0})
    node = ha.HaNode(settings, WireGuard(FakeWg({}).runner), link=link)  # type: ignore[arg-type]
    assert node.catch_up() == "done"
    assert settings.clients_file.read_text() == text
    assert ha.HaFiles(settings.state_dir).endpoints()["endpoints"] == {
        str(K[0]): "198.18.0.10:5"}


def test_unreachable_peer_at_start_is_a_clear_degraded_status(settings: ServerSettings
                                                              ) -> None:
    settings.clients_file.write_text("# mine\n")
    link = FakeLink(TemporaryError("SSH to root@198.18.0.4:5025: cannot connect"))
    node = ha.HaNode(settings, WireGuard(FakeWg({}).runner), link=link)  # type: ignore[arg-type]
    assert node.catch_up() == "peer_unreachable"
    assert settings.clients_file.read_text() == "# mine\n"  # nothing lost
    fields = node.status_fields()
    assert fields["ha_caught_up"] == "peer_unreachable"
    assert "cannot connect" in str(fields["ha_sync_error"])


def test_active_sync_sends_endpoints_and_the_registry_once(settings: ServerSettings) -> None:
    settings.clients_file.write_text(f"{K[2]} 10.42.42.200\n")
    fake = FakeWg({str(K[0]): ("198.18.0.10:7", "10.42.42.2/32", 5)})
    link = FakeLink({})
    node = ha.HaNode(settings, WireGuard(fake.runner), link=link)  # type: ignore[arg-type]
    assert node.sync_once() and node.sync_once()
    first, second = link.sent
    assert first.endpoints == {str(K[0]): "198.18.0.10:7"}
    assert first.registry == f"{K[2]} 10.42.42.200\n" and second.registry is None
    assert node.peer_sync_age() is not None


def test_receive_refuses_a_second_active(settings: ServerSettings) -> None:
    from fiovpn.errors import PermanentError

    with pytest.raises(PermanentError):
        ha.receive(settings, SyncMessage(1.0, "active", {}))
    settings.local_addresses_file.write_text("")  # standby now
    out = ha.receive(settings, SyncMessage(1.0, "active", {}, "r\n", "x"))
    assert out["role"] == "standby" and out["registry_written"]
    assert settings.clients_file.read_text() == "r\n"


def test_standby_refusal_names_the_active(settings: ServerSettings) -> None:
    import dataclasses

    s = dataclasses.replace(settings, ha_peer="root@198.18.0.1:5025")
    assert ha.standby_refusal(s) is None  # active
    s.local_addresses_file.write_text("")
    err = ha.standby_refusal(s)
    assert err is not None and "root@198.18.0.1:5025" in err.message and "standby" in err.message


def test_health_reports_each_reason(settings: ServerSettings) -> None:
    runner = FakeRunner()
    runner.on("ip", "link", "show", reply=lambda a, i: (1, "does not exist"))
    runner.on("nft", reply=lambda a, i: (1, "No such file"))
    data = health(settings, runner=runner)
    assert not data["healthy"]
    names = {c["name"] for c in data["checks"] if not c["ok"]}
    assert names == {"interface", "daemon", "firewall", "last_sync", "peer_copy"}
    assert "fvtest0 is missing" in data["reason"]


# --- CLI bad input -------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(f'interface = "fvnoexist0"\nclients-file = "{tmp_path}/clients.conf"\n'
                    f'state-dir = "{tmp_path}/state"\nprivate-key = "{tmp_path}/server.key"\n'
                    f'hosts-file = "{tmp_path}/hosts"\n')
    return path


@pytest.mark.parametrize("args, word", [
    (["--ha-vip", "not-an-address"], "invalid --ha-vip"),
    (["--ha-vip", "10.42.42.7"], "inside the VPN subnet"),
    (["--ha-vip", "198.18.0.3", "--ha-peer", "root@bad host"], "--ha-peer"),
])
def test_daemon_bad_ha_input_is_one_clear_error(config: Path, args: list[str],
                                                word: str) -> None:
    result = CliRunner().invoke(cli, ["server", "--config", str(config), "daemon", "--once",
                                      *args])
    assert result.exit_code == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and word in lines[0], result.stderr
    assert not (config.parent / "state").exists()  # nothing changed


def test_ha_template_cli(config: Path) -> None:
    result = CliRunner().invoke(cli, ["server", "--config", str(config), "ha-template",
                                      "--interface", "eth0", "--vip", "203.0.113.10/24",
                                      "--src", "203.0.113.11", "--peer", "203.0.113.12",
                                      "--fiovpn", "/usr/bin/fiovpn", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert f"/usr/bin/fiovpn server --config {config} health" in data["config"]
    bad = CliRunner().invoke(cli, ["server", "ha-template", "--interface", "eth0", "--vip",
                                   "x", "--src", "203.0.113.11", "--peer", "203.0.113.12"])
    assert bad.exit_code == 2


def test_grants_reach_the_standby_with_the_copy(settings: ServerSettings) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    (settings.state_dir / "grants.json").write_text('{"grants": []}\n')
    fake = FakeWg({})
    link = FakeLink({})
    node = ha.HaNode(settings, WireGuard(fake.runner), link=link)  # type: ignore[arg-type]
    assert node.sync_once() and node.sync_once()
    assert link.sent[0].files == {"grants.json": '{"grants": []}\n'}
    assert link.sent[1].files == {}  # unchanged: not sent again
    settings.local_addresses_file.write_text("")  # the receiving side is a standby
    other = settings.state_dir.parent / "b-state"
    import dataclasses

    b = dataclasses.replace(settings, state_dir=other)
    ha.receive(b, link.sent[0])
    assert (other / "grants.json").read_text() == '{"grants": []}\n'
    with pytest.raises(BadInput):
        SyncMessage.from_json({"sent": 1, "sender_role": "active", "endpoints": {},
                               "files": {"../etc/passwd": "x"}})


def test_status_table_says_role_and_degraded_peer(tmp_path: Path) -> None:
    fib = tmp_path / "fib"
    fib.write_text("")  # the VIP is not here: standby
    state = tmp_path / "state"
    state.mkdir()
    (state / "ha.json").write_text(json.dumps({"caught_up": "peer_unreachable",
                                               "last_sync_error": "SSH: cannot connect"}))
    config = tmp_path / "server.toml"
    config.write_text(f'interface = "fvnoexist0"\nstate-dir = "{state}"\n'
                      f'clients-file = "{tmp_path}/c.conf"\nha-vip = "198.18.0.3"\n'
                      f'ha-peer = "root@198.18.0.1:5025"\nlocal-addresses-file = "{fib}"\n')
    result = CliRunner().invoke(cli, ["server", "--config", str(config), "status", "--json"])
    data = json.loads(result.stdout)
    assert data["role"] == "standby" and data["vip"] == "198.18.0.3"
    assert data["ha_peer"] == "root@198.18.0.1:5025" and data["expect_handshakes"] is False
    assert data["ha_caught_up"] == "peer_unreachable"
    human = CliRunner().invoke(cli, ["server", "--config", str(config), "status"])
    assert "HA standby" in human.stdout and "VIP 198.18.0.3" in human.stdout
    assert "degraded: peer unreachable" in human.stdout


# --- the single writer is the daemon's op, not the CLI ------------------------------------


def _serve(settings: ServerSettings) -> Any:
    from fiovpn.services.server.context import ServerContext
    from fiovpn.services.server.control import ControlServer
    from fiovpn.services.server.ops import dispatch

    ctx = ServerContext.from_settings(settings, runner=FakeWg({}).runner)
    server = ControlServer(settings.state_dir, lambda req: dispatch(ctx, req))
    server.start()
    return server


def test_a_caller_of_the_standbys_socket_is_refused_naming_the_active(
        settings: ServerSettings, tmp_path: Path) -> None:
    import dataclasses

    from fiovpn.errors import PermanentError
    from fiovpn.services.server.control import ControlClient

    s = dataclasses.replace(settings, ha_peer="root@198.18.0.1:5025",
                            authorized_keys=tmp_path / "authorized_keys")
    s.local_addresses_file.write_text("")  # the VIP is elsewhere: standby
    s.clients_file.write_text("# standby's copy\n")
    key_file = tmp_path / "alice.pub"
    key_file.write_text(f"ssh-ed25519 {ED25519_BLOB} alice\n")
    server = _serve(s)
    try:
        client = ControlClient(s.state_dir)
        for op, params in (("clients.add", {"public_key": str(K[0])}),
                           ("clients.remove", {"public_key": str(K[0])}),
                           ("access.grant", {"name": "a", "group": "g", "for": "1h"}),
                           ("admins.add", {"name": "alice", "key": key_file.read_text()})):
            with pytest.raises(PermanentError) as refused:
                client.request(op, params)
            assert refused.value.code == "ha_standby", op
            assert "root@198.18.0.1:5025" in refused.value.message
            assert "\n" not in refused.value.message
        assert s.clients_file.read_text() == "# standby's copy\n"
        assert not s.authorized_keys.exists()
    finally:
        server.close()


def test_an_op_on_the_active_is_on_the_peer_before_it_answers(
        settings: ServerSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from fiovpn.services.server.control import ControlClient

    s = dataclasses.replace(settings, ha_peer="root@198.18.0.4:5025")  # A holds the VIP
    s.clients_file.write_text("")
    link = ReceivingLink(standby_of(s))
    monkeypatch.setattr(ha, "peer_link", lambda *_a, **_k: link)
    server = _serve(s)
    try:
        answer = ControlClient(s.state_dir).request(
            "clients.add", {"public_key": str(K[1]), "name": "bob", "actor": "alice"})
    finally:
        server.close()
    assert answer["ha"] == {"replicated": True, "peer": "root@198.18.0.4:5025",
                            "warning": None}
    # on the standby when the answer came: the registry line and its journal line
    assert link.peer.clients_file.read_text() == s.clients_file.read_text()
    assert f"{K[1]} {answer['entry']['ip']}" in link.peer.clients_file.read_text()
    (line,) = Journal.in_state_dir(link.peer.state_dir).read(action="client_add")
    assert (line["actor"], line["target"]) == ("alice", "bob")
    assert Journal.in_state_dir(link.peer.state_dir).read() == \
        Journal.in_state_dir(s.state_dir).read()


class ReceivingLink:
    """The peer as `ha-receive` and `ha-snapshot` over SSH would be: another state
    dir, taking each message through its JSON form."""

    def __init__(self, peer: ServerSettings) -> None:
        self.peer = peer
        self.sent: list[SyncMessage] = []

    def send(self, message: SyncMessage) -> dict[str, Any]:
        self.sent.append(message)
        wire = SyncMessage.from_json(json.loads(json.dumps(message.to_json())))
        return ha.receive(self.peer, wire, admins=AdminKeys(self.peer.authorized_keys,
                                                            ["/usr/bin/fiovpn"], None))

    def snapshot(self) -> dict[str, Any]:
        return json.loads(json.dumps(ha.snapshot(self.peer)))


def standby_of(active: ServerSettings) -> ServerSettings:
    """Server B: its own files, the VIP not among its addresses."""
    import dataclasses

    root = active.state_dir.parent / "b"
    root.mkdir()
    fib = root / "fib_trie"
    fib.write_text("")
    return dataclasses.replace(active, clients_file=root / "clients.conf",
                               state_dir=root / "state", local_addresses_file=fib,
                               authorized_keys=root / "authorized_keys",
                               ha_peer="root@198.18.0.1:5025")


def test_admins_and_journal_reach_the_standby_with_the_copy(settings: ServerSettings
                                                           ) -> None:
    a = settings
    b = standby_of(a)
    b.authorized_keys.write_text("# B's own\nssh-ed25519 AAAAC3Nza root@b\n")
    keys = AdminKeys(a.authorized_keys, ["/opt/a/fiovpn"], "/etc/a.toml")
    keys.add("alice", f"ssh-ed25519 {ED25519_BLOB} alice@laptop\n")
    journal = Journal.in_state_dir(a.state_dir)
    journal.append(actor="local:root", action="admin_add", target="alice")
    link = ReceivingLink(b)
    node = ha.HaNode(a, WireGuard(FakeWg({}).runner), link=link)  # type: ignore[arg-type]
    assert node.sync_once()
    lines = b.authorized_keys.read_text().splitlines()
    assert lines[:2] == ["# B's own", "ssh-ed25519 AAAAC3Nza root@b"]  # kept as they were
    # B's own forced command (its fiovpn and settings), A's key and name
    assert lines[2] == ('command="/usr/bin/fiovpn server admin-command --name alice",'
                        f"restrict ssh-ed25519 {ED25519_BLOB} fiovpn-admin:alice")
    assert Journal.in_state_dir(b.state_dir).read() == journal.read()
    # the next copy sends only the journal's new lines
    journal.append(actor="local:root", action="grant", target="alice")
    assert node.sync_once()
    assert link.sent[-1].journal is not None and link.sent[-1].journal["offset"] > 0
    assert link.sent[-1].journal["data"].count("\n") == 1
    assert Journal.in_state_dir(b.state_dir).read() == journal.read()
    # an admin removed on A is removed on B; B's own lines stay
    keys.remove("alice")
    assert node.sync_once()
    assert b.authorized_keys.read_text() == "# B's own\nssh-ed25519 AAAAC3Nza root@b\n"


def test_a_standby_journal_that_differs_is_replaced_by_the_actives(settings: ServerSettings
                                                                   ) -> None:
    a = settings
    b = standby_of(a)
    Journal.in_state_dir(a.state_dir).append(actor="x", action="client_add", target="c1")
    node = ha.HaNode(a, WireGuard(FakeWg({}).runner), link=ReceivingLink(b))  # type: ignore[arg-type]
    assert node.sync_once()
    # B's copy goes its own way (a split brain): the next copy sends all of A's
    Journal.in_state_dir(b.state_dir).append(actor="y", action="client_add", target="c2")
    Journal.in_state_dir(a.state_dir).append(actor="x", action="revoke", target="c1")
    assert node.sync_once()
    assert (b.state_dir / "journal.jsonl").read_bytes() == \
        (a.state_dir / "journal.jsonl").read_bytes()


def test_a_returning_server_catches_up_grants_admins_and_journal(settings: ServerSettings
                                                                 ) -> None:
    active = standby_of(settings)  # B holds the VIP now; A (settings) returns
    active.local_addresses_file.write_text(FIB_TRIE)
    settings.local_addresses_file.write_text("")
    active.state_dir.mkdir(parents=True)
    (active.state_dir / "grants.json").write_text('{"grants": []}\n')
    AdminKeys(active.authorized_keys, ["/usr/bin/fiovpn"]).add(
        "bob", f"ssh-ed25519 {ED25519_BLOB} bob\n")
    Journal.in_state_dir(active.state_dir).append(actor="bob", action="grant", target="x")
    node = ha.HaNode(settings, WireGuard(FakeWg({}).runner), link=ReceivingLink(active),  # type: ignore[arg-type]
                     admin_keys=AdminKeys(settings.authorized_keys, ["/opt/fiovpn"]))
    assert node.catch_up() == "done"
    assert (settings.state_dir / "grants.json").read_text() == '{"grants": []}\n'
    assert [a.name for a in AdminKeys(settings.authorized_keys, []).list()] == ["bob"]
    assert "/opt/fiovpn server admin-command" in settings.authorized_keys.read_text()
    assert Journal.in_state_dir(settings.state_dir).read() == \
        Journal.in_state_dir(active.state_dir).read()


def test_the_standby_daemon_writes_no_journal_line_of_its_own(tmp_path: Path) -> None:
    from fiovpn.services.access import AccessState

    state = AccessState.in_state_dir(tmp_path)

    class Change:
        action, label, public_key, reason = "add", "device d1", K[0], "device in factory"

    state.record([Change()], [], write=False)
    assert state.journal.read() == []
    state.record([Change()], [])
    assert [ln["action"] for ln in state.journal.read()] == ["peer_add"]


def test_a_copy_sent_with_a_change_keeps_the_endpoints_the_standby_knows(
        settings: ServerSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    b = standby_of(settings)
    ha.receive(b, SyncMessage(1.0, "active", {str(K[0]): "198.18.0.10:7"}))
    settings.clients_file.write_text(f"{K[2]} 10.42.42.200\n")
    monkeypatch.setattr(ha, "peer_link", lambda *_a, **_k: ReceivingLink(b))
    assert ha.replicate(settings)["replicated"]  # a registry change: no endpoints in it
    assert ha.HaFiles(b.state_dir).endpoints()["endpoints"] == {str(K[0]): "198.18.0.10:7"}
    ha.receive(b, SyncMessage(2.0, "active", {str(K[0]): "198.18.0.10:9"}))
    assert ha.HaFiles(b.state_dir).endpoints()["endpoints"] == {str(K[0]): "198.18.0.10:9"}


def test_the_daemons_own_status_says_a_standby_expects_no_handshakes(
        settings: ServerSettings) -> None:
    node = ha.HaNode(settings, WireGuard(FakeWg({}).runner))
    assert node.tick(starting=True) == "active"
    assert node.status_fields()["expect_handshakes"] is True
    settings.local_addresses_file.write_text("")
    assert node.tick() == "standby"
    assert node.status_fields()["expect_handshakes"] is False


def test_a_sync_message_with_a_bad_admin_or_journal_part_is_refused(tmp_path: Path) -> None:
    # the receiver writes admins into authorized_keys: a name or key that could break
    # out of the line (or its forced command) is refused with one code, before any write
    good = {"name": "alice", "key_type": "ssh-ed25519", "public_key": ED25519_BLOB}
    base = {"sent": 1, "sender_role": "active", "endpoints": {}}
    assert SyncMessage.from_json({**base, "admins": [good]}).admins == [good]
    for admins in ([{**good, "name": "al ice"}], [{**good, "name": ""}],
                   [{**good, "public_key": ED25519_BLOB + '" ,command="sh'}],
                   [{**good, "key_type": "ssh-ed25519,command=sh"}],
                   [{**good, "public_key": ""}], ["alice"], {"alice": good}):
        with pytest.raises(BadInput) as refused:
            SyncMessage.from_json({**base, "admins": admins})
        assert refused.value.code == "bad_ha_message", admins
    for journal in ({"offset": -1, "data": ""}, {"offset": 0, "data": 5},
                    {"data": "x\n"}, "x\n"):
        with pytest.raises(BadInput) as refused:
            SyncMessage.from_json({**base, "journal": journal})
        assert refused.value.code == "bad_ha_message", journal
    # through `fiovpn server ha-receive`: refused, authorized_keys and journal untouched
    fib = tmp_path / "fib"
    fib.write_text("")
    config = tmp_path / "server.toml"
    config.write_text(f'ha-vip = "198.18.0.3"\nlocal-addresses-file = "{fib}"\n'
                      f'state-dir = "{tmp_path / "state"}"\n'
                      f'authorized-keys = "{tmp_path / "authorized_keys"}"\n'
                      f'clients-file = "{tmp_path / "clients.conf"}"\n')
    wire = json.dumps({**base, "admins": [{**good, "name": "x y"}],
                       "journal": {"offset": 0, "prefix_sha": "", "data": "{}\n"}})
    out = CliRunner().invoke(cli, ["server", "--config", str(config), "ha-receive"],
                             input=wire)
    assert out.exit_code == 2 and "malformed HA sync message: admin name" in out.output
    assert not (tmp_path / "authorized_keys").exists()
    assert not (tmp_path / "state" / "journal.jsonl").exists()


RSA_BLOB = "AAAAB3NzaC1yc2EAAAADAQABAAABAQC7"  # an ssh-rsa blob (its type name first)
BAD_ADMIN_KEYS = [
    ("ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5"),  # truncated: the type name and no key
    ("ssh-ed25519", RSA_BLOB),  # the blob of another type
    ("ssh-dss", ED25519_BLOB),  # a type sshd no longer takes
    ("ssh-ed25519", ED25519_BLOB[:-1]),  # not base64 (length)
    ("ssh-ed25519", "AAAAC3Nza"),
    ("ssh-ed25519", ED25519_BLOB + "\nssh-ed25519"),
    ("ssh-ed25519", ED25519_BLOB + '"'),
    ("ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5AAAAIEgRWolI133SI96HChqDtP0gHavaQEIcuX/9yqLp"),
    ("ssh-ed25519", ""),
]


@pytest.mark.parametrize(("key_type", "blob"), BAD_ADMIN_KEYS)
def test_an_admin_key_the_cli_refuses_is_refused_in_a_sync_message(
        tmp_path: Path, key_type: str, blob: str) -> None:
    # one check for every writer of an authorized_keys line: what `server admins add`
    # refuses, the standby refuses from the active (bad_ha_message) before any write
    with pytest.raises(BadInput) as cli_refused:
        AdminKeys(tmp_path / "ak", ["/usr/bin/fiovpn"]).add("alice", f"{key_type} {blob}\n")
    assert cli_refused.value.code == "bad_ssh_key"
    admin = {"name": "alice", "key_type": key_type, "public_key": blob}
    with pytest.raises(BadInput) as refused:
        SyncMessage.from_json({"sent": 1, "sender_role": "active", "endpoints": {},
                               "admins": [admin]})
    assert refused.value.code == "bad_ha_message"
    assert "admin 'alice' key" in refused.value.message


@pytest.mark.parametrize(("key_type", "blob"), BAD_ADMIN_KEYS[:3])
def test_ha_receive_writes_nothing_from_a_message_with_a_bad_admin_key(
        tmp_path: Path, key_type: str, blob: str) -> None:
    fib = tmp_path / "fib"
    fib.write_text("")  # standby
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "server.toml"
    config.write_text(f'ha-vip = "198.18.0.3"\nlocal-addresses-file = "{fib}"\n'
                      f'state-dir = "{state}"\n'
                      f'authorized-keys = "{tmp_path / "authorized_keys"}"\n'
                      f'clients-file = "{tmp_path / "clients.conf"}"\n')
    (tmp_path / "authorized_keys").write_text(f"ssh-ed25519 {ED25519_BLOB} root@b\n")
    (tmp_path / "clients.conf").write_text("# B's copy\n")
    (state / "journal.jsonl").write_text('{"action":"x"}\n')
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    wire = json.dumps({"sent": 1, "sender_role": "active",
                       "endpoints": {str(K[0]): "198.18.0.9:5555"},
                       "registry": f"{K[1]} 10.42.42.200\n",
                       "admins": [{"name": "alice", "key_type": key_type,
                                   "public_key": blob}],
                       "journal": {"offset": 0, "prefix_sha": "", "data": "{}\n"}})
    out = CliRunner().invoke(cli, ["server", "--config", str(config), "ha-receive",
                                   "--json"], input=wire)
    assert out.exit_code == 2, out.output
    assert json.loads(out.stdout)["error"]["code"] == "bad_ha_message"
    # no endpoints, registry, journal or authorized_keys line taken, no file made
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


# --------------------------------------------------------------------------- journal copy cost


class HashSpy:
    """Counts the bytes the standby's side hashes (``journal_mark``) and reads of
    its journal file."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from fiovpn.services import ha_journal

        self.hashed = 0

        def spy(data: bytes) -> tuple[int, str]:
            self.hashed += len(data)
            return journal_mark(data)
        monkeypatch.setattr(ha_journal, "journal_mark", spy)


def _lines(n: int, start: int = 0) -> bytes:
    return b"".join(json.dumps({"at": "2026-01-01T00:00:00Z", "actor": "alice",
                                "action": "grant", "target": f"c{i}", "detail": {}}
                               ).encode() + b"\n" for i in range(start, start + n))


def test_a_copy_with_nothing_new_hashes_no_journal_byte_on_either_side(
        settings: ServerSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    from fiovpn.services.ha_journal import journal_digest

    a, b = settings, standby_of(settings)
    a.state_dir.mkdir()
    (a.state_dir / "journal.jsonl").write_bytes(_lines(5000))  # ~500 kB
    size = (a.state_dir / "journal.jsonl").stat().st_size
    link = ReceivingLink(b)
    node = ha.HaNode(a, WireGuard(FakeWg({}).runner), link=link)  # type: ignore[arg-type]
    digest = journal_digest(a.state_dir / "journal.jsonl")
    assert node.sync_once()  # the first copy: all of it
    assert link.sent[-1].journal is not None and link.sent[-1].journal["offset"] == 0
    spy = HashSpy(monkeypatch)
    hashed = digest.bytes_hashed
    assert hashed == size
    for _ in range(3):
        assert node.sync_once()
        assert link.sent[-1].journal == {"offset": size, "prefix_sha": journal_mark(
            (a.state_dir / "journal.jsonl").read_bytes())[1], "data": "",
            "sha": link.sent[-1].journal["prefix_sha"]}
    assert digest.bytes_hashed == hashed and spy.hashed == 0
    # one new line: the active hashes that line, the standby nothing (the active says
    # what its copy's digest is now), and both copies are the same bytes
    line = _lines(1, 9999)
    Journal(a.state_dir / "journal.jsonl").write_raw(line)
    assert node.sync_once()
    assert digest.bytes_hashed == hashed + len(line) and spy.hashed == 0
    assert link.sent[-1].journal is not None and link.sent[-1].journal["offset"] == size
    assert (b.state_dir / "journal.jsonl").read_bytes() == \
        (a.state_dir / "journal.jsonl").read_bytes()
    assert ha.HaFiles(a.state_dir).state()["peer_journal"] == list(
        journal_mark((a.state_dir / "journal.jsonl").read_bytes()))


def test_a_standby_copy_changed_by_another_hand_gets_the_whole_journal_once(
        settings: ServerSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import time

    a, b = settings, standby_of(settings)
    a.state_dir.mkdir()
    (a.state_dir / "journal.jsonl").write_bytes(_lines(100))
    link = ReceivingLink(b)
    node = ha.HaNode(a, WireGuard(FakeWg({}).runner), link=link)  # type: ignore[arg-type]
    assert node.sync_once()
    for change in ("same size", "mtime set back", "restored", "cut"):
        copy = b.state_dir / "journal.jsonl"
        if change in ("same size", "mtime set back"):  # in place: same inode, same size
            time.sleep(0.05)  # past the kernel's timestamp tick
            st = copy.stat()
            with copy.open("r+b") as fh:
                fh.seek(10 + len(change))
                fh.write(b"X")
            if change == "mtime set back":  # `cp -p`, `touch -r`, a restore tool: the
                # ctime (which no one sets back) still tells (was: the mark trusted)
                os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
                assert copy.stat().st_mtime_ns == st.st_mtime_ns
        elif change == "restored":  # another file put there (another inode)
            data = copy.read_bytes()
            copy.unlink()
            copy.write_bytes(data[: len(data) // 2] + b"\n")
        else:
            with copy.open("r+b") as fh:
                fh.truncate(100)
        sent = len(link.sent)
        assert node.sync_once(), change
        # refused as it did not fit, then all of it once (offset 0); a copy cut short
        # is still a prefix of ours: only what it lacks
        parts = [m.journal for m in link.sent[sent:]]
        assert [p["offset"] for p in parts if p is not None][1:] == \
            ([100] if change == "cut" else [0]), change
        assert copy.read_bytes() == (a.state_dir / "journal.jsonl").read_bytes(), change
        sent = len(link.sent)
        assert node.sync_once()  # and the next copy is a quiet one again
        assert [m.journal["data"] for m in link.sent[sent:] if m.journal] == [""], change


def test_the_actives_journal_replaced_is_hashed_again(tmp_path: Path) -> None:
    from fiovpn.services.ha_journal import JournalDigest

    path = tmp_path / "journal.jsonl"
    path.write_bytes(_lines(10))
    digest = JournalDigest(path)
    assert digest.mark() == journal_mark(path.read_bytes())
    # same size, other lines, another file (as a whole copy writes it)
    other = _lines(10).replace(b"alice", b"bobby")
    assert len(other) == path.stat().st_size
    tmp = tmp_path / "new"
    tmp.write_bytes(other)
    tmp.replace(path)
    assert digest.mark() == journal_mark(other)
    path.write_bytes(_lines(3))  # cut shorter in place
    assert digest.mark() == journal_mark(_lines(3))
    # a backup restored with `cp` (the same inode, written in place), longer than
    # what was hashed: was the old digest extended by the restored file's tail
    restored = _lines(20).replace(b"alice", b"carol")
    with path.open("r+b") as fh:
        fh.write(restored)
    assert path.read_bytes() == restored
    assert digest.mark() == journal_mark(restored)
    path.write_bytes(restored + _lines(1, 50))  # an append after it: only that is hashed
    hashed = digest.bytes_hashed
    assert digest.mark() == journal_mark(restored + _lines(1, 50))
    assert digest.bytes_hashed == hashed + len(_lines(1, 50))
    path.unlink()
    assert digest.mark() == journal_mark(b"")


def test_a_journal_part_without_its_digest_is_still_taken(tmp_path: Path) -> None:
    # an active of the version before sends no "sha": the standby reads its copy
    from fiovpn.services.ha_journal import StandbyJournal

    copy = StandbyJournal(tmp_path / "journal.jsonl")
    assert copy.take({"offset": 0, "prefix_sha": "", "data": _lines(2).decode()})
    mark = copy.mark()
    assert copy.take({"offset": mark[0], "prefix_sha": mark[1],
                      "data": _lines(1, 7).decode(), "sha": None})
    assert (tmp_path / "journal.jsonl").read_bytes() == _lines(2) + _lines(1, 7)
    assert copy.mark() == journal_mark(_lines(2) + _lines(1, 7))


# ------------------------------------------------------------------ the standby's own lines


def _config_of(server: ServerSettings, tmp_path: Path) -> Path:
    config = tmp_path / f"{server.state_dir.parent.name}.toml"
    config.write_text(f'ha-vip = "198.18.0.3"\n'
                      f'local-addresses-file = "{server.local_addresses_file}"\n'
                      f'state-dir = "{server.state_dir}"\n'
                      f'clients-file = "{server.clients_file}"\n')
    return config


def _refuse_on(server: ServerSettings, tmp_path: Path, command: str) -> None:
    """An admin's forced command on ``server`` meets a command it refuses (as sshd
    runs it: `server admin-command` with SSH_ORIGINAL_COMMAND)."""
    config = _config_of(server, tmp_path)
    out = CliRunner(env={"SSH_ORIGINAL_COMMAND": command}).invoke(
        cli, ["server", "--config", str(config), "admin-command", "--name", "mallory"])
    assert out.exit_code == 2, out.output


def _journal_cli(server: ServerSettings, tmp_path: Path) -> list[dict[str, Any]]:
    config = _config_of(server, tmp_path)
    out = CliRunner().invoke(cli, ["server", "--config", str(config), "journal", "--json"])
    assert out.exit_code == 0, out.output
    lines = json.loads(out.stdout)
    assert isinstance(lines, list)
    return lines


def test_a_line_the_standby_journals_is_never_lost_to_a_copy(
        settings: ServerSettings, tmp_path: Path) -> None:
    import dataclasses

    a = dataclasses.replace(settings, ha_peer="root@198.18.0.4:5025")
    b = standby_of(a)
    Journal.in_state_dir(a.state_dir).append(actor="alice", action="client_add", target="c1")
    link = ReceivingLink(b)
    node = ha.HaNode(a, WireGuard(FakeWg({}).runner), link=link)  # type: ignore[arg-type]
    assert node.sync_once()
    # an admin's command refused on B: journaled there, apart from A's copy
    _refuse_on(b, tmp_path, "bash -c id")
    assert (b.state_dir / "journal.jsonl").read_bytes() == \
        (a.state_dir / "journal.jsonl").read_bytes()  # the copy did not drift
    refused = [ln for ln in _journal_cli(b, tmp_path) if ln["action"] == "refused"]
    assert [(ln["actor"], ln["detail"]["command"]) for ln in refused] == [
        ("mallory", "bash -c id")]
    # a whole copy (A's journal replaced on B as after a split brain) keeps it
    (b.state_dir / "journal.jsonl").write_text("")
    Journal.in_state_dir(a.state_dir).append(actor="alice", action="revoke", target="c1")
    assert node.sync_once()
    # the active took it into the journal (saying where it happened), once
    (on_a,) = Journal.in_state_dir(a.state_dir).read(action="refused")
    assert on_a["actor"] == "mallory" and on_a["detail"] == {
        "command": "bash -c id", "server": "standby root@198.18.0.4:5025"}
    # the next copy brings it back to B in the journal, and B stops sending it: it is
    # in either's `server journal` exactly once, and each copy adds it no more
    for _ in range(3):
        assert node.sync_once()
    assert (b.state_dir / "journal.jsonl").read_bytes() == \
        (a.state_dir / "journal.jsonl").read_bytes()
    for server in (a, b):
        assert sorted(ln["action"] for ln in _journal_cli(server, tmp_path)) == [
            "client_add", "refused", "revoke"], server.state_dir
    assert link.sent[-1].journal is not None and link.sent[-1].journal["data"] == ""


def test_the_standbys_lines_sent_again_after_a_lost_answer_are_taken_once(
        settings: ServerSettings, tmp_path: Path) -> None:
    a, b = settings, standby_of(settings)
    _refuse_on(b, tmp_path, "sh")
    lines = ha.StandbyLines(b.state_dir)
    part = lines.pending()
    assert part is not None and part["offset"] == 0
    # the answer reached A, A's next copy (with the acknowledgement) did not reach B
    assert ha.take_standby_lines(a, {"standby_lines": part}) == 1
    _refuse_on(b, tmp_path, "id")
    again = lines.pending()
    assert again is not None and again["offset"] == 0  # both lines: none acknowledged
    assert ha.take_standby_lines(a, {"standby_lines": again}) == 1  # only the new one
    assert [ln["detail"]["command"] for ln in
            Journal.in_state_dir(a.state_dir).read(action="refused")] == ["sh", "id"]
    state = ha.HaFiles(a.state_dir).state()
    ha.receive(b, SyncMessage(1.0, "active", {}, standby_taken=tuple(state["standby_taken"])))
    assert lines.pending() is None
    # a new file there (removed by hand) starts again from its first byte
    lines.path.unlink()
    _refuse_on(b, tmp_path, "w")
    fresh = lines.pending()
    assert fresh is not None and fresh["offset"] == 0
    assert ha.take_standby_lines(a, {"standby_lines": fresh}) == 1


def test_a_journal_the_active_cannot_write_fails_neither_the_copy_nor_the_lines(
        settings: ServerSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The standby's own lines reach a full disk on the active: the copy (endpoints,
    registry) still counts as done, the sync thread is not killed by the error,
    and the lines are taken once the journal can be written again."""
    a = settings
    b = standby_of(a)
    link = ReceivingLink(b)
    node = ha.HaNode(a, WireGuard(FakeWg({}).runner), link=link)  # type: ignore[arg-type]
    assert node.sync_once()
    _refuse_on(b, tmp_path, "sh -c id")
    real = Journal.write_raw

    def full_disk(self: Journal, data: bytes) -> None:
        if self.path.parent == a.state_dir:
            raise OSError(28, "No space left on device")
        real(self, data)

    monkeypatch.setattr(Journal, "write_raw", full_disk)
    with caplog.at_level("WARNING", logger="fiovpn.server"):
        assert node.sync_once()  # was: OSError out of sync_once (the thread died)
    assert node.last_sync_error is None
    assert any("No space left" in r.getMessage() for r in caplog.records)
    assert Journal.in_state_dir(a.state_dir).read(action="refused") == []
    monkeypatch.setattr(Journal, "write_raw", real)
    assert node.sync_once() and node.sync_once()
    (line,) = Journal.in_state_dir(a.state_dir).read(action="refused")
    assert line["detail"]["command"] == "sh -c id"


def test_a_standby_part_without_its_offset_is_refused_not_raised(
        settings: ServerSettings, caplog: pytest.LogCaptureFixture) -> None:
    part = {"file": "1:2:abc", "data": '{"action":"refused"}\n'}
    with caplog.at_level("WARNING", logger="fiovpn.server"):
        assert ha.take_standby_lines(settings, {"standby_lines": part}) == 0  # was KeyError
        for offset in (-1, "0", True, None):
            assert ha.take_standby_lines(
                settings, {"standby_lines": {**part, "offset": offset}}) == 0
    assert len([r for r in caplog.records if "unusable" in r.getMessage()]) == 5
    assert not (settings.state_dir / "journal.jsonl").exists()


def test_a_standby_that_becomes_active_puts_its_own_lines_in_its_journal(
        settings: ServerSettings, tmp_path: Path) -> None:
    b = standby_of(settings)
    node = ha.HaNode(b, WireGuard(FakeWg({}).runner))
    assert node.tick(starting=True) == "standby"
    _refuse_on(b, tmp_path, "cat /etc/shadow")
    assert not (b.state_dir / "journal.jsonl").exists()
    b.local_addresses_file.write_text(FIB_TRIE)  # keepalived gave B the VIP
    assert node.tick() == "active"
    (line,) = Journal.in_state_dir(b.state_dir).read()
    assert line["action"] == "refused" and line["detail"]["command"] == "cat /etc/shadow"
    assert ha.StandbyLines(b.state_dir).pending() is None
    assert [ln["action"] for ln in _journal_cli(b, tmp_path)] == ["refused"]  # once


def test_a_malformed_standby_part_or_acknowledgement_is_refused() -> None:
    base = {"sent": 1, "sender_role": "active", "endpoints": {}}
    for taken in (["f", -1], ["f", "3"], [1, 2], "f:3", ["f", True]):
        with pytest.raises(BadInput) as refused:
            SyncMessage.from_json({**base, "standby_taken": taken})
        assert refused.value.code == "bad_ha_message", taken
    assert SyncMessage.from_json({**base, "standby_taken": ["1:2", 3]}).standby_taken == \
        ("1:2", 3)


def test_a_managed_line_the_standby_would_refuse_is_left_out_not_every_copy(
        settings: ServerSettings, caplog: pytest.LogCaptureFixture) -> None:
    # a line an older fiovpn or a hand edit left in A's authorized_keys, with a key
    # the check refuses: the copies go on (endpoints, journal, the good admins)
    a, b = settings, standby_of(settings)
    AdminKeys(a.authorized_keys, ["/usr/bin/fiovpn"]).add(
        "alice", f"ssh-ed25519 {ED25519_BLOB} alice\n")
    with a.authorized_keys.open("a") as fh:
        fh.write('command="/usr/bin/fiovpn server admin-command --name old",restrict '
                 "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 fiovpn-admin:old\n")
    link = ReceivingLink(b)
    node = ha.HaNode(a, WireGuard(FakeWg({}).runner), link=link)  # type: ignore[arg-type]
    with caplog.at_level("WARNING", logger="fiovpn.server"):
        assert node.sync_once() and node.sync_once()
    assert [x["name"] for x in link.sent[-1].admins or []] == ["alice"]
    assert [x.name for x in AdminKeys(b.authorized_keys, []).list()] == ["alice"]
    warned = [r.getMessage() for r in caplog.records if "not copied" in r.getMessage()]
    assert len(warned) == 1 and "admin 'old' key" in warned[0]
