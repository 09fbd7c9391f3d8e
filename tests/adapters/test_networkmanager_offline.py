"""Real NetworkManager (``nmcli --offline``, no daemon) reads the keyfiles fiovpn
writes and edits as fiovpn means them, and the lab's stand-in nmcli reads every
value the way NetworkManager does (the exit code proves nothing: NetworkManager
drops what it cannot parse and exits 0)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from fiovpn.core import nmconnection
from fiovpn.core.factory_files import ServerConfigFile
from fiovpn.core.keys import KeyPair
from fiovpn.lab import networkmanager, nmcli
from fiovpn.lab.roles import handler_keyfile

pytestmark = pytest.mark.skipif(not networkmanager.available(),
                                reason="nmcli is not installed (scripts/install.sh --test "
                                       "installs network-manager)")

SUBNET = IPv4Network("10.42.42.0/24")
SERVER = IPv4Address("10.42.42.1")
KEY = KeyPair.generate()
SERVER_FILE = ServerConfigFile("198.18.0.1:5555", SERVER, KeyPair.generate().public)
HANDLER = handler_keyfile("factory-vpn0", KEY.private, SERVER_FILE, IPv4Address("10.42.42.2"))


def no_networkmanager_daemon() -> bool:
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "NetworkManager":
                return False
        except OSError:
            continue
    return True


def test_the_handlers_keyfile_is_the_server_only_and_a_slash_24() -> None:
    ips, addr = networkmanager.server_peer_view(HANDLER)
    assert ips == [IPv4Network("10.42.42.1/32")]
    assert addr == IPv4Interface("10.42.42.2/24")  # address1 without a prefix
    assert no_networkmanager_daemon()


def test_widened_and_restored_keyfiles_mean_what_fiovpn_says() -> None:
    doc = nmconnection.parse(HANDLER)
    wide = nmconnection.widen_server_peer(doc, SUBNET)
    ips, addr = networkmanager.server_peer_view(wide.render())
    assert ips == [SUBNET] and addr == IPv4Interface("10.42.42.2/24")
    back = nmconnection.restore_server_peer(wide, SERVER, SUBNET)
    ips, _ = networkmanager.server_peer_view(back.render())
    assert ips == [IPv4Network("10.42.42.1/32")]
    assert no_networkmanager_daemon()


@pytest.mark.parametrize("value", [
    "10.42.42.1", "10.42.42.0/24;", "10.42.42.1;10.42.42.0/24;",
    "10.42.42.0/24,10.42.42.1",  # a comma list: one unparsable entry, dropped
    "bogus;10.42.42.1;", "10.42.42.1/33;10.42.42.5/32", " 10.42.42.1 ; ;", "",
])
def test_the_stand_in_reads_allowed_ips_like_networkmanager(value: str) -> None:
    text = HANDLER.replace("allowed-ips=10.42.42.1\n", f"allowed-ips={value}\n")
    ips, _ = networkmanager.server_peer_view(text)
    assert nmcli.allowed_ips(value) == ips, value


@pytest.mark.parametrize("value", ["10.42.42.2", "10.42.42.2/16", "10.42.42.2/32",
                                   "10.42.42.2/24,10.42.42.1"])
def test_the_stand_in_reads_address1_like_networkmanager(value: str) -> None:
    text = HANDLER.replace("address1=10.42.42.2\n", f"address1={value}\n")
    _, addr = networkmanager.server_peer_view(text)
    assert nmcli.address(value) == addr, value
