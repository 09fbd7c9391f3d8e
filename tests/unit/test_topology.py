"""The topology picture: pure SVG from a status snapshot."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from fiovpn.core.topology import handshake_text, human_bytes, nodes, render_svg

NS = "{http://www.w3.org/2000/svg}"
NOW = 1_800_000_000


def snapshot(**extra: Any) -> dict[str, Any]:
    peers = [
        {"kind": "device", "name": "device2", "ip": "10.42.42.3", "public_key": "K2",
         "latest_handshake": NOW - 5, "rx": 2048, "tx": 100},
        {"kind": "client", "name": "admin", "ip": "10.42.42.200", "public_key": "KA",
         "latest_handshake": NOW - 30, "rx": 10, "tx": 20},
        {"kind": "device", "name": "device1", "ip": "10.42.42.2", "public_key": "K1",
         "latest_handshake": None, "rx": 0, "tx": 0},
        {"kind": "device", "name": "device10", "ip": "10.42.42.10", "public_key": "K10",
         "latest_handshake": NOW - 600, "rx": 0, "tx": 0},
    ]
    return {"factory": "acme", "server_address": "10.42.42.1", "interface": "factory",
            "port": 5555, "peers": peers, **extra}


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 - our own output


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{NS}text")]


def links(root: ET.Element) -> list[ET.Element]:
    return [e for e in root.iter(f"{NS}line") if "peer-link" in e.get("class", "")]


def test_every_peer_is_drawn_with_name_ip_and_traffic() -> None:
    root = parse(render_svg(snapshot(), now=NOW))
    words = texts(root)
    for name, ip in (("admin", "10.42.42.200"), ("device1", "10.42.42.2"),
                     ("device2", "10.42.42.3"), ("device10", "10.42.42.10")):
        assert name in words and ip in words
    assert "rx 2.0 KiB · tx 100 B" in words
    assert "10.42.42.1  ·  factory :5555" in words
    assert len(links(root)) == 4  # one line from the server to each peer


def test_live_and_idle_sessions_look_different() -> None:
    root = parse(render_svg(snapshot(), now=NOW))
    classes = sorted(e.get("class", "") for e in links(root))
    # device2 (5 s) and admin (30 s) live; device1 (never) and device10 (10 min) idle
    assert classes == ["peer-link idle", "peer-link idle", "peer-link live", "peer-link live"]
    idle = [e for e in links(root) if e.get("class") == "peer-link idle"]
    assert all(e.get("stroke-dasharray") for e in idle)
    assert "2 with a live WireGuard session" in " ".join(texts(root))


def test_clients_left_devices_right_sorted_by_ip() -> None:
    order = [(n.kind, n.name) for n in nodes(snapshot())]
    assert order == [("client", "admin"), ("device", "device1"), ("device", "device2"),
                     ("device", "device10")]
    root = parse(render_svg(snapshot(), now=NOW))
    rects = {g.findtext(f"{NS}title"): g.find(f"{NS}rect") for g in root.iter(f"{NS}g")}
    admin = next(r for t, r in rects.items() if t and t.startswith("client admin"))
    device = next(r for t, r in rects.items() if t and t.startswith("device device1"))
    assert admin is not None and device is not None
    assert float(admin.get("x", 0)) < float(device.get("x", 0))


def test_device_to_device_arcs_only_between_known_devices_once() -> None:
    d2d = [("device1", "device2"), ("device2", "device1"), ("device1", "ghost"),
           ("device1", "device1"), ("admin", "device1")]
    root = parse(render_svg(snapshot(), now=NOW, d2d=d2d))
    arcs = [p for p in root.iter(f"{NS}path") if p.get("class") == "d2d"]
    assert len(arcs) == 1
    assert arcs[0].findtext(f"{NS}title") == "device-to-device: device1 <-> device2"
    assert "device-to-device on" in texts(root)


def test_names_are_escaped() -> None:
    snap = snapshot()
    snap["peers"][1]["name"] = "<b>&'\"x"
    svg = render_svg(snap, now=NOW, title="a < b & c")
    root = parse(svg)  # still well-formed XML
    assert "<b>&'\"x" in texts(root)
    assert root.findtext(f"{NS}title") == "a < b & c"


def test_empty_and_odd_snapshots_render() -> None:
    root = parse(render_svg({}, now=NOW))
    assert "no peers yet" in texts(root)
    assert not links(root)
    odd = {"peers": [{"kind": "device", "public_key": "abcdefghijkl", "rx": "x"}, "junk"]}
    root = parse(render_svg(odd, now=NOW))
    assert "abcdefgh…" in texts(root)  # unnamed peer: its key, shortened
    assert "rx 0 B · tx 0 B" in texts(root)


def test_same_snapshot_same_picture() -> None:
    assert render_svg(snapshot(), now=NOW) == render_svg(snapshot(), now=NOW)


def test_human_figures() -> None:
    assert human_bytes(0) == "0 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(5 * 1024**3) == "5.0 GiB"
    assert handshake_text(None, NOW) == "no handshake"
    assert handshake_text(NOW - 7, NOW) == "handshake 7s ago"
    assert handshake_text(NOW - 600, NOW) == "handshake 10m ago"
    assert handshake_text(NOW + 3, NOW) == "handshake 0s ago"  # clock skew
