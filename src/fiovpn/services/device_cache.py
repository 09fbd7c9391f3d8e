"""Device names and VPN IPs as the factory last listed them, so that ``fiovpn ssh NAME``
run again within a few minutes needs no API call (SPEC 12: ssh by name, as fast as ssh).

The cache is written whenever the factory's ``wireguard-ips`` list is read by name
resolution (every full lookup refreshes it), holds only names and VPN IPs (nothing
secret; 0600 all the same), and belongs to one set of factory settings: a different
factory, API URL, token file or fioctl login file is a different key, and a cache
written under another key is not used. Entries older than ``device_cache_ttl``
seconds are not used either (0 turns the cache off).

A stale entry cannot reach the wrong device unnoticed: host keys are always checked,
so a device whose IP moved to another device fails the host key check, and a connection
failure to a cached IP makes ``fiovpn ssh`` ask the factory again (``forget``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from fiovpn.adapters import fioctl_env as fioctl
from fiovpn.adapters.fs import atomic_write
from fiovpn.core.digest import sha256_hex
from fiovpn.settings import API_TOKEN_ENV, ClientSettings

if TYPE_CHECKING:  # imported for its type only: `fiovpn ssh` starts without it
    from fiovpn.adapters.factory_api import WireguardIp

VERSION = 1


def _fioctl_file() -> str:
    """fioctl's login file as it is now (path and mtime): a new `fioctl login` may
    name another factory."""
    path = fioctl.config_path()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        mtime = 0
    return f"{path}@{mtime}"


def cache_key(settings: ClientSettings) -> str:
    """What decides which factory a name is looked up in: the settings and the
    environment the factory client reads (never the token itself, only whether one is set)."""
    env = os.environ
    parts = (settings.factory, settings.api_url, str(settings.api_token_file),
             env.get(fioctl.FACTORY_ENV), env.get(API_TOKEN_ENV) is not None,
             env.get(fioctl.TOKEN_ENV) is not None, _fioctl_file())
    return sha256_hex(repr(parts), 16)


def lookup(settings: ClientSettings, name: str, *, now: float | None = None
           ) -> IPv4Address | None:
    """The cached VPN IP of ``name``, or None (no cache, another key, too old, unknown)."""
    if settings.device_cache_ttl <= 0:
        return None
    try:
        data = json.loads(settings.device_cache.read_text())
        if data.get("version") != VERSION or data.get("key") != cache_key(settings):
            return None
        age = (time.time() if now is None else now) - float(data["written"])
        if not 0 <= age <= settings.device_cache_ttl:
            return None
        ip = data["devices"].get(name)
        return IPv4Address(ip) if isinstance(ip, str) else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # no cache, or one we cannot read: ask the factory


def store(settings: ClientSettings, rows: Iterable[WireguardIp]) -> None:
    """Remember the VPN-enabled devices of a fresh ``wireguard-ips`` list. Never fails the
    lookup that calls it: a cache that cannot be written is only slower next time."""
    if settings.device_cache_ttl <= 0:
        return
    devices = {r.name: str(r.ip) for r in rows if r.enabled and r.ip is not None}
    body = json.dumps({"version": VERSION, "key": cache_key(settings), "written": time.time(),
                       "devices": devices}, sort_keys=True)
    with contextlib.suppress(OSError):
        settings.device_cache.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(settings.device_cache, body + "\n", mode=0o600)


def forget(settings: ClientSettings) -> None:
    """Drop the cache (a cached IP did not answer: the next lookup asks the factory)."""
    with contextlib.suppress(OSError):
        settings.device_cache.unlink()
