"""Operating the server (SPEC 13) end to end: a real Prometheus in the server's
namespace scrapes the daemon's /metrics; a real headless Chromium in an
engineer's namespace shows the dashboard through the tunnel and sees a newly
enabled device appear without a reload; devices cannot open the page;
/api/status is `server status --json`.

One lab for the module; tests run in order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fiovpn.core.keys import KeyPair
from fiovpn.core.presence import factory_online
from fiovpn.lab import DeviceSpec, Lab, wait_for
from fiovpn.lab.browser import Browser
from fiovpn.lab.prometheus import Prometheus
from fiovpn.lab.roles import Engineer

pytestmark = pytest.mark.e2e

INTERVAL = 2  # seconds between factory polls
HTTP = "10.42.42.1:9100"
URL = f"http://{HTTP}"
# fields of `server status --json` that change by themselves from one moment to the next
MOVING = ("last_sync", "last_success", "device_list_age_s", "daemon_pid")
MOVING_PEER = ("latest_handshake", "rx", "tx", "endpoint")


@pytest.fixture(scope="module")
def lab(make_lab: Callable[..., Lab]) -> Lab:
    lab = make_lab(devices=[DeviceSpec("device1"), DeviceSpec("device2"),
                            DeviceSpec("device3", vpn=False)],
                   engineers=1, server_settings={"interval": INTERVAL, "http": HTTP})
    lab.start_vpn()
    return lab


@pytest.fixture(scope="module")
def engineer(lab: Lab) -> Engineer:
    eng = lab.engineers[0]
    lab.join(eng, name="eng1")
    return eng


def device_peers(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in status["peers"] if p["kind"] == "device"]


def test_prometheus_scrapes_the_daemon(lab: Lab, engineer: Engineer) -> None:
    assert lab.ping("device1", "10.42.42.1")  # a live session for the handshake metric
    prom = Prometheus(lab.server, [HTTP])
    prom.start()
    try:
        status = lab.server.status()
        want = len(device_peers(status))
        assert want == 2

        def peers_metric() -> float | None:
            result = prom.query('fiovpn_peers{kind="device"}')
            return float(result[0]["value"][1]) if result else None
        got = wait_for(lambda: peers_metric() == want or None, timeout=30,
                       what="prometheus to have fiovpn_peers", interval=0.5,
                       detail=lambda: str(prom.targets()))
        assert got

        def handshake() -> float | None:
            result = prom.query('fiovpn_peer_latest_handshake_seconds{name="device1"}')
            value = float(result[0]["value"][1]) if result else 0.0
            return value or None
        value = wait_for(handshake, timeout=30, what="device1's handshake in prometheus",
                         interval=0.5)
        assert abs(time.time() - value) < 180
        labels = prom.query('fiovpn_peer_latest_handshake_seconds{name="device1"}')[0]
        assert labels["metric"]["kind"] == "device"
        assert labels["metric"]["ip"] == str(lab.device("device1").vpn_ip)
        for name in ("fiovpn_reconcile_duration_seconds_count", "fiovpn_conflicts",
                     "fiovpn_device_list_stale_seconds",
                     "fiovpn_peer_receive_bytes_total", "fiovpn_peer_transmit_bytes_total",
                     "fiovpn_factory_api_errors_total"):
            assert prom.query(name), name
    finally:
        prom.stop()


def comparable(status: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in status.items() if k not in MOVING}
    out["peers"] = [{k: v for k, v in p.items() if k not in MOVING_PEER}
                    for p in status["peers"]]
    return out


def test_api_status_is_server_status_json(lab: Lab, engineer: Engineer) -> None:
    reply = engineer.http("GET", f"{URL}/api/status")
    assert reply.ok, reply.body
    assert comparable(reply.json()) == comparable(lab.server.status())


def test_the_dashboard_in_chromium_through_the_tunnel(lab: Lab, engineer: Engineer,
                                                      tmp_path: Path) -> None:
    assert lab.factory is not None
    browser = Browser(engineer, f"{URL}/")
    browser.start()
    try:
        status = lab.server.status()
        want = sorted((p["kind"], p["name"] or "-", p["ip"]) for p in status["peers"])
        assert len(want) == 3  # device1, device2, eng1

        def table(s: dict[str, Any]) -> list[tuple[str, str, str]]:
            return sorted((r[0], r[1], r[2]) for r in s.get("rows") or ())
        first = browser.wait(lambda s: table(s) == want, timeout=15,
                             what="every peer in the dashboard table")
        assert first["topology"]
        shot = browser.screenshot(tmp_path / "dashboard.png")
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, len(data)

        # a device enabled in the factory shows up by itself, without a reload
        new = KeyPair.generate().public
        lab.factory.add_device("device9", pubkey=str(new))
        engineer.fiovpn("devices", "enable-vpn", "device9")
        enabled_at = time.time()
        seen = browser.wait(lambda s: any(r[1] == "device9" for r in s.get("rows") or ()),
                            timeout=INTERVAL + 2 + 10, what="device9 on the page")
        assert seen["t"] - enabled_at <= INTERVAL + 2, seen["t"] - enabled_at
        assert seen["marker"] == first["marker"]  # the same page: never reloaded
    finally:
        browser.stop()


def metric_value(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None


def test_online_in_the_factory_without_vpn(lab: Lab, engineer: Engineer) -> None:
    """device9 (enabled in the factory by the dashboard test, checked in, a key whose
    owner never connects) is online in the factory with no handshake: it counts in
    fiovpn_devices_online_without_vpn, device1 (pinged, a live session) does not."""
    assert lab.factory is not None
    factory = lab.factory
    factory.checkin("device9")
    assert lab.ping("device1", "10.42.42.1")

    def silent() -> set[str]:
        now = time.time()
        online = {d["name"] for d in factory.devices()
                  if factory_online(d.get("status"), d.get("last-seen"), now)}
        return {p["name"] for p in device_peers(lab.server.status()) if p["name"] in online
                and (not p["latest_handshake"] or now - p["latest_handshake"] > 180)}

    def counted() -> tuple[float, set[str]] | None:
        reply = engineer.http("GET", f"{URL}/metrics")
        value = metric_value(reply.body, "fiovpn_devices_online_without_vpn") if reply.ok \
            else None
        names = silent()
        return (value, names) if value is not None and value == len(names) else None
    value, names = wait_for(counted, timeout=30, interval=1,
                            what="fiovpn_devices_online_without_vpn to count the silent devices")
    assert "device9" in names and "device1" not in names, names
    assert value >= 1


def test_a_device_cannot_open_the_page(lab: Lab, engineer: Engineer) -> None:
    device = lab.device("device1")
    assert lab.ping(device, "10.42.42.1")  # its tunnel works
    for path in ("/", "/metrics", "/api/status"):
        reply = device.http("GET", f"{URL}{path}", timeout=5)
        assert reply.status == 0, (path, reply)  # refused by the firewall: no answer at all
    assert not lab.tcp_connect(device, "10.42.42.1", 9100)
    assert engineer.http("GET", f"{URL}/metrics").ok  # while a client can
