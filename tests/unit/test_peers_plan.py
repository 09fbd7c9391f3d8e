"""Desired peers (devices + clients, conflicts) and the pure plan."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address as A

from hypothesis import given, settings
from hypothesis import strategies as st

from fiovpn.core.addresses import VpnNetwork
from fiovpn.core.keys import Key, KeyPair
from fiovpn.core.peers import Peer, desired_peers
from fiovpn.core.plan import plan
from fiovpn.core.registry import ClientEntry
from fiovpn.core.wgdump import PeerDump

NET = VpnNetwork.build()
KEYS = [KeyPair.generate().public for _ in range(40)]


@dataclass(frozen=True)
class Row:
    name: str
    ip: A | None
    enabled: bool
    pubkey: Key | None


def test_devices_and_clients_each_get_their_own_slash_32() -> None:
    d = desired_peers([Row("d1", A("10.42.42.2"), True, KEYS[0])],
                      [ClientEntry(KEYS[1], A("10.42.42.200"), "alice")], NET)
    assert [(p.kind, p.name, p.allowed_ip) for p in d.peers] == [
        ("device", "d1", "10.42.42.2/32"), ("client", "alice", "10.42.42.200/32")]
    assert d.conflicts == ()


def test_devices_skipped_with_reasons() -> None:
    d = desired_peers([
        Row("off", A("10.42.42.2"), False, KEYS[0]),
        Row("nokey", A("10.42.42.3"), True, None),
        Row("noip", None, True, KEYS[1]),
        Row("away", A("10.9.9.9"), True, KEYS[2]),
        Row("srv", A("10.42.42.1"), True, KEYS[3]),
    ], [], NET)
    assert d.peers == ()
    reasons = {s.name: s.reason for s in d.skipped}
    assert reasons["off"] == "VPN disabled for this device"
    assert "public key" in reasons["nokey"]
    assert "no VPN address" in reasons["noip"]
    assert "outside the VPN subnet" in reasons["away"]
    assert "server's own address" in reasons["srv"]


def test_client_on_a_device_ip_is_dropped_device_kept() -> None:
    d = desired_peers([Row("d1", A("10.42.42.2"), True, KEYS[0])],
                      [ClientEntry(KEYS[1], A("10.42.42.2"), "mallory"),
                       ClientEntry(KEYS[2], A("10.42.42.200"), "alice")], NET)
    assert {p.name for p in d.peers} == {"d1", "alice"}
    (c,) = d.conflicts
    assert c.what == "ip" and c.value == "10.42.42.2" and c.kept is not None
    assert c.kept.name == "d1"
    assert "mallory" in c.message


def test_client_with_a_device_key_is_dropped() -> None:
    d = desired_peers([Row("d1", A("10.42.42.2"), True, KEYS[0])],
                      [ClientEntry(KEYS[0], A("10.42.42.200"), "copy")], NET)
    assert [p.name for p in d.peers] == ["d1"]
    assert d.conflicts[0].what == "public_key"


def test_two_clients_on_one_ip_neither_applied() -> None:
    d = desired_peers([], [ClientEntry(KEYS[1], A("10.42.42.200"), "a"),
                           ClientEntry(KEYS[2], A("10.42.42.200"), "b")], NET)
    assert d.peers == ()
    assert d.conflicts[0].kept is None and "none of them applied" in d.conflicts[0].message


def test_server_key_is_never_a_peer() -> None:
    d = desired_peers([], [ClientEntry(KEYS[1], A("10.42.42.200"))], NET, server_key=KEYS[1])
    assert d.peers == () and "server's own public key" in d.skipped[0].reason


def _dump(key: Key, *ips: str, endpoint: str | None = None) -> PeerDump:
    return PeerDump(key, endpoint, tuple(ips), 0, 0, 0, None)


def test_plan_adds_removes_updates_with_reasons() -> None:
    keep = Peer("device", "keep", KEYS[0], A("10.42.42.2"))
    moved = Peer("device", "moved", KEYS[1], A("10.42.42.4"))
    new = Peer("client", "alice", KEYS[2], A("10.42.42.200"))
    gone = Peer("device", "gone", KEYS[3], A("10.42.42.3"))
    actual = [_dump(KEYS[0], "10.42.42.2/32", endpoint="198.18.0.2:1"),
              _dump(KEYS[1], "10.42.42.9/32"), _dump(KEYS[3], "10.42.42.3/32")]
    changes = plan([keep, moved, new], actual, known={KEYS[3]: gone})
    assert [(c.action, c.label) for c in changes] == [
        ("remove", "device 'gone'"), ("update", "device 'moved'"), ("add", "client 'alice'")]
    assert "no longer an enabled device" in changes[0].reason
    assert "10.42.42.9/32" in changes[1].reason
    assert changes[1].describe().startswith("peer updated: device 'moved' 10.42.42.9/32 -> ")


def test_plan_of_equal_states_is_empty() -> None:
    p = Peer("device", "d", KEYS[0], A("10.42.42.2"))
    assert plan([p], [_dump(KEYS[0], "10.42.42.2/32", endpoint="198.18.0.2:9")]) == []


def test_unknown_peer_removal_is_explained() -> None:
    (c,) = plan([], [_dump(KEYS[5], "10.42.42.50/32")])
    assert c.action == "remove" and c.label == "unknown peer"


_peer = st.builds(
    lambda kind, k, n: Peer(kind, None, KEYS[k], A(f"10.42.42.{n}")),
    st.sampled_from(["device", "client"]), st.integers(0, 39), st.integers(2, 254))


def _peers_unique(peers: list[Peer]) -> list[Peer]:
    seen: dict[Key, Peer] = {}
    for p in peers:
        seen.setdefault(p.public_key, p)
    return list(seen.values())


@settings(max_examples=200)
@given(st.lists(_peer, max_size=25), st.lists(_peer, max_size=25))
def test_plan_is_minimal_and_converges(desired_raw: list[Peer], actual_raw: list[Peer]) -> None:
    desired = _peers_unique(desired_raw)
    actual_peers = _peers_unique(actual_raw)
    actual = [_dump(p.public_key, p.allowed_ip) for p in actual_peers]
    changes = plan(desired, actual)
    # applying the changes gives exactly the desired state
    state = {d.public_key: d.allowed_ips for d in actual}
    for c in changes:
        if c.action == "remove":
            state.pop(c.public_key)
        else:
            assert c.new is not None
            state[c.public_key] = (c.new.allowed_ip,)
    assert state == {p.public_key: (p.allowed_ip,) for p in desired}
    # minimal: one change per differing key, none for a matching peer
    touched = [c.public_key for c in changes]
    assert len(touched) == len(set(touched))
    want = {p.public_key: p.allowed_ip for p in desired}
    same = {p.public_key for p in actual_peers if want.get(p.public_key) == p.allowed_ip}
    assert not same & set(touched)
    # removes come before updates before adds (a freed IP can move in one pass)
    order = [c.action for c in changes]
    assert order == sorted(order, key=["remove", "update", "add"].index)
    # and a second plan against the result is empty
    after = [_dump(k, *v) for k, v in state.items()]
    assert plan(desired, after) == []


@settings(max_examples=100)
@given(st.lists(st.tuples(st.integers(0, 39), st.integers(2, 60)), max_size=20),
       st.lists(st.tuples(st.integers(0, 39), st.integers(2, 60)), max_size=20))
def test_desired_peers_never_share_an_ip_or_key(devs: list[tuple[int, int]],
                                                 clients: list[tuple[int, int]]) -> None:
    rows = [Row(f"d{i}", A(f"10.42.42.{n}"), True, KEYS[k]) for i, (k, n) in enumerate(devs)]
    entries = [ClientEntry(KEYS[k], A(f"10.42.42.{n}")) for k, n in clients]
    d = desired_peers(rows, entries, NET)
    assert len({p.ip for p in d.peers}) == len(d.peers)
    assert len({p.public_key for p in d.peers}) == len(d.peers)
    # a client is never kept over a device in a conflict
    for c in d.conflicts:
        if any(p.kind == "device" for p in c.peers) and c.kept is not None:
            assert c.kept.kind == "device"
