"""Working on devices over the VPN: ``fiovpn ssh`` and device-to-device on/off.

A device is named by its factory name (looked up in the factory's
``wireguard-ips``, else in the server-maintained hosts block) or by its VPN IP.

Device-to-device needs the device's own route to the VPN subnet: the
``[wireguard-peer.<server>]`` group of its NetworkManager connection
``factory-vpn0`` gets ``allowed-ips`` widened from the server's address to the
subnet. The file is read with ``cat``, edited as a keyfile (never ``sed``),
written back atomically through stdin (its private key never appears in an
argv), then NetworkManager reloads and re-activates it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from fiovpn.adapters.fs import atomic_write, locked, read_text
from fiovpn.adapters.runner import Runner
from fiovpn.adapters.ssh import SshClient, SshOptions, SshTarget
from fiovpn.core import nmconnection
from fiovpn.core.addresses import parse_subnet
from fiovpn.core.hosts import lookup as hosts_lookup
from fiovpn.core.names import validate_name
from fiovpn.errors import (
    BadInput,
    FiovpnError,
    NotFound,
    PermanentError,
    RemoteCommandError,
)
from fiovpn.services import client_config
from fiovpn.services.client_config import ApiFactory
from fiovpn.services.remote import ssh_options
from fiovpn.settings import ClientSettings

VPN_ID = "factory-vpn0"
KEYFILE = f"/etc/NetworkManager/system-connections/{VPN_ID}.nmconnection"
DEVICE_SSH_PORT = 22
HANDLER_WARNING = (
    "the device's config handler (fioconfig factory-config-vpn) rewrites this connection "
    "whenever the factory's VPN config changes, which turns device-to-device off again: "
    "run enable-d2d again after such a change (`fiovpn doctor --device NAME` notices)")


@dataclass(frozen=True, slots=True)
class DeviceTarget:
    name: str
    ip: IPv4Address
    source: str  # "factory", "hosts" or "ip"


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
                   api: ApiFactory | None = None) -> DeviceTarget:
    """A device by VPN IP, or by name via the factory API, else the hosts block."""
    ref = check_device_ref(settings, device)
    if isinstance(ref, IPv4Address):
        return DeviceTarget(str(ref), ref, "ip")
    name = ref
    api_problem: str | None = None
    try:
        rows = (api or client_config.default_api(settings))().wireguard_ips()
    except FiovpnError as exc:  # no token, no factory, API down: the hosts block may know
        api_problem = str(exc)
        rows = None
    if rows is not None:
        for row in rows:
            if row.name == name:
                if row.ip is None or not row.enabled:
                    raise BadInput(f"VPN is not enabled on device {name}", code="vpn_disabled",
                                   hint=f"run `fiovpn devices enable-vpn {name}`")
                return DeviceTarget(name, row.ip, "factory")
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
                  options: SshOptions | None = None, timeout: float | None = None
                  ) -> SshResult:
    """Run ``command`` on the device (key auth, host keys checked, no stdin); its exit
    code and output bytes come back as they are. ``timeout``: stop waiting after it."""
    if not command:
        raise BadInput("no command given", code="bad_command")
    target = resolve_device(settings, device, api=api)
    ssh = device_client(settings, runner, target, options)
    result = ssh.capture(command, timeout=timeout)
    return SshResult(target.name, target.ip, result.returncode, result.stdout, result.stderr)


def ssh_session(settings: ClientSettings, runner: Runner, device: str, command: list[str],
                *, tty: bool, timeout: float | None = None,
                api: ApiFactory | None = None) -> int:
    """``fiovpn ssh``: OpenSSH's behaviour on our own stdio (stdin to the remote command,
    output streamed as bytes, a terminal when ``tty``); the remote exit code."""
    if timeout is not None and timeout <= 0:
        raise BadInput(f"--timeout must be positive, not {timeout:g}", code="bad_timeout")
    target = resolve_device(settings, device, api=api)
    return device_client(settings, runner, target).stream(command, tty=tty, timeout=timeout)


# --- device-to-device ---------------------------------------------------------------------


def _read_keyfile(ssh: SshClient) -> str:
    result = ssh.run(["cat", KEYFILE], check=False, sudo=True, timeout=30)
    if result.returncode != 0:
        err = result.stderr.strip()
        if "No such file" in err:
            raise NotFound(f"{ssh.target.host} has no {KEYFILE}", code="no_vpn_connection",
                           hint="is this a FoundriesFactory device with VPN enabled?")
        raise RemoteCommandError(f"cannot read {KEYFILE} on {ssh.target.host}: "
                                 f"{err or result.returncode}")
    return result.stdout


def _write_keyfile(ssh: SshClient, text: str) -> None:
    tmp = f"{KEYFILE}.fiovpn.tmp"
    # Content through stdin, never argv: the file holds the device's private key.
    ssh.run(["install", "-m", "600", "/dev/stdin", tmp], input=text, sudo=True, timeout=30)
    ssh.run(["mv", "-f", tmp, KEYFILE], sudo=True, timeout=30)


def _apply(ssh: SshClient) -> None:
    ssh.run(["nmcli", "connection", "reload"], sudo=True, timeout=60)
    ssh.run(["nmcli", "connection", "up", VPN_ID], sudo=True, timeout=90)


def _record_path(settings: ClientSettings) -> Path:
    return settings.config.with_name(f".{settings.config.stem}.d2d.json")


def _load_record(path: Path) -> dict[str, bool]:
    text = read_text(path)
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return {str(k): bool(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _record(settings: ClientSettings, target: DeviceTarget, enabled: bool) -> None:
    path = _record_path(settings)
    with locked(path):
        record = _load_record(path)
        record[str(target.ip)] = enabled
        atomic_write(path, json.dumps(record, indent=1, sort_keys=True) + "\n", mode=0o600)


def _subnet(settings: ClientSettings) -> IPv4Network:
    return parse_subnet(settings.subnet)


def _server_ip(settings: ClientSettings) -> IPv4Address:
    try:
        from fiovpn.core import wgquick

        view = wgquick.client_view(client_config.load_config(settings.config))
    except FiovpnError:
        view = None
    return client_config.server_vpn_address(settings, view)


def set_device_to_device(settings: ClientSettings, runner: Runner, device: str, *,
                         enable: bool, api: ApiFactory | None = None,
                         options: SshOptions | None = None) -> dict[str, Any]:
    """Widen (enable) or restore (disable) the device's route through the server.
    Idempotent: when the file already says so, nothing is written."""
    target = resolve_device(settings, device, api=api)
    subnet, server_ip = _subnet(settings), _server_ip(settings)
    ssh = device_client(settings, runner, target, options)
    text = _read_keyfile(ssh)
    doc = nmconnection.parse(text, source=f"{target.name}:{KEYFILE}")
    new = (nmconnection.widen_server_peer(doc, subnet) if enable
           else nmconnection.restore_server_peer(doc, server_ip, subnet))
    changed = new.render() != text
    if changed:
        _write_keyfile(ssh, new.render())
        _apply(ssh)
    # Verify: the file on the device now says what we want.
    check = nmconnection.parse(_read_keyfile(ssh))
    widened = nmconnection.is_widened(check, subnet)
    if widened != enable:
        raise PermanentError(f"{target.name}: {KEYFILE} still has allowed-ips "
                             f"{nmconnection.peer_allowed_ips(check, subnet)} after the edit",
                             code="d2d_not_applied")
    _record(settings, target, enable)
    allowed = [str(n) for n in nmconnection.peer_allowed_ips(check, subnet)]
    return {"name": target.name, "vpn_ip": str(target.ip), "device_to_device": enable,
            "changed": changed, "allowed_ips": allowed,
            "warning": HANDLER_WARNING if enable else None}


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


def d2d_state(settings: ClientSettings, runner: Runner, target: DeviceTarget
              ) -> tuple[bool, bool] | None:
    """(what you set with enable-d2d, what the device has now), or None when you never
    changed it from this machine or the device cannot be read."""
    expected = _load_record(_record_path(settings)).get(str(target.ip))
    if expected is None:
        return None
    try:
        text = _read_keyfile(device_client(settings, runner, target))
        actual = nmconnection.is_widened(nmconnection.parse(text), _subnet(settings))
    except FiovpnError:
        return None
    return expected, actual
