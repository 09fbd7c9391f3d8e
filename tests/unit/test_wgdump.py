"""``wg show dump`` parsing, against a dump recorded from a real wireguard-go
interface (tests/data/wg-show-dump.txt: one live peer after a ping, clients,
a peer with a preshared key and two prefixes, a peer with no allowed IPs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fiovpn.core.keys import Key, KeyPair
from fiovpn.core.wgdump import parse_dump
from fiovpn.errors import BadInput

DATA = Path(__file__).parent.parent / "data" / "wg-show-dump.txt"


def test_recorded_dump_interface_line() -> None:
    dump = parse_dump(DATA.read_text())
    assert dump.interface.public_key == Key("hSKL0L60G9GNZHyeImoVEwpmE8JZKjFA9LjImhGByUU=")
    assert dump.interface.listen_port == 5555
    assert dump.interface.fwmark is None
    assert dump.interface.has_private_key


def test_recorded_dump_peers() -> None:
    dump = parse_dump(DATA.read_text())
    assert len(dump.peers) == 6
    live = dump.peer(Key("z9r1Cy7dQ1oZ47p2Lgc5jfNGS0Drpo+2tKlQsgNo2zg="))
    assert live is not None
    assert live.endpoint == "198.18.0.2:56794"
    assert live.allowed_ips == ("10.42.42.2/32",)
    assert live.latest_handshake == 1795645263
    assert (live.rx, live.tx) == (564, 476)
    idle = dump.peer(Key("Jh5WvQu0ENcGMmvp7SZKNW+XBQZ84/kqWe3/4FkfYgE="))
    assert idle is not None and idle.endpoint is None and idle.latest_handshake == 0
    psk = dump.peer(Key("uyWkcQifBluNgyHtJhFYeJighVb3huZ0xRIl6+GC1Qo="))
    assert psk is not None and psk.has_preshared_key
    assert psk.allowed_ips == ("10.42.42.10/32", "10.42.43.0/24")
    bare = dump.peer(Key("1rHudx95GbJw1v6kTWyuEezWMN5PwYbhSz6UkAgVQxg="))
    assert bare is not None and bare.allowed_ips == ()


def test_private_key_is_not_kept() -> None:
    dump = parse_dump(DATA.read_text())
    assert "2ItmJQsvam0lTFvrEP3aIWLZu4JEqygJNMU4YmzRdUo=" not in repr(dump)


def test_interface_without_key_or_peers() -> None:
    dump = parse_dump("(none)\t(none)\t0\toff\n")
    assert dump.interface.public_key is None and not dump.interface.has_private_key
    assert dump.interface.listen_port is None and dump.peers == ()


def test_keepalive_and_fwmark() -> None:
    key = KeyPair.generate().public
    dump = parse_dump(f"(none)\t(none)\t51820\t0x2a\n{key}\t(none)\t(none)\t(none)\t0\t0\t0\t25\n"
                      .replace("0x2a", "42"))
    assert dump.interface.fwmark == 42
    assert dump.peers[0].persistent_keepalive == 25


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"),
    ("a\tb\n", "line 1: expected 4 fields"),
    ("(none)\t(none)\t5555\toff\nnot-a-key\t(none)\t(none)\t(none)\t0\t0\t0\toff\n",
     "line 2: invalid peer public key"),
    ("(none)\t(none)\tport\toff\n", "listen port"),
])
def test_bad_dumps_name_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(BadInput, match=fragment):
        parse_dump(text)


def test_a_bad_private_key_field_is_never_echoed() -> None:
    secret = "c2VjcmV0LXByaXZhdGUta2V5LW1hdGVyaWFsLXh5eg"  # 42 chars: not a key
    with pytest.raises(BadInput) as info:
        parse_dump(f"{secret}\t(none)\t5555\toff\n")
    assert secret not in str(info.value) and "private key" in str(info.value)
