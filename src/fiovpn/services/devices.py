"""Device operations over the factory API: list devices, enable or disable their VPN.

``enable_vpn`` does what ``fioctl devices config wireguard NAME enable`` does:
the device must have published its VPN public key; an existing address is
kept; otherwise the first free address after the factory's VPN server address
is chosen (skipping addresses of other devices and the engineers' client
pool); the new ``wireguard-client`` file is PATCHed with fioctl's reason and
handler.

Two ``enable-vpn`` runs at the same time (one machine or several) may both
pick the same free address. So after writing, ``wireguard-ips`` is read back
(SPEC section 10): while another device holds this device's address, this
device moves. Every run that sees a clash moves its own device, to the k-th
free address where k is its rank among the clashing devices (by name), so runs
that see the same clash land on different addresses; a later read-back
catches any new clash, for a bounded number of rounds.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
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
from fiovpn.errors import ApiNotFound, BadInput, NotFound, TemporaryError

log = logging.getLogger("fiovpn.devices")

ENABLE_REASON = "Set Wireguard configuration - enable"
DISABLE_REASON = "Set Wireguard configuration - disable"
RACE_ROUNDS = 10  # read-backs before giving up on an address of its own
RACE_JITTER = 0.25  # seconds (at most) between a clash and the move: breaks lockstep


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
    tag: str = ""
    online: bool = False

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
            "group": self.device_group or None,
            "tag": self.tag or None,
            "online": self.online,
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


# A device checks in every 5 minutes (fioconfig, aktualizr-lite): three missed check-ins
# and it counts as offline.
ONLINE_WINDOW_S = 15 * 60


def is_online(last_seen: str, now: float, window: float = ONLINE_WINDOW_S) -> bool:
    """Whether the factory heard from the device within ``window`` seconds of ``now``."""
    if not last_seen:
        return False
    try:
        seen = datetime.fromisoformat(last_seen.replace("Z", "+00:00"))
    except ValueError:
        return False
    if seen.tzinfo is None:
        return False
    return now - seen.timestamp() <= window


def list_devices(api: FactoryApi, *, group: str | None = None, tag: str | None = None,
                 online: bool = False, clock: Callable[[], float] = time.time
                 ) -> list[DeviceInfo]:
    """The factory's devices with their VPN state (one ``wireguard-ips`` call instead of
    fioctl's config read per device); ``group`` and ``tag`` go to the API's own list
    filters; ``online``: only devices seen within ``ONLINE_WINDOW_S``."""
    if group is not None:
        validate_name(group, what="device group")
    if tag is not None:
        validate_name(tag, what="tag")
    vpn: dict[str, WireguardIp] = {w.name: w for w in api.wireguard_ips()}
    found = (api.list_devices(group=group, tag=tag) if group is not None or tag is not None
             else api.list_devices())
    now = clock()
    out: list[DeviceInfo] = []
    for d in found:
        w = vpn.get(d.name)
        info = DeviceInfo(
            name=d.name,
            status=d.status,
            vpn_ip=w.ip if w else None,
            vpn_enabled=bool(w and w.enabled and w.ip is not None),
            last_seen=d.last_seen,
            target=d.target_name,
            pubkey=w.pubkey if w else None,
            uuid=d.uuid,
            device_group=d.device_group,
            tag=d.tag,
            online=is_online(d.last_seen, now),
        )
        if online and not info.online:
            continue
        out.append(info)
    return sorted(out, key=lambda i: i.name)


def device_names(api: FactoryApi, *, group: str | None = None,
                 tag: str | None = None) -> list[str]:
    """Names of the devices in ``group`` / with ``tag`` (the API's filters)."""
    return sorted(d.name for d in api.list_devices(group=group, tag=tag))


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


def _free_addresses(network: VpnNetwork, used: set[IPv4Address], count: int
                    ) -> list[IPv4Address]:
    taken = set(used) | {network.server}
    out: list[IPv4Address] = []
    for _ in range(count):
        ip = network.next_device_ip(taken)
        out.append(ip)
        taken.add(ip)
    return out


def settle_address(api: FactoryApi, name: str, ip: IPv4Address, pubkey: Key,
                   network: Callable[[], VpnNetwork], *, rounds: int = RACE_ROUNDS,
                   sleep: Callable[[float], None] = time.sleep,
                   jitter: Callable[[], float] = random.random) -> tuple[IPv4Address, bool]:
    """Read ``wireguard-ips`` back until no other device holds ``name``'s address,
    moving it when one does. Returns (address, moved). ``network`` is called only
    when a move is needed."""
    moved = False
    for _ in range(rounds):
        rows = api.wireguard_ips()
        mine = next((r for r in rows if r.name == name), None)
        if mine is not None and mine.ip is not None and mine.ip != ip and mine.enabled:
            ip = mine.ip  # another run enabled this same device meanwhile: check its address
        clash = sorted(r.name for r in rows if r.ip == ip and r.name != name)
        if not clash:
            return ip, moved
        rank = sorted([name, *clash]).index(name)
        used = {r.ip for r in rows if r.ip is not None}
        new_ip = _free_addresses(network(), used, rank + 1)[rank]
        log.info("device %s: %s is also held by %s (a concurrent enable-vpn); moving to %s",
                 name, ip, ", ".join(clash), new_ip)
        sleep(jitter() * RACE_JITTER)
        _patch(api, name, ENABLE_REASON, ClientConfigFile(address=new_ip, pubkey=pubkey,
                                                          enabled=True))
        ip, moved = new_ip, True
    raise TemporaryError(f"device {name!r} did not get a VPN address of its own after "
                         f"{rounds} tries: other enable-vpn runs keep taking them",
                         code="address_race", hint="run the same command again")


def enable_vpn(api: FactoryApi, name: str, *, subnet: str = DEFAULT_SUBNET,
               client_pool: str | None = None,
               sleep: Callable[[float], None] = time.sleep) -> VpnChange:
    """Put device ``name`` on the VPN; returns its VPN address (one no other device
    holds: a clash with a concurrent run is resolved by moving, SPEC section 10)."""
    validate_name(name, what="device name")
    wcc = _device_client_file(api, name)
    if wcc is None or wcc.pubkey is None:
        raise BadInput(f"device {name!r} has not published a VPN public key, so it cannot "
                       "join the VPN", code="no_pubkey",
                       hint="the device publishes it (pubkey= in its wireguard-client "
                            "config) once fioconfig's VPN support runs on it; check the "
                            "device is online and up to date")
    plan: list[VpnNetwork] = []

    def network() -> VpnNetwork:
        if not plan:
            plan.append(device_network(_server_file(api), subnet, client_pool))
        return plan[0]

    changed = True
    if wcc.address is not None:
        ip = wcc.address  # a re-enable keeps the address it had
        changed = not wcc.enabled
    else:
        used = {w.ip for w in api.wireguard_ips() if w.ip is not None}
        ip = network().next_device_ip(used | {network().server})
    if changed:
        _patch(api, name, ENABLE_REASON, ClientConfigFile(address=ip, pubkey=wcc.pubkey,
                                                          enabled=True))
    # also when it was enabled already: re-running repairs an old clash
    ip, moved = settle_address(api, name, ip, wcc.pubkey, network, sleep=sleep)
    return VpnChange(name, ip, True, changed=changed or moved)


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
