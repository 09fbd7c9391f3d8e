"""/metrics: SPEC 13's names and values, parsed with prometheus_client's own parser."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fiovpn.core.presence import factory_online, online_without_vpn, parse_time
from fiovpn.errors import ApiError, ApiTemporaryError, AuthError
from fiovpn.ops.metrics import DaemonMetrics, PeerExposition, api_error_code
from fiovpn.ops.view import StatusView, journal_tail, live_grants

NOW = 1_800_000_000.0


def doc(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "server_address": "10.42.42.1",
        "last_success": "2027-01-15T08:00:00Z",
        "conflicts": [{"message": "client x: IP taken"}],
        "peers": [
            {"kind": "client", "name": "eng1", "ip": "10.42.42.200", "public_key": "k1",
             "latest_handshake": int(NOW) - 5, "rx": 1000, "tx": 2000},
            {"kind": "device", "name": "device1", "ip": "10.42.42.2", "public_key": "k2",
             "latest_handshake": int(NOW) - 30, "rx": 10, "tx": 20},
            {"kind": "device", "name": "device2", "ip": "10.42.42.3", "public_key": "k3",
             "latest_handshake": None, "rx": 0, "tx": 0},
            {"kind": "device", "name": "dev\"3", "ip": "10.42.42.4", "public_key": "k4",
             "latest_handshake": int(NOW) - 600, "rx": 0, "tx": 0},
        ],
    }
    base.update(extra)
    return base


class FixedPresence:
    def __init__(self, names: set[str] | None) -> None:
        self.names = names

    def online(self) -> frozenset[str] | None:
        return None if self.names is None else frozenset(self.names)


def view(data: dict[str, Any], online: set[str] | None = None,
         tmp: Path = Path("/nonexistent")) -> StatusView:
    v = StatusView(lambda: data, tmp, clock=lambda: NOW)
    v.presence = FixedPresence(online)  # type: ignore[assignment]
    return v


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_every_spec_metric_name_is_exposed() -> None:
    text = DaemonMetrics(view(doc(), online={"device1"})).render().decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    # the parser names counters without _total and histograms by their base name
    assert {"fiovpn_peers", "fiovpn_peer_latest_handshake_seconds",
            "fiovpn_peer_receive_bytes", "fiovpn_peer_transmit_bytes",
            "fiovpn_reconcile_duration_seconds", "fiovpn_factory_api_errors",
            "fiovpn_conflicts", "fiovpn_device_list_stale_seconds",
            "fiovpn_devices_online_without_vpn"} <= names
    assert "fiovpn_peer_receive_bytes_total{" in text
    assert "fiovpn_peer_transmit_bytes_total{" in text
    assert "fiovpn_factory_api_errors_total{" in text
    assert "_created" not in text


def test_values_follow_the_status_document() -> None:
    m = DaemonMetrics(view(doc(), online={"device1", "device2", "dev\"3", "offline-one"}))
    got = samples(m.render().decode())
    assert got[("fiovpn_peers", (("kind", "device"),))] == 3
    assert got[("fiovpn_peers", (("kind", "client"),))] == 1
    dev1 = (("ip", "10.42.42.2"), ("kind", "device"), ("name", "device1"))
    assert got[("fiovpn_peer_latest_handshake_seconds", dev1)] == int(NOW) - 30
    assert got[("fiovpn_peer_receive_bytes_total", dev1)] == 10
    assert got[("fiovpn_peer_transmit_bytes_total", dev1)] == 20
    never = (("ip", "10.42.42.3"), ("kind", "device"), ("name", "device2"))
    assert got[("fiovpn_peer_latest_handshake_seconds", never)] == 0
    quoted = (("ip", "10.42.42.4"), ("kind", "device"), ("name", 'dev"3'))
    assert got[("fiovpn_peer_latest_handshake_seconds", quoted)] == int(NOW) - 600
    assert got[("fiovpn_conflicts", ())] == 1
    # 2027-01-15T08:00:00Z is NOW - x seconds
    assert got[("fiovpn_device_list_stale_seconds", ())] == NOW - parse_time(
        "2027-01-15T08:00:00Z")  # type: ignore[operator]
    # device2 (never) and dev"3 (10 min) are online in the factory without a session;
    # device1 has one; offline-one is not a VPN peer at all
    assert got[("fiovpn_devices_online_without_vpn", ())] == 2


def test_stale_seconds_prefers_device_list_age_and_is_inf_without_success() -> None:
    got = samples(DaemonMetrics(view(doc(device_list_age_s=42))).render().decode())
    assert got[("fiovpn_device_list_stale_seconds", ())] == 42
    got = samples(DaemonMetrics(view(doc(last_success=None))).render().decode())
    assert math.isinf(got[("fiovpn_device_list_stale_seconds", ())])


def test_a_standby_raises_no_online_without_vpn_alarm() -> None:
    online = {"device1", "device2", "dev\"3"}
    standby = doc(role="standby", expect_handshakes=False)
    got = samples(DaemonMetrics(view(standby, online=online)).render().decode())
    assert got[("fiovpn_devices_online_without_vpn", ())] == 0
    active = doc(role="active", expect_handshakes=True)
    got = samples(DaemonMetrics(view(active, online=online)).render().decode())
    assert got[("fiovpn_devices_online_without_vpn", ())] == 2


def test_online_without_vpn_is_absent_until_the_factory_answered() -> None:
    text = DaemonMetrics(view(doc(), online=None)).render().decode()
    assert "fiovpn_devices_online_without_vpn" not in text


def test_reconcile_histogram_and_api_errors_by_code() -> None:
    m = DaemonMetrics(view(doc()))
    m.observe_pass(0.03, None)
    m.observe_pass(0.2, AuthError("refused"))
    m.observe_pass(0.2, ApiTemporaryError("down"))
    m.observe_pass(0.2, ApiTemporaryError("down"))
    got = samples(m.render().decode())
    assert got[("fiovpn_reconcile_duration_seconds_count", ())] == 4
    assert got[("fiovpn_reconcile_duration_seconds_bucket", (("le", "0.05"),))] == 1
    assert got[("fiovpn_factory_api_errors_total", (("code", "auth_failed"),))] == 1
    assert got[("fiovpn_factory_api_errors_total", (("code", "api_unreachable"),))] == 2
    assert got[("fiovpn_factory_api_errors_total", (("code", "api_error"),))] == 0


def test_api_error_codes() -> None:
    assert api_error_code(AuthError("x")) == "auth_failed"
    assert api_error_code(ApiTemporaryError("x")) == "api_unreachable"
    assert api_error_code(ApiError("x", status=400)) == "api_error"


def test_peer_text_means_what_prometheus_client_writes() -> None:
    """The fast per-peer writer against the library's own exposition of the same samples."""
    peers = doc()["peers"]

    class Lib:
        def collect(self):  # type: ignore[no-untyped-def]
            hs = GaugeMetricFamily("fiovpn_peer_latest_handshake_seconds", "h",
                                   labels=["kind", "name", "ip"])
            rx = CounterMetricFamily("fiovpn_peer_receive_bytes_total", "r",
                                     labels=["kind", "name", "ip"])
            tx = CounterMetricFamily("fiovpn_peer_transmit_bytes_total", "t",
                                     labels=["kind", "name", "ip"])
            for p in peers:
                labels = [p["kind"], p["name"], p["ip"]]
                hs.add_metric(labels, p["latest_handshake"] or 0)
                rx.add_metric(labels, p["rx"])
                tx.add_metric(labels, p["tx"])
            yield from (hs, rx, tx)

    registry = CollectorRegistry()
    registry.register(Lib())  # type: ignore[arg-type]
    ours = PeerExposition()
    assert samples(ours.render(peers)) == samples(generate_latest(registry).decode())
    assert samples(ours.render(peers)) == samples(ours.render(peers))  # memo reused


def test_presence_rules() -> None:
    assert factory_online("OK", "2027-01-15T08:00:00+00:00",
                          parse_time("2027-01-15T08:05:00Z") or 0)
    assert not factory_online("OK", "2027-01-15T08:00:00+00:00",
                              parse_time("2027-01-15T09:00:00Z") or 0)
    assert factory_online("OK", "", NOW)
    assert not factory_online("Offline", None, NOW)
    assert online_without_vpn({"a", "b", "c"}, {"a": NOW - 10, "b": NOW - 200, "d": None},
                              NOW) == ["b"]


def test_grants_and_journal_from_the_state_dir(tmp_path: Path) -> None:
    from fiovpn.core.grants import Grant
    from fiovpn.core.keys import KeyPair
    from fiovpn.services.grants import GrantStore

    key = KeyPair.generate().public
    now = parse_time("2027-01-15T08:00:00Z") or 0
    GrantStore(tmp_path / "grants.json").save([
        Grant(key, "eng1", "lab", None, int(now) + 3600),
        Grant(key, "eng1", None, "d1", int(now) - 10),  # ended
        Grant(key, "eng1", None, "d2", int(now) + 60),
    ])
    grants = live_grants(tmp_path / "grants.json", now)
    assert grants == [
        {"client": "eng1", "public_key": str(key), "group": None, "device": "d2",
         "expires": "2027-01-15T08:01:00Z", "remaining_s": 60},
        {"client": "eng1", "public_key": str(key), "group": "lab", "device": None,
         "expires": "2027-01-15T09:00:00Z", "remaining_s": 3600}]
    assert live_grants(tmp_path / "missing.json", now) == []
    (tmp_path / "bad.json").write_text("{not json")
    assert live_grants(tmp_path / "bad.json", now) == []
    lines = [json.dumps({"at": f"t{i}", "actor": "daemon", "action": "peer_added",
                         "target": f"d{i}", "detail": {}}) for i in range(100)]
    (tmp_path / "journal.jsonl").write_text("\n".join(lines[:50]) + "\nnot json\n"
                                            + "\n".join(lines[50:]) + "\n")
    tail = journal_tail(tmp_path / "journal.jsonl", 3)
    assert [e["target"] for e in tail] == ["d99", "d98", "d97"]
    assert len(journal_tail(tmp_path / "journal.jsonl", 1000)) == 100
    assert journal_tail(tmp_path / "nope.jsonl", 5) == []


def test_status_is_cached_for_a_moment() -> None:
    calls: list[int] = []
    t = [0.0]

    def fetch() -> dict[str, Any]:
        calls.append(1)
        return doc()

    v = StatusView(fetch, Path("/x"), ttl=1.0, monotonic=lambda: t[0])
    v.status()
    v.status()
    assert len(calls) == 1
    t[0] = 1.5
    v.status()
    assert len(calls) == 2


def test_a_scrape_reads_the_daemons_last_pass_not_a_fresh_status() -> None:
    """At 50,000 peers a fresh status (a `wg show dump`) costs more than a scrape may:
    with the daemon's last pass at hand, neither /metrics nor the source check asks
    for one; loopback is decided without any document."""
    from fiovpn.ops.app import allowed_source

    fresh: list[int] = []

    def status() -> dict[str, Any]:
        fresh.append(1)
        return doc(peers=[])

    last = doc()
    v = StatusView(status, Path("/nonexistent"), snapshot_fn=lambda: last, clock=lambda: NOW)
    got = samples(DaemonMetrics(v).render().decode())
    assert got[("fiovpn_peers", (("kind", "device"),))] == 3
    assert got[("fiovpn_peer_receive_bytes_total", (("ip", "10.42.42.2"), ("kind", "device"),
                                                     ("name", "device1")))] == 10
    assert allowed_source("10.42.42.200", v.snapshot)  # a client of the last pass
    assert not allowed_source("10.42.42.2", v.snapshot)  # a device
    assert fresh == []

    def unasked() -> dict[str, Any]:
        raise AssertionError("loopback needs no status document")
    assert allowed_source("127.0.0.1", unasked)
    # no daemon (no snapshot): the status document as before
    assert StatusView(status, Path("/nonexistent")).snapshot() == doc(peers=[])
    assert fresh == [1]
