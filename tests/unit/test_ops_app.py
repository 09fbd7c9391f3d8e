"""The daemon's HTTP app through Starlette's test client (no network)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from fiovpn.core.listen import Listen
from fiovpn.errors import BadInput
from fiovpn.ops.app import allowed_source, build_app
from fiovpn.ops.dashboard import page, topology_snapshot
from fiovpn.ops.metrics import DaemonMetrics
from fiovpn.ops.view import StatusView

STATUS: dict[str, Any] = {
    "factory": "lab", "interface": "factory", "server_address": "10.42.42.1", "port": 5555,
    "interface_up": True, "daemon_running": True, "last_sync": "2027-01-15T08:00:00Z",
    "last_success": "2027-01-15T08:00:00Z", "last_error": None, "conflicts": [],
    "peers": [
        {"kind": "client", "name": "eng1", "ip": "10.42.42.200", "public_key": "k1",
         "latest_handshake": 1, "rx": 1, "tx": 2},
        {"kind": "device", "name": "device1", "ip": "10.42.42.2", "public_key": "k2",
         "latest_handshake": None, "rx": 0, "tx": 0},
    ],
}


def client(host: str = "127.0.0.1", status: dict[str, Any] | None = None) -> TestClient:
    view = StatusView(lambda: status or STATUS, Path("/nonexistent"), interval=2)
    return TestClient(build_app(view, DaemonMetrics(view)), client=(host, 50000))


def test_api_status_is_the_status_document() -> None:
    r = client().get("/api/status")
    assert r.status_code == 200
    assert r.json() == STATUS


def test_metrics_in_the_text_format() -> None:
    r = client().get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert 'fiovpn_peers{kind="device"} 1.0' in r.text


def test_dashboard_page_has_no_external_asset_and_polls() -> None:
    r = client().get("/")
    assert r.status_code == 200
    assert "text/html" in r.headers["content-type"]
    # no <script src>, <link href>, url(...) or http(s):// anywhere: the server has no internet
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|url\(|https?://", r.text)
    assert "/api/dashboard" in r.text
    assert "const REFRESH_MS = 1000;" in r.text  # interval 2 s: poll every second


def test_dashboard_document_and_its_etag() -> None:
    c = client()
    r = c.get("/api/dashboard")
    data = r.json()
    assert data["status"] == STATUS
    assert data["grants"] == [] and data["journal"] == []
    assert data["topology"].startswith("<svg") and "device1" in data["topology"]
    again = c.get("/api/dashboard", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304


def test_devices_and_strangers_are_refused() -> None:
    assert client("10.42.42.200").get("/api/status").status_code == 200  # a client
    assert client("10.42.42.1").get("/metrics").status_code == 200  # the server itself
    for host in ("10.42.42.2", "198.18.0.10", "10.42.42.77"):
        for path in ("/", "/metrics", "/api/status", "/api/dashboard"):
            assert client(host).get(path).status_code == 403, (host, path)
    assert not allowed_source(None, STATUS)
    assert not allowed_source("not-an-ip", STATUS)


def test_topology_of_a_big_fleet_is_trimmed() -> None:
    peers = [{"kind": "device", "name": f"d{i}", "ip": f"10.42.{i // 250}.{i % 250 + 2}",
              "latest_handshake": i} for i in range(500)]
    peers.append({"kind": "client", "name": "eng", "ip": "10.42.250.1"})
    snap, hidden = topology_snapshot({"peers": peers}, limit=40)
    assert hidden == 461 and len(snap["peers"]) == 40
    assert snap["peers"][0]["name"] == "eng"
    assert snap["peers"][1]["name"] == "d499"  # newest handshake first


def test_page_refresh_floor() -> None:
    assert "const REFRESH_MS = 200;" in page(0.01)


def test_listen_parse() -> None:
    assert str(Listen.parse("10.42.42.1:9100")) == "10.42.42.1:9100"
    for bad in ("10.42.42.1", ":9100", "host:9100", "10.42.42.1:0", "10.42.42.1:x",
                "10.42.42.1:70000"):
        with pytest.raises(BadInput):
            Listen.parse(bad)


def test_metrics_of_many_peers_stream_in_pieces_that_make_the_whole_text() -> None:
    from fiovpn.ops import metrics as metrics_module

    peers = [{"kind": "device", "name": f"d{i}", "ip": f"10.42.{i // 250}.{i % 250 + 2}",
              "public_key": f"k{i}", "latest_handshake": i, "rx": i, "tx": 2 * i}
             for i in range(metrics_module.CHUNK * 2 + 1)]
    status = {**STATUS, "peers": peers}
    view = StatusView(lambda: status, Path("/nonexistent"), interval=2)
    metrics = DaemonMetrics(view)
    pieces = list(metrics.render_chunks())
    assert len(pieces) == 1 + 3 * (1 + 3)  # the library's part; per family a head, 3 pieces
    assert max(len(p) for p in pieces) < len(b"".join(pieces)) / 4
    r = client(status=status).get("/metrics")
    assert r.status_code == 200 and "content-length" not in r.headers  # streamed
    assert r.content == metrics.render()
    assert f'fiovpn_peers{{kind="device"}} {len(peers)}.0' in r.text
    assert r.text.count("fiovpn_peer_transmit_bytes_total{") == len(peers)
