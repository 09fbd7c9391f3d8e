"""Prometheus metrics of the server (SPEC section 13), with the official
``prometheus_client``.

Two kinds: what the daemon counts as it runs (reconcile durations, factory
API errors by code) lives in :class:`DaemonMetrics`; what a scrape reads from
the current state (peers, handshakes, traffic, conflicts, the age of the
device list, devices online in the factory without a VPN session) is
collected from a :class:`~fiovpn.ops.view.StatusView` at scrape time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from fiovpn.core.peerrows import PeerRows
from fiovpn.core.presence import online_without_vpn, parse_time
from fiovpn.errors import api_error_code  # the `code` label: last_error_code's codes
from fiovpn.ops.view import StatusView

CONTENT_TYPE = CONTENT_TYPE_LATEST
CHUNK = 5000  # per-peer samples a piece of the exposition
# A reconcile is milliseconds at a few peers and seconds at 50,000.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, math.inf)


PEER_FAMILIES = (
    ("fiovpn_peer_latest_handshake_seconds", "gauge",
     "Unix time of the peer's latest WireGuard handshake (0: never)."),
    ("fiovpn_peer_receive_bytes_total", "counter", "Bytes received from the peer."),
    ("fiovpn_peer_transmit_bytes_total", "counter", "Bytes sent to the peer."),
)


def _escape(value: str) -> str:
    """A label value as the text format wants it (the escapes ``prometheus_client`` uses)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _int(value: Any) -> int:
    if type(value) is int:  # the usual case, first
        return value if value > 0 else 0
    return int(value) if isinstance(value, float) and value > 0 else 0


class PeerExposition:
    """The three per-peer families in the Prometheus text format.

    ``prometheus_client``'s exposition costs ~15-40 µs a sample here: 150,000
    samples at 50,000 peers would take seconds, far over a scrape's budget. Each
    peer's label part is built once per scrape (nothing kept between scrapes: at
    50,000 peers a memo would hold megabytes); values are integers (seconds,
    bytes). Tests parse this text with ``prometheus_client``'s own parser and
    check it against what the library writes for the same samples.
    """

    def render(self, peers: Sequence[dict[str, Any]]) -> str:
        return b"".join(self.render_chunks(peers)).decode()

    def render_chunks(self, peers: Sequence[dict[str, Any]]) -> Iterator[bytes]:
        """The text as encoded pieces of ``CHUNK`` samples (what ``/metrics`` streams:
        at 50,000 peers the whole text is ~16 MB, which need never be held at once,
        let alone twice)."""
        if isinstance(peers, PeerRows):  # the daemon's last pass: no dict per peer
            samples: list[tuple[Any, ...]] = list(peers.samples())
        else:
            samples = [(p.get("kind"), p.get("name"), p.get("ip"), p.get("latest_handshake"),
                        p.get("rx"), p.get("tx")) for p in peers if isinstance(p, dict)]
        labels = [_labels(s[0], s[1], s[2]) for s in samples]
        for (name, kind, text), index in zip(PEER_FAMILIES, (3, 4, 5), strict=True):
            yield f"# HELP {name} {text}\n# TYPE {name} {kind}\n".encode()
            for start in range(0, len(samples), CHUNK):
                # the hot loop at 50,000 peers: kept plain on purpose (a positive int,
                # the usual value, without a call)
                yield "".join([
                    f"{name}{label}{v if type(v := s[index]) is int and v > 0 else _int(v)}\n"
                    for label, s in zip(labels[start:start + CHUNK],
                                        samples[start:start + CHUNK], strict=True)]).encode()


_NEEDS_ESCAPE = frozenset('\\"\n')


def _label_value(value: Any) -> str:
    text = "" if value is None else value if type(value) is str else str(value)
    return _escape(text) if not _NEEDS_ESCAPE.isdisjoint(text) else text


def _labels(kind: Any, name: Any, ip: Any) -> str:
    if type(name) is not str or '"' in name or "\\" in name or "\n" in name:
        name = _label_value(name)
    if type(ip) is not str or '"' in ip or "\\" in ip or "\n" in ip:
        ip = _label_value(ip)
    return f'{{kind="{"client" if kind == "client" else "device"}",name="{name}",ip="{ip}"}} '


class StateCollector(Collector):
    """The aggregate metrics a scrape reads from the current state."""

    def __init__(self, view: StatusView) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        doc = self.view.snapshot()
        now = self.view.clock()
        counts = {"client": 0, "device": 0}
        device_handshakes: dict[str, float | None] = {}
        peers = doc.get("peers") or ()
        samples: Iterable[tuple[Any, ...]] = (
            peers.samples() if isinstance(peers, PeerRows)
            else ((p.get("kind"), p.get("name"), p.get("ip"), p.get("latest_handshake"))
                  for p in peers if isinstance(p, dict)))
        for s in samples:
            kind = "client" if s[0] == "client" else "device"
            counts[kind] += 1
            if kind == "device" and s[1]:
                device_handshakes[str(s[1])] = _int(s[3]) or None
        by_kind = GaugeMetricFamily("fiovpn_peers", "Peers the server holds, by kind.",
                                    labels=["kind"])
        for kind, n in counts.items():
            by_kind.add_metric([kind], n)
        yield by_kind
        yield GaugeMetricFamily("fiovpn_conflicts",
                                "Clients not applied because their IP or key is taken.",
                                value=len(doc.get("conflicts") or ()))
        yield GaugeMetricFamily(
            "fiovpn_device_list_stale_seconds",
            "Seconds since the last good device list from the factory (+Inf: never).",
            value=device_list_age(doc, now))
        online = self.view.online_devices()
        if online is not None:
            # An HA standby holds no sessions by design (SPEC 14): 0, never an alarm
            # there; the active counts for the pair.
            expected = doc.get("expect_handshakes") is not False
            yield GaugeMetricFamily(
                "fiovpn_devices_online_without_vpn",
                "VPN-enabled devices the factory sees online with no WireGuard handshake "
                "for 3 minutes (0 on an HA standby, which holds no sessions).",
                value=len(online_without_vpn(online, device_handshakes, now))
                if expected else 0)


def device_list_age(doc: dict[str, Any], now: float) -> float:
    """``device_list_age_s`` when the status has it, else the age of ``last_success``."""
    age = doc.get("device_list_age_s")
    if isinstance(age, int | float) and not isinstance(age, bool):
        return float(age)
    success = parse_time(doc.get("last_success"))
    return math.inf if success is None else max(0.0, now - success)


class DaemonMetrics:
    """The daemon's registry: its own counters plus the state collector."""

    def __init__(self, view: StatusView | None = None) -> None:
        # No *_created series: they would double the output and say nothing here.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=False)
        self.reconcile_duration = Histogram(
            "fiovpn_reconcile_duration_seconds", "Time of one reconcile pass.",
            buckets=DURATION_BUCKETS, registry=self.registry)
        self.api_errors = Counter(
            "fiovpn_factory_api_errors", "Failed FoundriesFactory API reads, by code.",
            labelnames=["code"], registry=self.registry)
        for code in ("auth_failed", "api_unreachable", "api_error"):
            self.api_errors.labels(code=code)  # every code present from the start, at 0
        self.view = view
        self.peers = PeerExposition()
        if view is not None:
            self.registry.register(StateCollector(view))

    def observe_pass(self, seconds: float, api_error: BaseException | None) -> None:
        self.reconcile_duration.observe(seconds)
        if api_error is not None:
            self.api_errors.labels(code=api_error_code(api_error)).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return b"".join(self.render_chunks())

    def render_chunks(self) -> Iterator[bytes]:
        """``render()`` a piece at a time (the per-peer families in pieces of
        ``CHUNK`` samples)."""
        yield generate_latest(self.registry)
        if self.view is not None:
            yield from self.peers.render_chunks(self.view.snapshot().get("peers") or ())
