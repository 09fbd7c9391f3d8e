"""Pure parts of the namespace lab: the handler's keyfile, wg dumps, TOML, records."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from fiovpn.core.factory_files import ServerConfigFile
from fiovpn.core.keys import Key
from fiovpn.errors import BadInput, NotFound
from fiovpn.lab import record
from fiovpn.lab.lab import DeviceSpec, _device_specs
from fiovpn.lab.proc import LabError
from fiovpn.lab.roles import handler_keyfile, parse_wg_dump
from fiovpn.settings import render_toml

DATA = Path(__file__).parent.parent / "data"


def test_keyfile_is_what_the_factory_handler_writes() -> None:
    recorded = (DATA / "factory-vpn0.nmconnection").read_text()
    server = ServerConfigFile("vpn.example.com:5555", IPv4Address("10.42.42.1"),
                              Key("+ROwjfXn/J3nfDA0WDG9zpqkWx9hwz5vhoUhVO3XTBU="))
    text = handler_keyfile("factory-vpn0", Key("sO3oaa8JZ3yW0B7oZAV+2HgOn3woxDtFMgxKKJDLPEQ="),
                           server, IPv4Address("10.42.42.2"))
    assert text == recorded


def test_wg_dump_peers() -> None:
    from fiovpn.core.keys import KeyPair

    srv, a, b = (KeyPair.generate() for _ in range(3))
    aaa, bbb = str(a.public), str(b.public)
    dump = (f"{srv.private}\t{srv.public}\t5555\toff\n"
            f"{aaa}\t(none)\t198.18.0.10:4000\t10.42.42.2/32\t1700000000\t10\t20\t25\n"
            f"{bbb}\t(none)\t(none)\t(none)\t0\t0\t0\toff\n")
    peers = parse_wg_dump(dump)
    assert peers[aaa].allowed_ips == ("10.42.42.2/32",)
    assert peers[aaa].endpoint == "198.18.0.10:4000"
    assert peers[aaa].latest_handshake == 1700000000
    assert peers[bbb].allowed_ips == () and peers[bbb].endpoint is None


def test_toml_rendering_quotes_strings_and_skips_unset() -> None:
    text = render_toml({"factory": "lab", "port": 5555, "allow": True, "api-url": None,
                        "ssh-options": ["A=b"], "path": 'we"ird'})
    assert text == ('factory = "lab"\nport = 5555\nallow = true\n'
                    'ssh-options = ["A=b"]\npath = "we\\"ird"\n')


def test_device_specs() -> None:
    assert _device_specs(2) == [DeviceSpec("device1"), DeviceSpec("device2")]
    assert _device_specs(["a", DeviceSpec("b", vpn=False)]) == [DeviceSpec("a"),
                                                               DeviceSpec("b", vpn=False)]
    with pytest.raises(LabError):
        _device_specs(["a", "a"])
    with pytest.raises(BadInput):
        _device_specs(["bad name;"])


def test_records_find_one_lab_and_its_roles(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        record.find(tmp_path, None)
    record.write(tmp_path, {"prefix": "fv0001", "roles": {
        "device1": {"ns": "fv0001d1", "device_name": "gw-a", "enter": ["ip"]}}})
    data = record.find(tmp_path, None)
    assert record.role(data, "gw-a")["ns"] == "fv0001d1"
    assert record.role(data, "device1")["ns"] == "fv0001d1"
    with pytest.raises(NotFound):
        record.role(data, "server")
    record.write(tmp_path, {"prefix": "fv0002", "roles": {}})
    with pytest.raises(BadInput, match="several labs"):
        record.find(tmp_path, None)
    assert record.find(tmp_path, "fv0002")["prefix"] == "fv0002"


def _ping_output(sent: int, answered: list[int]) -> str:
    lines = ["PING 10.42.42.2 (10.42.42.2) 56(84) bytes of data."]
    lines += [f"64 bytes from 10.42.42.2: icmp_seq={n} ttl=63 time=0.61 ms" for n in answered]
    lines += ["", "--- 10.42.42.2 ping statistics ---",
              f"{sent} packets transmitted, {len(answered)} received, "
              f"{100 * (sent - len(answered)) // sent}% packet loss, time 1950ms"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("sent,answered,lost", [
    (10, list(range(1, 11)), 0),
    (39, list(range(1, 39)), 0),                                   # last echo still in flight
    (39, [n for n in range(1, 40) if n != 17], 1),                 # a real gap
    (40, list(range(1, 31)), 9),                                   # tunnel died near the end
    (5, [], 5),
])
def test_ping_loss_counts_gaps_not_the_echo_in_flight(sent: int, answered: list[int],
                                                       lost: int) -> None:
    from fiovpn.lab.probes import ping_stats

    stats = ping_stats(_ping_output(sent, answered))
    assert stats is not None
    assert (stats.sent, stats.received, stats.lost) == (sent, len(answered), lost)
