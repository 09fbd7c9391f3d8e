from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from fiovpn.core.factory_files import ClientConfigFile, ServerConfigFile, parse_endpoint
from fiovpn.core.keys import KeyPair
from fiovpn.errors import BadInput

PUB = KeyPair.generate().public


def test_server_file_round_trip_and_exact_keys() -> None:
    text = f"endpoint=vpn.example.com:5555\nserver_address=10.42.42.1\npubkey={PUB}"
    cfg = ServerConfigFile.parse(text)
    assert cfg.render() == text
    assert cfg.endpoint_port == 5555
    disabled = ServerConfigFile(cfg.endpoint, cfg.server_address, cfg.pubkey, enabled=False)
    assert disabled.render() == text + "\nenabled=0"
    assert ServerConfigFile.parse(disabled.render()) == disabled


def test_client_file_before_enable_has_only_pubkey() -> None:
    cfg = ClientConfigFile.parse(f"pubkey={PUB}")
    assert cfg.address is None and cfg.pubkey == PUB and cfg.enabled
    enabled = ClientConfigFile(IPv4Address("10.42.42.2"), PUB)
    assert enabled.render() == f"address=10.42.42.2\npubkey={PUB}"
    assert ClientConfigFile.parse(enabled.render() + "\nenabled=0").enabled is False


@pytest.mark.parametrize("text,match", [
    ("endpoint=a:1\nserver_address=10.42.42.1\npubkey=x", "invalid WireGuard server pubkey"),
    (f"endpoint=a:1\nserver_address=10.42.42.1\npubkey={PUB}\nmtu=1400", "unknown key 'mtu'"),
    (f"endpoint=a:1\nserver_address=nope\npubkey={PUB}", "invalid server_address"),
    ("endpoint=a:1", "missing server_address, pubkey"),
    ("garbage", "missing endpoint, server_address, pubkey"),  # the line is skipped
    ("=value\nendpoint=a:1", "line 1: expected key=value"),
], ids=["bad-pubkey", "unknown-key", "bad-address", "missing-two", "garbage", "no-key"])
def test_bad_server_files(text: str, match: str) -> None:
    with pytest.raises(BadInput, match=match):
        ServerConfigFile.parse(text)


def test_endpoint() -> None:
    assert parse_endpoint("vpn.example.com", default_port=5555) == "vpn.example.com:5555"
    assert parse_endpoint("198.18.0.1:6000") == "198.18.0.1:6000"
    for bad in ("host:99999", "a b:1", "h;rm:1", ":5"):
        with pytest.raises(BadInput):
            parse_endpoint(bad, default_port=1)


def test_reading_is_as_lenient_as_fioctl_writing_is_exact(caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    text = f"address=10.42.42.7\n# a note someone added\npubkey={PUB}\nenabled=yes\n"
    cfg = ClientConfigFile.parse(text)
    # the line without '=' is skipped with a warning; enabled is off only when 0
    assert cfg.address == IPv4Address("10.42.42.7") and cfg.pubkey == PUB and cfg.enabled
    assert "line 2" in caplog.text and "skipped" in caplog.text
    assert "enabled='yes'" in caplog.text
    assert ClientConfigFile.parse(f"pubkey={PUB}\nenabled=2").enabled
    assert not ClientConfigFile.parse(f"pubkey={PUB}\nenabled= 0 ").enabled
    # what fiovpn writes back is exactly fioctl's keys
    assert cfg.render() == f"address=10.42.42.7\npubkey={PUB}"
    fresh = ClientConfigFile.parse(f"enabled=0\npubkey={PUB}")  # a fresh device's own file
    assert fresh.address is None and not fresh.enabled
    server = ServerConfigFile.parse(f"endpoint=h:1\nserver_address=10.42.42.1\n"
                                    f"pubkey={PUB}\nenabled=true")
    assert server.enabled and "enabled" not in server.render()
