"""Working on devices over the VPN: ``fiovpn ssh`` and device-to-device (on, off, status;
the device side is in :mod:`fiovpn.services.d2d`).

A device is named by its factory name (looked up in the factory's
``wireguard-ips``, else in the server-maintained hosts block) or by its VPN IP.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING, Any, TypeVar

from fiovpn.adapters.fs import read_text
from fiovpn.adapters.runner import Runner
from fiovpn.adapters.ssh import SshClient, SshOptions, SshTarget
from fiovpn.core.addresses import parse_subnet
from fiovpn.core.names import validate_name
from fiovpn.core.timespec import check_timeout
from fiovpn.errors import (
    BadInput,
    FiovpnError,
    NotFound,
)
from fiovpn.services import client_config, device_cache
from fiovpn.services.client_config import ApiFactory
from fiovpn.services.journal import record_device_call
from fiovpn.services.remote import ssh_options
from fiovpn.settings import ClientSettings

if TYPE_CHECKING:  # `fiovpn ssh` starts without the device-to-device code
    from fiovpn.core.d2d import D2dStatus
    from fiovpn.services import d2d

DEVICE_SSH_PORT = 22


@dataclass(frozen=True, slots=True)
class DeviceTarget:
    name: str
    ip: IPv4Address
    source: str  # "factory", "cache", "hosts" or "ip"


def check_device_ref(settings: ClientSettings, device: str) -> IPv4Address | str:
    """``device`` as the user gave it: a VPN IP (inside what the tunnel carries) or a
    valid device name. Bad input (BadInput) before anything is asked or probed."""
    try:
        ip = IPv4Address(device.strip())
    except ValueError:
        return validate_name(device, what="device name")
    networks = _tunnel_networks(settings)
    if not any(ip in n for n in networks):
        raise BadInput(f"{ip} is not a VPN address: the tunnel carries "
                       f"{', '.join(str(n) for n in networks)}", code="not_vpn_ip",
                       hint="give a device's name or its VPN IP (`fiovpn devices list`)")
    return ip


def resolve_device(settings: ClientSettings, device: str, *,
                   api: ApiFactory | None = None, cached: bool = False) -> DeviceTarget:
    """A device by VPN IP, or by name via the factory API, else the hosts block.
    ``cached``: a name the factory listed within ``device_cache_ttl`` seconds is taken
    from the device cache without asking (``fiovpn ssh``; source ``"cache"``)."""
    ref = check_device_ref(settings, device)
    if isinstance(ref, IPv4Address):
        return DeviceTarget(str(ref), ref, "ip")
    name = ref
    if cached:
        ip = device_cache.lookup(settings, name)
        if ip is not None:
            return DeviceTarget(name, ip, "cache")
    api_problem: str | None = None
    try:
        rows = (api or client_config.default_api(settings))().wireguard_ips()
    except FiovpnError as exc:  # no token, no factory, API down: the hosts block may know
        api_problem = str(exc)
        rows = None
    if rows is not None:
        device_cache.store(settings, rows)
        for row in rows:
            if row.name == name:
                if row.ip is None or not row.enabled:
                    raise BadInput(f"VPN is not enabled on device {name}", code="vpn_disabled",
                                   hint=f"run `fiovpn devices enable-vpn {name}`")
                return DeviceTarget(name, row.ip, "factory")
    from fiovpn.core.hosts import lookup as hosts_lookup  # here: rarely needed

    hosts = read_text(settings.hosts_file)
    found = hosts_lookup(hosts, name) if hosts else None
    if found is not None:
        return DeviceTarget(name, found, "hosts")
    where = ("the factory has no VPN-enabled device of that name" if rows is not None
             else f"the factory API could not be asked ({api_problem})")
    raise NotFound(f"unknown device {name!r}: {where}, and it is not in the VPN block of "
                   f"{settings.hosts_file}", code="unknown_device",
                   hint="see `fiovpn devices list`, or give the device's VPN IP")


def _tunnel_networks(settings: ClientSettings) -> tuple[IPv4Network, ...]:
    """What the client config routes through the tunnel (its server peer's AllowedIPs),
    else the VPN subnet setting."""
    try:
        from fiovpn.core import wgquick

        view = wgquick.client_view(client_config.load_config(settings.config))
    except FiovpnError:
        view = None
    return (view.allowed_ips if view is not None and view.allowed_ips
            else (_subnet(settings),))


def device_client(settings: ClientSettings, runner: Runner, target: DeviceTarget,
                  options: SshOptions | None = None) -> SshClient:
    user = validate_name(settings.user, what="device user")
    return SshClient(runner, SshTarget(user, str(target.ip), DEVICE_SSH_PORT),
                     options or ssh_options(settings))


def decode_output(data: bytes) -> tuple[str, bool]:
    """Output bytes as text: UTF-8, each byte that is not UTF-8 written as ``\\xNN``;
    and whether any was (so a reader knows the text is not the bytes themselves)."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="backslashreplace"), True


@dataclass(frozen=True)
class SshResult:
    name: str
    ip: IPv4Address
    exit_code: int
    stdout: bytes
    stderr: bytes

    def to_json(self) -> dict[str, Any]:
        out, out_escaped = decode_output(self.stdout)
        err, err_escaped = decode_output(self.stderr)
        return {"device": self.name, "ip": str(self.ip), "exit_code": self.exit_code,
                "stdout": out, "stderr": err, "stdout_escaped": out_escaped,
                "stderr_escaped": err_escaped}


def run_on_device(settings: ClientSettings, runner: Runner, device: str,
                  command: list[str], *, api: ApiFactory | None = None,
                  options: SshOptions | None = None, timeout: float | None = None,
                  cached: bool = False) -> SshResult:
    """Run ``command`` on the device (key auth, host keys checked, no stdin); its exit
    code and output bytes come back as they are. ``timeout``: stop waiting after it."""
    if not command:
        raise BadInput("no command given", code="bad_command")
    target, result = _with_fresh_ip(
        settings, device, api, cached,
        lambda t: device_client(settings, runner, t, options).capture(command, timeout=timeout))
    return SshResult(target.name, target.ip, result.returncode, result.stdout, result.stderr)


def ssh_session(settings: ClientSettings, runner: Runner, device: str, command: list[str],
                *, tty: bool, timeout: float | None = None,
                api: ApiFactory | None = None, cached: bool = False) -> int:
    """``fiovpn ssh``: OpenSSH's behaviour on our own stdio (stdin to the remote command,
    output streamed as bytes, a terminal when ``tty``); the remote exit code."""
    check_timeout(timeout)
    return _with_fresh_ip(
        settings, device, api, cached,
        lambda t: device_client(settings, runner, t).stream(command, tty=tty,
                                                            timeout=timeout))[1]


def ssh_command(settings: ClientSettings, runner: Runner, device: str, command: list[str],
                *, timeout: float | None = None, via: str = "cli") -> int:
    """The whole of ``fiovpn ssh DEVICE [-- CMD]`` (the full command line and the fast
    path in :mod:`fiovpn.entry` both run this): the engineer's journal line (the program
    only: arguments may hold what does not belong in a log), then :func:`ssh_session`
    with a terminal when no command is given and we are on one, the device's IP from
    the device cache when the factory listed it lately."""
    check_timeout(timeout)
    record_device_call(settings.journal, action="ssh", device=device, via=via,
                       detail={"program": command[0] if command else None})
    tty = not command and sys.stdin.isatty()
    return ssh_session(settings, runner, device, command, tty=tty, timeout=timeout,
                       cached=True)


T = TypeVar("T")

# ssh's own failures that a device IP out of date explains (it moved, or went away)
_STALE_IP_CODES = ("ssh_unreachable", "ssh_host_key", "ssh_failed")


def _with_fresh_ip(settings: ClientSettings, device: str, api: ApiFactory | None,
                   cached: bool, call: Callable[[DeviceTarget], T]) -> tuple[DeviceTarget, T]:
    """``call`` on the resolved device. When the IP came from the device cache and ssh
    could not get through to it (or met another host key), the cache is dropped, the
    factory asked, and ``call`` tried once more if the device has another IP now (ssh
    failed before the session began, so nothing was run and no input was read)."""
    target = resolve_device(settings, device, api=api, cached=cached)
    try:
        return target, call(target)
    except FiovpnError as exc:
        if target.source != "cache" or exc.code not in _STALE_IP_CODES:
            raise
        device_cache.forget(settings)
        fresh = resolve_device(settings, device, api=api)
        if fresh.ip == target.ip:
            raise
        return fresh, call(fresh)


# --- device-to-device ---------------------------------------------------------------------


def _subnet(settings: ClientSettings) -> IPv4Network:
    return parse_subnet(settings.subnet)


def _server_ip(settings: ClientSettings) -> IPv4Address:
    try:
        from fiovpn.core import wgquick

        view = wgquick.client_view(client_config.load_config(settings.config))
    except FiovpnError:
        view = None
    return client_config.server_vpn_address(settings, view)


def d2d_device(settings: ClientSettings, runner: Runner, target: DeviceTarget,
               options: SshOptions | None = None) -> d2d.Device:
    """The device as the d2d service works on it (SSH, its paths, the VPN plan)."""
    from fiovpn.services import d2d  # here: `fiovpn ssh` starts without it

    return d2d.Device(target.name, target.ip, device_client(settings, runner, target, options),
                      d2d.DevicePaths.from_settings(settings), _subnet(settings),
                      _server_ip(settings))


def set_device_to_device(settings: ClientSettings, runner: Runner, device: str, *,
                         enable: bool, api: ApiFactory | None = None,
                         options: SshOptions | None = None) -> dict[str, Any]:
    """Device-to-device on (lasting: the dispatcher hook) or off; idempotent."""
    target = resolve_device(settings, device, api=api)
    from fiovpn.services import d2d

    dev = d2d_device(settings, runner, target, options)
    return d2d.enable(dev) if enable else d2d.disable(dev)


def enable_d2d(settings: ClientSettings, runner: Runner, device: str, *,
               api: ApiFactory | None = None, options: SshOptions | None = None
               ) -> dict[str, Any]:
    return set_device_to_device(settings, runner, device, enable=True, api=api,
                                options=options)


def disable_d2d(settings: ClientSettings, runner: Runner, device: str, *,
                api: ApiFactory | None = None, options: SshOptions | None = None
                ) -> dict[str, Any]:
    return set_device_to_device(settings, runner, device, enable=False, api=api,
                                options=options)


def d2d_status(settings: ClientSettings, runner: Runner, device: str, *,
               api: ApiFactory | None = None, options: SshOptions | None = None
               ) -> D2dStatus:
    """The device's true device-to-device state: its live allowed-ips and the hook."""
    target = resolve_device(settings, device, api=api)
    return d2d_device(settings, runner, target, options).status()
