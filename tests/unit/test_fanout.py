"""fiovpn exec selection and fan-out, devices list filters, the --wait poller: fakes
for the factory and for ssh, no network."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from fiovpn.adapters.factory_api import Device, WireguardIp
from fiovpn.adapters.runner import Completed, FakeRunner
from fiovpn.adapters.ssh import SshOptions
from fiovpn.errors import BadInput, NotFound
from fiovpn.services import devices, fanout, reachability
from fiovpn.services.device_access import DeviceTarget
from fiovpn.settings import ClientSettings

NOW = 1_800_000_000.0


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))


@dataclass
class Api:
    factory: str = "acme"
    filters: list[dict[str, Any]] = field(default_factory=list)
    devs: list[Device] = field(default_factory=lambda: [
        Device("d1", device_group="lab", tag="beta", last_seen=iso(NOW - 60)),
        Device("d2", device_group="lab", last_seen=iso(NOW - 3600)),
        Device("d3", device_group="prod", tag="beta", last_seen=""),
        Device("d4", device_group="lab"),
    ])

    def wireguard_ips(self) -> list[WireguardIp]:
        return [WireguardIp(f"d{i}", IPv4Address(f"10.42.42.{i + 1}"), True, None)
                for i in (1, 2, 3)] + [WireguardIp("d4", IPv4Address("10.42.42.9"), False,
                                                   None)]

    def list_devices(self, *, group: str | None = None, tag: str | None = None
                     ) -> list[Device]:
        self.filters.append({"group": group, "tag": tag})
        return [d for d in self.devs if (group is None or d.device_group == group)
                and (tag is None or d.tag == tag)]


def names_of(api: Api) -> Any:
    return lambda **kw: devices.device_names(api, **kw)  # type: ignore[arg-type]


def test_group_and_tag_go_to_the_api_and_off_vpn_devices_are_named_not_run() -> None:
    api = Api()
    sel = fanout.select(api, group="lab", list_names=names_of(api))  # type: ignore[arg-type]
    assert [t.name for t in sel.targets] == ["d1", "d2"] and sel.skipped == ["d4"]
    assert api.filters[-1] == {"group": "lab", "tag": None}
    sel = fanout.select(api, tag="beta", list_names=names_of(api))  # type: ignore[arg-type]
    assert [t.name for t in sel.targets] == ["d1", "d3"]
    everything = fanout.select(api, all_devices=True)  # type: ignore[arg-type]
    assert [t.name for t in everything.targets] == ["d1", "d2", "d3"]


@pytest.mark.parametrize(("kw", "error"), [
    ({"names": ["nope"]}, NotFound), ({"names": ["d4"]}, BadInput),
    ({"group": "none"}, NotFound), ({}, BadInput), ({"names": ["d1"], "all_devices": True},
                                                    BadInput),
    ({"group": "a;b"}, BadInput),
])
def test_bad_selection_is_bad_input(kw: dict[str, Any], error: type[Exception]) -> None:
    api = Api()
    with pytest.raises(error):
        fanout.select(api, list_names=names_of(api), **kw)  # type: ignore[arg-type]


def settings(tmp_path: Path) -> ClientSettings:
    return ClientSettings(config=tmp_path / "wg.conf", user="root")


def test_run_many_keeps_outputs_apart_and_one_dead_device_holds_no_other(
        tmp_path: Path) -> None:
    runner = FakeRunner()
    running = {"now": 0, "max": 0}
    lock = threading.Lock()

    def ssh(argv: Any, _stdin: str | None) -> Completed:
        host = argv[argv.index("--") + 1]
        with lock:
            running["now"] += 1
            running["max"] = max(running["max"], running["now"])
        time.sleep(0.05)
        with lock:
            running["now"] -= 1
        if host == "10.42.42.3":
            return Completed(tuple(argv), 255, "", "")  # (the ssh log decides; see below)
        return Completed(tuple(argv), 0 if host != "10.42.42.4" else 3, f"out {host}\n", "")

    runner.on("ssh", reply=ssh)
    targets = [DeviceTarget(f"d{i}", IPv4Address(f"10.42.42.{i + 1}"), "factory")
               for i in range(1, 7)]
    done: list[str] = []
    results = fanout.run_many(settings(tmp_path), runner, targets, ["uname", "-n"],
                              parallel=2, timeout=5, options=SshOptions(),
                              on_done=lambda r: done.append(r.name))
    assert [r.name for r in results] == [t.name for t in targets]
    assert sorted(done) == sorted(t.name for t in targets)
    assert running["max"] <= 2, "never more than --parallel at once"
    by = {r.name: r for r in results}
    assert by["d1"].stdout == b"out 10.42.42.2\n" and by["d1"].ok
    assert by["d3"].exit_code == 3 and not by["d3"].ok
    assert by["d2"].exit_code == 255
    argv = runner.calls[0][0]
    assert "ConnectTimeout=5" in argv, "the per-device timeout bounds the connect too"
    row = by["d1"].to_json()
    assert set(row) == {"name", "vpn_ip", "exit_code", "stdout", "stderr", "duration_s",
                        "error"}


def test_run_many_reports_a_device_that_cannot_be_reached(tmp_path: Path) -> None:
    runner = FakeRunner()

    def ssh(argv: Any, _stdin: str | None) -> Completed:
        # write what ssh would log with -E: a connection failure
        log = Path(argv[argv.index("-E") + 1])
        log.write_text("ssh: connect to host 10.42.42.2 port 22: Connection timed out\n")
        return Completed(tuple(argv), 255, "", "")

    runner.on("ssh", reply=ssh)
    [r] = fanout.run_many(settings(tmp_path), runner,
                          [DeviceTarget("d1", IPv4Address("10.42.42.2"), "factory")],
                          ["true"], timeout=3, options=SshOptions())
    assert r.exit_code is None and r.error is not None and "cannot connect" in r.error


@pytest.mark.parametrize(("parallel", "timeout"), [(0, 5.0), (1000, 5.0), (2, 0.0)])
def test_bad_limits(tmp_path: Path, parallel: int, timeout: float) -> None:
    runner = FakeRunner()
    with pytest.raises(BadInput):
        fanout.run_many(settings(tmp_path), runner, [], ["true"], parallel=parallel,
                        timeout=timeout, options=SshOptions())
    assert runner.calls == []


def test_devices_list_filters_and_online() -> None:
    api = Api()
    rows = devices.list_devices(api, group="lab", clock=lambda: NOW)  # type: ignore[arg-type]
    assert [r.name for r in rows] == ["d1", "d2", "d4"]
    assert api.filters[-1] == {"group": "lab", "tag": None}
    j = rows[0].to_json()
    assert (j["group"], j["tag"], j["online"]) == ("lab", "beta", True)
    assert j["last_seen"] == iso(NOW - 60)
    online = devices.list_devices(api, online=True, clock=lambda: NOW)  # type: ignore[arg-type]
    assert [r.name for r in online] == ["d1"]
    with pytest.raises(BadInput):
        devices.list_devices(api, tag="x y")  # type: ignore[arg-type]


def test_wait_reachable_times_each_device_from_its_own_start() -> None:
    clock = {"t": 100.0}
    answers_at = {IPv4Address("10.42.42.2"): 103.0, IPv4Address("10.42.42.3"): 1e9}
    lock = threading.Lock()

    def probe(ip: IPv4Address, _timeout: float) -> bool:
        return clock["t"] >= answers_at[ip]

    def sleep(s: float) -> None:
        with lock:
            clock["t"] += max(s, 0.01)

    got = reachability.wait_reachable(
        [("a", IPv4Address("10.42.42.2"), 101.0), ("b", IPv4Address("10.42.42.3"), 100.0)],
        timeout=10, probe=probe, clock=lambda: clock["t"], sleep=sleep)
    assert got[0].name == "a" and got[0].after_s is not None and 1.9 <= got[0].after_s <= 3
    assert got[1].after_s is None
