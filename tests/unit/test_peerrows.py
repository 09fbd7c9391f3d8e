"""The status document's peer rows: what json.dumps of dicts would give, built on
each read (a reader's edit never reaches another reader or the next pass)."""

from __future__ import annotations

import json
from ipaddress import IPv4Address as A

from fiovpn.core import peerrows
from fiovpn.core.keys import KeyPair
from fiovpn.core.peerrows import PeerRows
from fiovpn.core.peers import Peer
from fiovpn.core.wgdump import parse_dump
from fiovpn.ops.metrics import PeerExposition

KEYS = [KeyPair.generate().public for _ in range(4)]
PEERS = [Peer("client", "eng \"1\" ü", KEYS[0], A("10.42.42.200")),
         Peer("device", "dev-a", KEYS[1], A("10.42.42.2")),
         Peer("device", None, KEYS[2], A("10.42.42.3")),
         Peer("device", "dev\\c", KEYS[3], A("10.42.42.4"))]
DUMP = parse_dump("\n".join([
    f"(none)\t{KeyPair.generate().public}\t51820\toff",
    f"{KEYS[0]}\t(none)\t198.18.0.5:40000\t10.42.42.200/32\t1700000100\t10\t20\toff",
    f"{KEYS[1]}\t(none)\t(none)\t10.42.42.2/32\t0\t0\t0\toff",
    f"{KEYS[2]}\t(none)\t[fd00::1]:5\t10.42.42.3/32\t1700000200\t7\t8\t25",
]) + "\n")  # KEYS[3] is not on the interface


def plain(rows: PeerRows) -> list[dict[str, object]]:
    return [dict(r) for r in rows]


def test_rows_join_the_peers_with_the_dump() -> None:
    rows = PeerRows(PEERS, DUMP)
    assert len(rows) == 4
    assert rows[0] == {"kind": "client", "name": "eng \"1\" ü", "ip": "10.42.42.200",
                       "public_key": str(KEYS[0]), "latest_handshake": 1700000100, "rx": 10,
                       "tx": 20, "endpoint": "198.18.0.5:40000"}
    assert rows[1]["latest_handshake"] is None  # never: null, as before
    assert rows[3] == {"kind": "device", "name": "dev\\c", "ip": "10.42.42.4",
                       "public_key": str(KEYS[3]), "latest_handshake": None, "rx": 0, "tx": 0,
                       "endpoint": None}
    assert rows == plain(rows) and rows[1:3] == plain(rows)[1:3]
    assert PeerRows(PEERS, None)[0]["rx"] == 0


def test_json_text_is_what_json_dumps_of_the_dicts_gives() -> None:
    rows = PeerRows(PEERS, DUMP)
    assert json.loads("".join(rows.json_chunks())) == plain(rows)
    assert "".join(rows.json_chunks()) == json.dumps(plain(rows), separators=(",", ":"))
    assert "".join(PeerRows([], None).json_chunks()) == "[]"


def test_json_text_of_many_rows_comes_in_pieces_that_join_to_one_array() -> None:
    many = [Peer("device", f"d{i}", KEYS[i % 4], A(int(A("10.42.1.0")) + i))
            for i in range(peerrows.CHUNK * 2 + 3)]
    rows = PeerRows(many, DUMP)
    chunks = list(rows.json_chunks())
    assert len(chunks) == 5  # "[", three pieces, "]"
    assert json.loads("".join(chunks)) == plain(rows)


def test_every_read_gives_new_dicts() -> None:
    rows = PeerRows(PEERS, DUMP)
    first = next(iter(rows))
    first["name"] = "changed by a reader"
    first["on_interface"] = True
    assert rows[0]["name"] == "eng \"1\" ü" and "on_interface" not in rows[0]


def test_a_scrape_of_rows_is_the_scrape_of_their_dicts() -> None:
    rows = PeerRows(PEERS, DUMP)
    assert PeerExposition().render(rows) == PeerExposition().render(plain(rows))
    assert rows.client_ips() == {"10.42.42.200"}


def test_an_unchanged_dump_in_another_order_is_the_same_object_and_a_change_is_not() -> None:
    """wireguard-go lists peers in a new order each time: an idle interface still
    gives the last WgDump object (nothing parsed or planned again)."""
    from fiovpn.adapters.runner import FakeRunner
    from fiovpn.adapters.wireguard import WireGuard

    lines = [f"{k}\t(none)\t(none)\t10.42.42.{i + 2}/32\t0\t0\t0\toff"
             for i, k in enumerate(KEYS)]
    head = f"(none)\t{KEYS[0]}\t51820\toff"
    wg = WireGuard(FakeRunner())
    first = wg.parse_dump("wg0", "\n".join([head, *lines]) + "\n")
    again = wg.parse_dump("wg0", "\n".join([head, *reversed(lines)]) + "\n")
    assert again is first
    assert first.by_text()[KEYS[1].text].allowed_ips == ("10.42.42.3/32",)
    moved = [*lines[:-1], lines[-1].replace("\t0\t0\t0\t", "\t0\t10\t0\t")]
    changed = wg.parse_dump("wg0", "\n".join([head, *moved]) + "\n")
    assert changed is not first and changed.by_text()[KEYS[3].text].rx == 10
    assert wg.parse_dump("wg1", "\n".join([head, *moved]) + "\n") is not changed
