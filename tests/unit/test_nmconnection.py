from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fiovpn.core import nmconnection as nm
from fiovpn.errors import BadInput

# What fioconfig's contrib/factory-config-vpn handler writes (keys invented).
SAMPLE = (Path(__file__).parent.parent / "data" / "factory-vpn0.nmconnection").read_text()
SUBNET = IPv4Network("10.42.42.0/24")
SERVER = IPv4Address("10.42.42.1")


def test_sample_round_trips() -> None:
    doc = nm.parse(SAMPLE)
    assert doc.render() == SAMPLE
    assert [g.name for g in doc.groups][:2] == ["connection", "wireguard"]
    assert doc.get("connection", "id") == "factory-vpn0"
    assert doc.get("connection", "permissions") == ""


def test_widen_changes_only_the_server_peer_allowed_ips() -> None:
    widened = nm.widen_server_peer(nm.parse(SAMPLE), SUBNET).render()
    diff = [(a, b) for a, b in zip(SAMPLE.splitlines(), widened.splitlines(), strict=True)
            if a != b]
    assert diff == [("allowed-ips=10.42.42.1", "allowed-ips=10.42.42.0/24;")]


def test_widen_is_idempotent_and_restore_gives_back_the_handlers_file() -> None:
    doc = nm.parse(SAMPLE)
    assert not nm.is_widened(doc, SUBNET)
    once = nm.widen_server_peer(doc, SUBNET)
    assert nm.is_widened(once, SUBNET)
    assert nm.widen_server_peer(once, SUBNET).render() == once.render()
    restored = nm.restore_server_peer(once, SERVER, SUBNET)
    assert restored.render() == SAMPLE
    assert nm.restore_server_peer(doc, SERVER, SUBNET).render() == SAMPLE


def test_a_wider_existing_route_counts_as_widened() -> None:
    doc = nm.parse(SAMPLE.replace("allowed-ips=10.42.42.1", "allowed-ips=10.42.0.0/16;"))
    assert nm.is_widened(doc, SUBNET)
    assert nm.widen_server_peer(doc, SUBNET) == doc


def test_server_peer_must_be_unambiguous() -> None:
    two = SAMPLE + "\n[wireguard-peer.other]\nallowed-ips=10.42.42.9/32;\n"
    with pytest.raises(BadInput, match="server peer"):
        nm.widen_server_peer(nm.parse(two), SUBNET)
    none = "[connection]\nid=x\n"
    with pytest.raises(BadInput, match="server peer"):
        nm.widen_server_peer(nm.parse(none), SUBNET)


def test_a_peer_outside_the_subnet_is_not_the_server() -> None:
    text = SAMPLE + "\n[wireguard-peer.lan]\nallowed-ips=192.168.1.0/24;\n"
    widened = nm.widen_server_peer(nm.parse(text), SUBNET)
    assert widened.get("wireguard-peer.lan", "allowed-ips") == "192.168.1.0/24;"


def test_bad_lines() -> None:
    with pytest.raises(BadInput, match="line 2"):
        nm.parse("[connection]\nno equals sign\n")
    with pytest.raises(BadInput, match="before any"):
        nm.parse("id=x\n")
    with pytest.raises(BadInput, match="repeated"):
        nm.parse("[a]\n[a]\n")
    with pytest.raises(BadInput):
        nm.parse("[a]\nk=v\n").with_value("a", "k", "v\n[evil]")


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=10)
_value = st.text(alphabet="abcXYZ019 ;/=.+-_", max_size=20).map(str.strip)


@st.composite
def _keyfiles(draw: st.DrawFn) -> str:
    lines = draw(st.lists(st.sampled_from(["", "# comment"]), max_size=2))
    names = draw(st.lists(_word, min_size=1, max_size=4, unique=True))
    for name in names:
        lines.append(f"[{name}]")
        for _ in range(draw(st.integers(0, 4))):
            kind = draw(st.sampled_from(["kv", "kv", "blank", "comment"]))
            if kind == "kv":
                lines.append(f"{draw(_word)}={draw(_value)}")
            elif kind == "blank":
                lines.append("")
            else:
                lines.append("# " + draw(_value))
    return "\n".join(lines) + "\n"


@given(_keyfiles(), _word, _value)
def test_round_trip_and_single_edit_property(text: str, key: str, value: str) -> None:
    doc = nm.parse(text)
    assert doc.render() == text
    group = doc.groups[0].name
    edited = doc.with_value(group, key, value)
    assert edited.get(group, key) == value
    assert nm.parse(edited.render()).get(group, key) == value
    # every other group is untouched
    assert edited.groups[1:] == doc.groups[1:]
