"""The service bundle the MCP tools adapt: fiovpn's own services, injectable.

The defaults are the same service functions the CLI uses; unit tests replace
the adapters under them (a fake ``FactoryApi``, a ``FakeRunner``) or a service
callable itself, never the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fiovpn.adapters.factory_api import FactoryApi
from fiovpn.adapters.runner import Runner, SubprocessRunner
from fiovpn.services import client, device_access, devices, fanout, reachability, remote, transfer
from fiovpn.services.keys import default_key_path
from fiovpn.settings import DEFAULT_SERVER_CONFIG, ClientSettings, load_client

SERVER_MARKERS = (DEFAULT_SERVER_CONFIG, Path("/etc/fiovpn/server.key"))


def _factory(settings: ClientSettings) -> FactoryApi:
    from fiovpn.adapters.factory import build_factory_client

    return build_factory_client(settings)


@dataclass(frozen=True)
class Services:
    """Everything a tool needs.

    - ``load_settings(flags)``: engineer-side settings (flags > env > TOML), the
      CLI's loader; ``flags`` holds only the tool's non-secret parameters.
    - ``factory(settings)``: the FoundriesFactory API client (token from env,
      the settings' token file or fioctl's config; never from a tool parameter).
    - ``runner``: runs wg, wg-quick, ping, ssh (a ``FakeRunner`` in unit tests).
    - ``key_path()``: the default private key file (``fiovpn keys generate``).
    - ``server_markers``: files whose presence means this machine is the
      WireGuard server (the first-admin flow).
    - the rest: the service functions themselves.
    """

    load_settings: Callable[[Mapping[str, Any]], ClientSettings] = load_client
    factory: Callable[[ClientSettings], FactoryApi] = _factory
    runner: Runner = field(default_factory=SubprocessRunner)
    key_path: Callable[[], Path] = default_key_path
    server_markers: tuple[Path, ...] = SERVER_MARKERS
    # services/client.py
    connect: Callable[[ClientSettings, Runner], client.ConnectResult] = client.connect
    disconnect: Callable[[ClientSettings, Runner], client.ConnectResult] = client.disconnect
    status: Callable[[ClientSettings, Runner], dict[str, Any]] = client.status
    verify: Callable[[ClientSettings, Runner], client.VerifyResult] = client.verify
    probe_server: Callable[[ClientSettings, Runner], client.ServerAnswer] = \
        client.probe_server
    check_registered_local: Callable[[ClientSettings, Runner], dict[str, Any]] = \
        client.check_registered_local
    # services/remote.py (admin, over SSH to the server)
    register: Callable[..., dict[str, Any]] = remote.register
    unregister: Callable[..., Any] = remote.unregister
    check_registered_remote: Callable[..., dict[str, Any]] = remote.check_registered_remote
    # services/device_access.py (over SSH to the device's VPN address)
    run_on_device: Callable[..., device_access.SshResult] = device_access.run_on_device
    enable_d2d: Callable[..., dict[str, Any]] = device_access.enable_d2d
    disable_d2d: Callable[..., dict[str, Any]] = device_access.disable_d2d
    d2d_status: Callable[..., Any] = device_access.d2d_status
    # services/devices.py (over the factory API)
    list_devices: Callable[..., list[devices.DeviceInfo]] = devices.list_devices
    enable_vpn: Callable[..., devices.VpnChange] = devices.enable_vpn
    disable_vpn: Callable[[FactoryApi, str], devices.VpnChange] = devices.disable_vpn
    device_names: Callable[..., list[str]] = devices.device_names
    # services/fanout.py, transfer.py, reachability.py (issue 12)
    run_many: Callable[..., list[fanout.ExecResult]] = fanout.run_many
    copy: Callable[..., dict[str, Any]] = transfer.copy
    probe: reachability.Probe = reachability.ssh_answers


def real_services() -> Services:
    """The services ``fiovpn mcp`` serves: the ones the CLI uses."""
    return Services()
