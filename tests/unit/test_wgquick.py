from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fiovpn.core import wgquick
from fiovpn.core.keys import KeyPair
from fiovpn.errors import BadInput

PRIV = KeyPair.generate().private
PUB = KeyPair.generate().public
PUB2 = KeyPair.generate().public

# A file as a person might have written it: comments, odd spacing and case,
# inline comments, wg-quick hooks, two peers, no trailing blank line.
HAND_WRITTEN = f"""# my laptop's VPN
   # indented comment

[Interface]
PrivateKey={PRIV}
address = 10.42.42.200/32   # given by the admin
ListenPort = 51820
DNS = 10.42.42.1
PostUp = logger "vpn up"; true
MTU=1380

[Peer]   # the factory server
PublicKey = {PUB}
Endpoint = vpn.example.com:5555
AllowedIPs = 10.42.42.0/24, 10.43.0.0/16
PersistentKeepalive = 25
# fiovpn:server-address = 10.42.42.1

[peer]
PublicKey = {PUB2}
AllowedIPs = 192.168.77.0/24
UnknownFutureKey = something"""


def test_hand_written_file_round_trips_exactly() -> None:
    doc = wgquick.parse(HAND_WRITTEN)
    assert doc.render() == HAND_WRITTEN + "\n"


def test_view_reads_interface_and_server_peer() -> None:
    view = wgquick.client_view(wgquick.parse(HAND_WRITTEN))
    assert view.private_key == PRIV
    assert view.address == IPv4Address("10.42.42.200")
    assert view.server_public_key == PUB
    assert view.endpoint == "vpn.example.com:5555"
    assert view.allowed_ips == (IPv4Network("10.42.42.0/24"), IPv4Network("10.43.0.0/16"))
    assert view.keepalive == 25
    assert view.server_address == IPv4Address("10.42.42.1")


def test_changing_the_address_touches_only_that_line() -> None:
    before = wgquick.parse(HAND_WRITTEN).render().splitlines()
    after = wgquick.parse(HAND_WRITTEN).with_interface("Address", "10.42.42.210/32")
    lines = after.render().splitlines()
    diff = [(a, b) for a, b in zip(before, lines, strict=True) if a != b]
    assert diff == [("address = 10.42.42.200/32   # given by the admin",
                     "address = 10.42.42.210/32")]


def test_new_key_goes_after_the_last_key_of_its_section() -> None:
    doc = wgquick.parse(HAND_WRITTEN).with_peer(0, "PresharedKey", str(PUB2))
    peer = doc.peers[0]
    keys = [ln.key for ln in peer.lines if ln.key]
    assert keys[-1] == "PresharedKey"
    # the comment and blank line after the keys stay after them
    assert peer.lines[-1].raw == ""
    assert peer.lines[-2].raw.startswith("# fiovpn:server-address")


def test_removing_a_key() -> None:
    doc = wgquick.parse(HAND_WRITTEN).with_interface("DNS", None)
    assert doc.interface.get("DNS") is None
    assert "DNS" not in doc.render()


@pytest.mark.parametrize(("line", "why"), [
    ("PrivateKey = notakey", "PrivateKey"),
    ("Address = 10.42.42.300/32", "Address"),
    ("ListenPort = 70000", "ListenPort"),
    ("Address 10.42.42.2", "Key = Value"),
])
def test_bad_interface_values_name_the_line(line: str, why: str) -> None:
    text = f"[Interface]\n{line}\n"
    with pytest.raises(BadInput) as exc:
        wgquick.parse(text, source="foundries.conf")
    assert "foundries.conf line 2" in exc.value.message
    assert why in str(exc.value)


def test_bad_peer_values() -> None:
    for line in ("Endpoint = vpn;rm -rf /:5555", "AllowedIPs = 10.42.42.0/33",
                 "PublicKey = AAAA"):
        with pytest.raises(BadInput):
            wgquick.parse(f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\n{line}\n")


def test_structure_errors() -> None:
    with pytest.raises(BadInput, match="before any"):
        wgquick.parse(f"PrivateKey = {PRIV}\n[Interface]\n")
    with pytest.raises(BadInput, match="unknown section"):
        wgquick.parse("[Interface]\n[Tunnel]\n")
    with pytest.raises(BadInput, match="exactly one"):
        wgquick.parse("[Peer]\n")
    with pytest.raises(BadInput, match="exactly one"):
        wgquick.parse("[Interface]\n[Interface]\n")


def test_setting_an_invalid_value_is_refused() -> None:
    doc = wgquick.parse(HAND_WRITTEN)
    with pytest.raises(BadInput):
        doc.with_interface("Address", "10.0.0.1/32\nPostUp = rm -rf /")
    with pytest.raises(BadInput):
        doc.with_peer(0, "Endpoint", "host:99999")


def test_interface_name_follows_the_file_name() -> None:
    assert wgquick.interface_name("foundries.conf") == "foundries"
    for bad in ("foundries", "a-very-long-config-name.conf", "we ird.conf", ".conf"):
        with pytest.raises(BadInput):
            wgquick.interface_name(bad)


def test_new_client_config_is_what_wg_quick_needs() -> None:
    doc = wgquick.new_client_config(
        private_key=PRIV, address=wgquick.parse_interface("10.42.42.200"),
        server_public_key=PUB, endpoint="vpn.example.com:5555",
        allowed_ips=IPv4Network("10.42.42.0/24"), server_address=IPv4Address("10.42.42.1"))
    text = doc.render()
    again = wgquick.parse(text)
    assert again.render() == text
    view = wgquick.client_view(again)
    assert str(view.addresses[0]) == "10.42.42.200/32"
    assert view.allowed_ips == (IPv4Network("10.42.42.0/24"),)
    assert view.server_address == IPv4Address("10.42.42.1")
    assert "PersistentKeepalive = 25" in text


# --- property: any document we can build renders to text that parses back to itself ----

_comment = st.text(alphabet="abc xyz-=#:", max_size=12).map(lambda s: "#" + s)
_space = st.sampled_from(["", " ", "  ", "\t"])


@st.composite
def _key_line(draw: st.DrawFn, section: str) -> str:
    if section == "Interface":
        key, value = draw(st.sampled_from([
            ("PrivateKey", str(PRIV)), ("Address", "10.42.42.7/32"),
            ("ListenPort", "51820"), ("DNS", "10.42.42.1"), ("MTU", "1420"),
            ("Table", "off"), ("PostUp", "echo up"),
        ]))
    else:
        key, value = draw(st.sampled_from([
            ("PublicKey", str(PUB)), ("Endpoint", "198.18.0.1:5555"),
            ("AllowedIPs", "10.42.42.0/24, 10.1.0.0/16"), ("PersistentKeepalive", "25"),
        ]))
    if draw(st.booleans()):
        key = key.lower()
    tail = draw(st.one_of(st.just(""), _comment.map(lambda c: " " + c)))
    return f"{draw(_space)}{key}{draw(_space)}={draw(_space)}{value}{tail}"


@st.composite
def _documents(draw: st.DrawFn) -> str:
    lines = draw(st.lists(st.one_of(st.just(""), _comment), max_size=3))
    for section in ["Interface", *draw(st.lists(st.just("Peer"), max_size=3))]:
        lines.append(f"[{section}]")
        body = draw(st.lists(st.one_of(_key_line(section), st.just(""), _comment),
                             max_size=6))
        lines.extend(body)
    return "\n".join(lines) + "\n"


@given(_documents())
def test_round_trip_property(text: str) -> None:
    doc = wgquick.parse(text)
    assert doc.render() == text
    assert wgquick.parse(doc.render()) == doc


@pytest.mark.parametrize("line", [
    f"PrivateKey = {PRIV}"[:-2] + "=",  # one character lost in a copy
    f"PresharedKey = {str(PRIV)[:-1]}",
    f"PrivateKey: {str(PRIV)[:-1]}",  # no '='
], ids=["private-cut", "preshared-cut", "no-equals"])
def test_a_damaged_secret_key_is_never_echoed(line: str) -> None:
    with pytest.raises(BadInput) as exc:
        wgquick.client_view(wgquick.parse(f"[Interface]\n{line}\n", source="foundries.conf"))
    assert str(PRIV)[:20] not in str(exc.value)
    assert "foundries.conf line 2" in str(exc.value)


def test_setting_a_secret_with_a_newline_is_refused_without_echo() -> None:
    doc = wgquick.parse(HAND_WRITTEN)
    with pytest.raises(BadInput) as exc:
        doc.with_interface("PrivateKey", f"{PRIV}\nPostUp = x")
    assert str(PRIV)[:20] not in str(exc.value)


def test_config_name_with_a_trailing_newline_is_refused() -> None:
    from fiovpn.core.wgquick import interface_name
    from fiovpn.errors import BadInput

    assert interface_name("foundries.conf") == "foundries"
    with pytest.raises(BadInput, match="cannot be an interface name"):
        interface_name("foundries\n.conf")
