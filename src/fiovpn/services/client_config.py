"""The engineer's client config and factory access, shared by the client service
and device access: which factory client to build, where the config lives and
what server address it names."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING

from fiovpn.adapters.fs import read_text
from fiovpn.adapters.ssh import SshTarget
from fiovpn.core.addresses import parse_subnet
from fiovpn.errors import BadInput, NotFound
from fiovpn.settings import ClientSettings

if TYPE_CHECKING:  # `fiovpn ssh` by a cached name starts without these
    from fiovpn.adapters.factory_api import FactoryApi
    from fiovpn.core import wgquick

ApiFactory = Callable[[], "FactoryApi"]


def default_api(settings: ClientSettings) -> ApiFactory:
    def build() -> FactoryApi:
        from fiovpn.adapters.factory import build_factory_client

        return build_factory_client(settings)

    return build


def interface_name(settings: ClientSettings) -> str:
    from fiovpn.core import wgquick

    return wgquick.interface_name(settings.config.name)


def load_config(path: Path) -> wgquick.WgQuickConfig:
    text = read_text(path)
    if text is None:
        raise NotFound(f"client config {path} does not exist", code="no_config",
                       hint="run `fiovpn client init` first")
    from fiovpn.core import wgquick

    return wgquick.parse(text, source=str(path))


def server_vpn_address(settings: ClientSettings,
                       view: wgquick.ClientConfig | None = None) -> IPv4Address:
    """The server's VPN address: recorded in the client config by ``client init``,
    else the host of ``--server-ssh`` when it is an IP in the subnet, else the
    subnet's first host."""
    if view is not None and view.server_address is not None:
        return view.server_address
    subnet = parse_subnet(settings.subnet)
    try:
        host = IPv4Address(SshTarget.parse(settings.server_ssh).host)
    except (ValueError, BadInput):
        host = None
    if host is not None and host in subnet:
        return host
    return subnet.network_address + 1
