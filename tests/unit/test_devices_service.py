"""Device VPN operations against an in-memory FactoryApi fake."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from ipaddress import IPv4Address

import pytest

from fiovpn.adapters.factory_api import (
    ConfigEntry,
    ConfigFile,
    Device,
    FactoryApi,
    WireguardIp,
    current_file,
)
from fiovpn.core.factory_files import VPN_HANDLER, ClientConfigFile
from fiovpn.core.keys import Key
from fiovpn.errors import ApiNotFound, BadInput, Conflict, NotFound, TemporaryError
from fiovpn.services.devices import disable_vpn, enable_vpn, list_devices


def key(n: int) -> str:
    return base64.b64encode(bytes([n]) * 32).decode()


SERVER_KEY = key(250)


@dataclass
class FakeFactory:
    """Just enough of the factory: device configs, the factory config, a patch log."""

    factory: str = "acme"
    devices: dict[str, list[ConfigEntry]] = field(default_factory=dict)
    config: list[ConfigEntry] = field(default_factory=list)
    patches: list[tuple[str, str, list[ConfigFile]]] = field(default_factory=list)

    def add(self, name: str, value: str | None) -> None:
        files = () if value is None else (ConfigFile("wireguard-client", value, True,
                                                     (VPN_HANDLER,)),)
        self.devices[name] = [ConfigEntry("t0", "published", files)] if files else []

    def server(self, address: str = "10.42.42.1", enabled: bool = True) -> None:
        value = f"endpoint=vpn.test:5555\nserver_address={address}\npubkey={SERVER_KEY}"
        if not enabled:
            value += "\nenabled=0"
        self.config = [ConfigEntry("t0", "server", (ConfigFile("wireguard-server", value),))]

    # -- FactoryApi ----------------------------------------------------------------------

    def wireguard_ips(self) -> list[WireguardIp]:
        out = []
        for name, history in self.devices.items():
            f = current_file(history, "wireguard-client")
            if f is None:
                continue
            wcc = ClientConfigFile.parse(f.value)
            out.append(WireguardIp(name, wcc.address, wcc.enabled and wcc.address is not None,
                                   wcc.pubkey))
        return out

    def factory_config(self) -> list[ConfigEntry]:
        return self.config

    def patch_factory_config(self, reason: str, files: list[ConfigFile]) -> None:
        raise AssertionError("device operations never patch the factory config")

    def device_config(self, device: str) -> list[ConfigEntry]:
        if device not in self.devices:
            raise ApiNotFound(f"device {device!r} not found")
        return self.devices[device]

    def patch_device_config(self, device: str, reason: str, files: list[ConfigFile]) -> None:
        self.patches.append((device, reason, files))
        self.devices[device].insert(0, ConfigEntry("t1", reason, tuple(files)))

    def list_devices(self) -> list[Device]:
        return [Device(name, status="OK", last_seen="2026-01-01T00:00:00+00:00",
                       target_name="lmp-42") for name in self.devices]

    def get_device(self, device: str) -> Device:
        if device not in self.devices:
            raise ApiNotFound(f"device {device!r} not found")
        return Device(device)


def factory() -> FakeFactory:
    f = FakeFactory()
    f.server()
    f.add("on-2", f"address=10.42.42.2\npubkey={key(2)}")
    f.add("off-3", f"address=10.42.42.3\npubkey={key(3)}\nenabled=0")  # disabled keeps .3
    f.add("new", f"pubkey={key(9)}")
    f.add("keyless", None)
    return f


def _typed(f: FakeFactory) -> FactoryApi:
    return f


def test_enable_takes_first_free_ip_after_the_server_and_patches_like_fioctl() -> None:
    f = factory()
    change = enable_vpn(_typed(f), "new")
    assert change.vpn_ip == IPv4Address("10.42.42.4") and change.changed
    assert len(f.patches) == 1
    device, reason, files = f.patches[0]
    assert device == "new" and reason == "Set Wireguard configuration - enable"
    assert files == [ConfigFile("wireguard-client", f"address=10.42.42.4\npubkey={key(9)}",
                                True, (VPN_HANDLER,))]
    assert files[0].to_json() == {"name": "wireguard-client",
                                  "value": f"address=10.42.42.4\npubkey={key(9)}",
                                  "unencrypted": True, "on-changed": [VPN_HANDLER]}


def test_enable_skips_the_client_pool() -> None:
    f = FakeFactory()
    f.server("10.42.42.1")
    for n in range(2, 200):
        f.add(f"d{n}", f"address=10.42.42.{n}\npubkey={key(n)}")
    f.add("last", f"pubkey={key(201)}")
    with pytest.raises(Conflict, match="no free device address"):
        enable_vpn(f, "last")  # .200-.254 belong to engineers
    assert f.patches == []
    change = enable_vpn(f, "last", client_pool="10.42.42.230-10.42.42.254")
    assert change.vpn_ip == IPv4Address("10.42.42.200")


def test_enable_with_a_server_higher_in_a_larger_subnet() -> None:
    f = FakeFactory()
    f.server("10.8.0.254")
    f.add("a", f"pubkey={key(1)}")
    change = enable_vpn(f, "a", subnet="10.8.0.0/16")
    assert change.vpn_ip == IPv4Address("10.8.0.255")  # .255 of a /16 is a host address
    f.add("b", f"pubkey={key(2)}")
    assert enable_vpn(f, "b", subnet="10.8.0.0/16").vpn_ip == IPv4Address("10.8.1.1")  # no .0


def test_re_enable_keeps_the_address() -> None:
    f = factory()
    change = enable_vpn(f, "off-3")
    assert change.vpn_ip == IPv4Address("10.42.42.3") and change.changed
    assert f.patches[0][2][0].value == f"address=10.42.42.3\npubkey={key(3)}"


def test_enable_of_an_enabled_device_changes_nothing() -> None:
    f = factory()
    change = enable_vpn(f, "on-2")
    assert change.vpn_ip == IPv4Address("10.42.42.2") and not change.changed
    assert f.patches == []


def test_disable_keeps_the_address_and_writes_enabled_0() -> None:
    f = factory()
    change = disable_vpn(f, "on-2")
    assert change.vpn_ip == IPv4Address("10.42.42.2") and not change.vpn_enabled
    _, reason, files = f.patches[0]
    assert reason == "Set Wireguard configuration - disable"
    assert files[0].value == f"address=10.42.42.2\npubkey={key(2)}\nenabled=0"
    assert files[0].on_changed == (VPN_HANDLER,) and files[0].unencrypted
    # and enabling it again brings back the same address
    assert enable_vpn(f, "on-2").vpn_ip == IPv4Address("10.42.42.2")


def test_disable_of_a_device_not_on_vpn_changes_nothing() -> None:
    f = factory()
    assert not disable_vpn(f, "new").changed
    assert not disable_vpn(f, "off-3").changed
    assert f.patches == []


def test_a_device_without_a_published_key_cannot_be_enabled() -> None:
    f = factory()
    with pytest.raises(BadInput, match="has not published a VPN public key") as info:
        enable_vpn(f, "keyless")
    assert info.value.code == "no_pubkey" and info.value.exit_code == 2
    assert f.patches == []


def test_unknown_device_is_not_found() -> None:
    f = factory()
    with pytest.raises(NotFound, match="'ghost' not found in factory 'acme'"):
        enable_vpn(f, "ghost")
    with pytest.raises(NotFound):
        disable_vpn(f, "ghost")


@pytest.mark.parametrize("server", ["none", "disabled"])
def test_enable_needs_an_enabled_vpn_server(server: str) -> None:
    f = factory()
    if server == "none":
        f.config = []
    else:
        f.server(enabled=False)
    with pytest.raises(BadInput, match="fiovpn server enable") as info:
        enable_vpn(f, "new")
    assert info.value.code == "no_vpn_server"
    assert f.patches == []


@pytest.mark.parametrize("name", ["new;reboot", "$(id)", "a b", "../new", "-rf", "new`x`", ""])
def test_bad_names_are_refused_before_any_api_call(name: str) -> None:
    class Untouchable(FakeFactory):
        def __getattribute__(self, attr: str) -> object:
            if attr in ("get_device", "device_config", "wireguard_ips", "factory_config",
                        "patch_device_config", "list_devices"):
                raise AssertionError(f"{attr} called for a bad name")
            return super().__getattribute__(attr)

    f = Untouchable()
    for operation in (enable_vpn, disable_vpn):
        with pytest.raises(BadInput, match="invalid device name"):
            operation(f, name)


def test_list_devices_joins_devices_and_vpn_state() -> None:
    rows = {r.name: r.to_json() for r in list_devices(factory())}
    assert list(rows) == sorted(rows)
    assert rows["on-2"] == {"name": "on-2", "status": "OK", "vpn_ip": "10.42.42.2",
                            "vpn_enabled": True, "last_seen": "2026-01-01T00:00:00+00:00",
                            "target": "lmp-42", "pubkey": key(2), "uuid": None,
                            "device_group": None, "group": None, "tag": None,
                            "online": False}
    assert rows["off-3"]["vpn_ip"] == "10.42.42.3" and rows["off-3"]["vpn_enabled"] is False
    assert rows["new"]["vpn_ip"] is None and rows["new"]["pubkey"] == key(9)
    assert rows["keyless"]["pubkey"] is None and rows["keyless"]["vpn_enabled"] is False
    assert Key.parse(rows["new"]["pubkey"])


class RacingFactory(FakeFactory):
    """A concurrent enable-vpn on another machine: right after our first write it
    writes ``rival`` onto the same address (it read the same free list as we did)."""

    def __init__(self, rival: str) -> None:
        super().__init__()
        self.rival = rival
        self.raced = False

    def patch_device_config(self, device: str, reason: str, files: list[ConfigFile]) -> None:
        super().patch_device_config(device, reason, files)
        if not self.raced and device != self.rival:
            self.raced = True
            ip = ClientConfigFile.parse(files[0].value).address
            rival_key = ClientConfigFile.parse(self.devices[self.rival][0].files[0].value).pubkey
            super().patch_device_config(self.rival, reason, [ConfigFile(
                "wireguard-client", f"address={ip}\npubkey={rival_key}", True, (VPN_HANDLER,))])


@pytest.mark.parametrize(("me", "rival", "mine"), [
    ("a-device", "b-device", "10.42.42.3"),   # rank 0 of the clash: the first free address
    ("b-device", "a-device", "10.42.42.4"),   # rank 1: the second, so both can move at once
])
def test_a_lost_race_moves_the_device_to_a_free_address(me: str, rival: str,
                                                         mine: str) -> None:
    f = RacingFactory(rival)
    f.server()
    f.add(me, f"enabled=0\npubkey={key(1)}")
    f.add(rival, f"enabled=0\npubkey={key(2)}")
    sleeps: list[float] = []
    change = enable_vpn(f, me, sleep=sleeps.append)
    assert str(change.vpn_ip) == mine and change.changed
    rows = {w.name: w.ip for w in f.wireguard_ips()}
    assert str(rows[rival]) == "10.42.42.2" and str(rows[me]) == mine  # distinct now
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.25


def test_re_running_enable_vpn_repairs_an_old_clash() -> None:
    f = FakeFactory()
    f.server()
    f.add("x1", f"address=10.42.42.2\npubkey={key(1)}")
    f.add("x2", f"address=10.42.42.2\npubkey={key(2)}")  # a clash left by an old race
    change = enable_vpn(f, "x2", sleep=lambda _s: None)
    # rank 1 of the clash (x1, x2): the second free address, .3 stays for x1's own move
    assert change.changed and str(change.vpn_ip) == "10.42.42.4"
    assert sorted(str(w.ip) for w in f.wireguard_ips()) == ["10.42.42.2", "10.42.42.4"]
    again = enable_vpn(f, "x2", sleep=lambda _s: None)  # settled: nothing written
    assert not again.changed and len(f.patches) == 1


def test_an_address_that_keeps_being_taken_is_a_temporary_error() -> None:
    class Thief(FakeFactory):
        def wireguard_ips(self) -> list[WireguardIp]:
            rows = super().wireguard_ips()
            me = next(r for r in rows if r.name == "me")
            return [*rows, WireguardIp("thief", me.ip, True, Key(key(9)))]

    f = Thief()
    f.server()
    f.add("me", f"enabled=0\npubkey={key(1)}")
    with pytest.raises(TemporaryError, match="did not get a VPN address of its own"):
        enable_vpn(f, "me", sleep=lambda _s: None)
    # every address it moved to was a device address, never one of the client pool
    ips = [ClientConfigFile.parse(p[2][0].value).address for p in f.patches]
    assert all(ip is not None and int(ip) < int(IPv4Address("10.42.42.200")) for ip in ips)
