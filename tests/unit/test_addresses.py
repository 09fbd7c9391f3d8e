from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fiovpn.core.addresses import VpnNetwork
from fiovpn.errors import BadInput, Conflict

NET = VpnNetwork.build()


def ip(s: str) -> IPv4Address:
    return IPv4Address(s)


def test_defaults() -> None:
    assert str(NET.server) == "10.42.42.1"
    assert str(NET.pool) == "10.42.42.200-10.42.42.254"


def test_device_ip_is_first_free_after_server() -> None:
    assert NET.next_device_ip([]) == ip("10.42.42.2")
    assert NET.next_device_ip([ip("10.42.42.2"), ip("10.42.42.4")]) == ip("10.42.42.3")


def test_device_ip_skips_client_pool_and_reports_full() -> None:
    used = [IPv4Address(n) for n in range(int(ip("10.42.42.2")), int(ip("10.42.42.200")))]
    with pytest.raises(Conflict, match="no free device address"):
        NET.next_device_ip(used)


def test_large_subnet_skips_dot_zero() -> None:
    net = VpnNetwork.build("10.42.0.0/16", "10.42.0.1")
    used = [IPv4Address(n) for n in range(int(ip("10.42.0.2")), int(ip("10.42.1.0")))]
    assert net.next_device_ip(used) == ip("10.42.1.1")
    assert str(net.pool) == "10.42.255.200-10.42.255.254"


def test_client_ip_checks() -> None:
    assert NET.next_client_ip([ip("10.42.42.200")]) == ip("10.42.42.201")
    with pytest.raises(BadInput, match="not a host address"):
        NET.check_client_ip(ip("10.9.9.9"), [])
    with pytest.raises(BadInput, match="outside the client pool"):
        NET.check_client_ip(ip("10.42.42.5"), [])
    with pytest.raises(Conflict, match="already taken"):
        NET.check_client_ip(ip("10.42.42.210"), [ip("10.42.42.210")])


@pytest.mark.parametrize("subnet,pool", [("10.42.42.0/33", None), ("nope", None),
                                         ("10.42.42.0/24", "10.42.42.250-10.42.42.240"),
                                         ("10.42.42.0/24", "10.42.43.1-10.42.43.9")])
def test_bad_network_settings(subnet: str, pool: str | None) -> None:
    with pytest.raises(BadInput):
        VpnNetwork.build(subnet, None, pool)


@given(st.sets(st.integers(min_value=2, max_value=199), max_size=150))
def test_allocated_device_ip_is_never_used_nor_in_pool(used_octets: set[int]) -> None:
    used = [ip(f"10.42.42.{n}") for n in used_octets]
    got = NET.next_device_ip(used)
    assert got not in used and got not in NET.pool and got != NET.server
    assert all(ip(f"10.42.42.{n}") in used for n in range(2, int(str(got).split(".")[3])))


@pytest.mark.parametrize("subnet,pool,first_device", [
    ("10.42.42.0/24", "10.42.42.200-10.42.42.254", "10.42.42.2"),
    ("10.42.42.0/26", "10.42.42.48-10.42.42.62", "10.42.42.2"),
    ("10.42.42.0/28", "10.42.42.12-10.42.42.14", "10.42.42.2"),
    ("10.42.42.0/30", "10.42.42.2-10.42.42.2", None),
])
def test_small_subnets_leave_room_for_devices(subnet: str, pool: str,
                                              first_device: str | None) -> None:
    net = VpnNetwork.build(subnet)
    assert str(net.pool) == pool
    if first_device is None:
        with pytest.raises(Conflict):
            net.next_device_ip([])
    else:
        assert net.next_device_ip([]) == ip(first_device)
