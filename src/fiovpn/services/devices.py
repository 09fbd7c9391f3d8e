"""Device operations over the factory API: list devices, enable or disable their VPN.

``enable_vpn`` does what ``fioctl devices config wireguard NAME enable`` does:
the device must have published its VPN public key; an existing address is
kept; otherwise the first free address after the factory's VPN server address
is chosen (skipping addresses of other devices and the engineers' client
pool); the new ``wireguard-client`` file is PATCHed with fioctl's reason and
handler.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from fiovpn.adapters.factory_api import ConfigFile, FactoryApi, WireguardIp, current_file
from fiovpn.core.addresses import DEFAULT_SUBNET, VpnNetwork
from fiovpn.core.factory_files import (
    VPN_HANDLER,
    WIREGUARD_CLIENT_FILE,
    WIREGUARD_SERVER_FILE,
    ClientConfigFile,
    ServerConfigFile,
)
from fiovpn.core.keys import Key
from fiovpn.core.names import validate_name
from fiovpn.errors import ApiNotFound, BadInput, NotFound

ENABLE_REASON = "Set Wireguard configuration - enable"
DISABLE_REASON = "Set Wireguard configuration - disable"


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One row of ``devices list``."""

    name: str
    status: str
    vpn_ip: IPv4Address | None
    vpn_enabled: bool
    last_seen: str
    target: str
    pubkey: Key | None
    uuid: str = ""
    device_group: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "vpn_ip": None if self.vpn_ip is None else str(self.vpn_ip),
            "vpn_enabled": self.vpn_enabled,
            "last_seen": self.last_seen or None,
            "target": self.target or None,
            "pubkey": None if self.pubkey is None else str(self.pubkey),
            "uuid": self.uuid or None,
            "device_group": self.device_group or None,
        }


@dataclass(frozen=True, slots=True)
class VpnChange:
    """The outcome of ``enable_vpn`` / ``disable_vpn``."""

    name: str
    vpn_ip: IPv4Address | None
    vpn_enabled: bool
    changed: bool  # False: the device was already in that state, nothing was written

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "vpn_ip": None if self.vpn_ip is None else str(self.vpn_ip),
                "vpn_enabled": self.vpn_enabled, "changed": self.changed}


def list_devices(api: FactoryApi) -> list[DeviceInfo]:
    """Every device of the factory with its VPN state (one ``wireguard-ips`` call
    instead of fioctl's config read per device)."""
    vpn: dict[str, WireguardIp] = {w.name: w for w in api.wireguard_ips()}
    out: list[DeviceInfo] = []
    for d in api.list_devices():
        w = vpn.get(d.name)
        out.append(DeviceInfo(
            name=d.name,
            status=d.status,
            vpn_ip=w.ip if w else None,
            vpn_enabled=bool(w and w.enabled and w.ip is not None),
            last_seen=d.last_seen,
            target=d.target_name,
            pubkey=w.pubkey if w else None,
            uuid=d.uuid,
            device_group=d.device_group,
        ))
    return sorted(out, key=lambda i: i.name)


def _device_client_file(api: FactoryApi, name: str) -> ClientConfigFile | None:
    """The device's current ``wireguard-client`` file, after checking the device exists."""
    try:
        api.get_device(name)
    except ApiNotFound:
        raise NotFound(f"device {name!r} not found in factory {api.factory!r}",
                       hint="`fiovpn devices list` shows the factory's devices") from None
    current = current_file(api.device_config(name), WIREGUARD_CLIENT_FILE)
    if current is None:
        return None
    try:
        return ClientConfigFile.parse(current.value)
    except BadInput as exc:
        raise BadInput(f"device {name!r} has a {WIREGUARD_CLIENT_FILE} file fiovpn cannot "
                       f"read: {exc.message}", code="bad_config_file") from None


def _server_file(api: FactoryApi) -> ServerConfigFile:
    current = current_file(api.factory_config(), WIREGUARD_SERVER_FILE)
    if current is None:
        raise BadInput(f"factory {api.factory!r} has no VPN server configured "
                       f"(no {WIREGUARD_SERVER_FILE} file in its config)", code="no_vpn_server",
                       hint="run `fiovpn server enable` on the WireGuard server first")
    try:
        server = ServerConfigFile.parse(current.value)
    except BadInput as exc:
        raise BadInput(f"factory {api.factory!r} has a {WIREGUARD_SERVER_FILE} file fiovpn "
                       f"cannot read: {exc.message}", code="bad_config_file") from None
    if not server.enabled:
        raise BadInput(f"the VPN server of factory {api.factory!r} is disabled "
                       f"({WIREGUARD_SERVER_FILE} has enabled=0)", code="no_vpn_server",
                       hint="run `fiovpn server enable` on the WireGuard server")
    return server


def device_network(server: ServerConfigFile, subnet: str = DEFAULT_SUBNET,
                   client_pool: str | None = None) -> VpnNetwork:
    """The address plan around the factory's server address."""
    try:
        return VpnNetwork.build(subnet, str(server.server_address), client_pool)
    except BadInput as exc:
        raise BadInput(f"the factory's VPN server address {server.server_address} does not "
                       f"fit the VPN subnet settings: {exc.message}", code=exc.code,
                       hint="set `subnet` (and `client-pool`) in ~/.config/fiovpn/config.toml "
                            "to the server's subnet") from None


def _patch(api: FactoryApi, name: str, reason: str, wcc: ClientConfigFile) -> None:
    api.patch_device_config(name, reason, [
        ConfigFile(name=WIREGUARD_CLIENT_FILE, value=wcc.render(), unencrypted=True,
                   on_changed=(VPN_HANDLER,)),
    ])


def enable_vpn(api: FactoryApi, name: str, *, subnet: str = DEFAULT_SUBNET,
               client_pool: str | None = None) -> VpnChange:
    """Put device ``name`` on the VPN; returns its VPN address."""
    validate_name(name, what="device name")
    wcc = _device_client_file(api, name)
    if wcc is None or wcc.pubkey is None:
        raise BadInput(f"device {name!r} has not published a VPN public key, so it cannot "
                       "join the VPN", code="no_pubkey",
                       hint="the device publishes it (pubkey= in its wireguard-client "
                            "config) once fioconfig's VPN support runs on it; check the "
                            "device is online and up to date")
    if wcc.address is not None:
        if wcc.enabled:
            return VpnChange(name, wcc.address, True, changed=False)
        ip = wcc.address  # re-enable keeps the address it had
    else:
        network = device_network(_server_file(api), subnet, client_pool)
        used = {w.ip for w in api.wireguard_ips() if w.ip is not None}
        ip = network.next_device_ip(used | {network.server})
    _patch(api, name, ENABLE_REASON, ClientConfigFile(address=ip, pubkey=wcc.pubkey,
                                                      enabled=True))
    return VpnChange(name, ip, True, changed=True)


def disable_vpn(api: FactoryApi, name: str) -> VpnChange:
    """Take device ``name`` off the VPN; it keeps its address for a later re-enable."""
    validate_name(name, what="device name")
    wcc = _device_client_file(api, name)
    if wcc is None or (not wcc.enabled) or wcc.address is None:
        # never enabled, or already disabled: nothing to write
        return VpnChange(name, None if wcc is None else wcc.address, False, changed=False)
    _patch(api, name, DISABLE_REASON, ClientConfigFile(address=wcc.address,
                                                       pubkey=wcc.pubkey, enabled=False))
    return VpnChange(name, wcc.address, False, changed=True)
