"""The service bundle the MCP tools adapt: fiovpn's own services, injectable.

``real_services()`` binds the same service functions the CLI uses; unit tests
build a ``Services`` with fakes of those services (never fakes of the CLI).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fiovpn.adapters.factory_api import FactoryApi
from fiovpn.settings import DEFAULT_SERVER_CONFIG, ClientSettings, load_client

SERVER_MARKERS = (DEFAULT_SERVER_CONFIG, Path("/etc/fiovpn/server.key"))


@dataclass(frozen=True)
class Services:
    """Everything a tool needs, as plain callables.

    - ``load_settings(flags)``: engineer-side settings (flags > env > TOML), the
      same loader as the CLI; ``flags`` holds only the tool's non-secret params.
    - ``factory(settings)``: the FoundriesFactory API client (token from env,
      the settings' token file or fioctl's config; never from a tool parameter).
    - ``key_path()``: the default private key file.
    - ``server_markers``: files whose presence means this machine is the
      WireGuard server (first-admin flow).
    """

    load_settings: Callable[[Mapping[str, Any]], ClientSettings]
    factory: Callable[[ClientSettings], FactoryApi]
    key_path: Callable[[], Path]
    server_markers: tuple[Path, ...] = SERVER_MARKERS


def real_services() -> Services:
    """The services ``fiovpn mcp`` serves: the ones the CLI uses."""
    from fiovpn.adapters.factory import build_factory_client
    from fiovpn.services.keys import default_key_path

    return Services(
        load_settings=load_client,
        factory=build_factory_client,
        key_path=default_key_path,
    )
