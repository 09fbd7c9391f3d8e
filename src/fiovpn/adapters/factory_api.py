"""The FoundriesFactory API as fiovpn sees it: typed values and the interface
that the httpx client (``adapters/factory.py``) and test fakes implement.

Only the adapters talk HTTP; services take a ``FactoryApi``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any, Protocol

from fiovpn.core.keys import Key


@dataclass(frozen=True, slots=True)
class WireguardIp:
    """One row of ``GET /ota/factories/<f>/wireguard-ips/``."""

    name: str
    ip: IPv4Address | None
    enabled: bool
    pubkey: Key | None


@dataclass(frozen=True, slots=True)
class ConfigFile:
    name: str
    value: str
    unencrypted: bool = True
    on_changed: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "unencrypted": self.unencrypted,
                "on-changed": list(self.on_changed)}


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    created_at: str
    reason: str
    files: tuple[ConfigFile, ...]

    def file(self, name: str) -> ConfigFile | None:
        for f in self.files:
            if f.name == name:
                return f
        return None


@dataclass(frozen=True, slots=True)
class Device:
    """One device of ``GET /ota/devices/`` (fioctl's fields); ``raw`` keeps every
    field the API sent. ``device_group`` is the group's name: ``device-group`` in a
    list, ``group.name`` in a single GET."""

    name: str
    uuid: str = ""
    status: str = ""
    last_seen: str = ""
    target_name: str = ""
    device_group: str = ""
    tag: str = ""
    owner: str = ""
    is_prod: bool = False
    up_to_date: bool = False
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


class FactoryApi(Protocol):
    """Every FoundriesFactory call fiovpn makes (SPEC section 4)."""

    factory: str

    def wireguard_ips(self) -> list[WireguardIp]: ...

    def factory_config(self) -> list[ConfigEntry]:
        """Config history, newest first; ``[0]`` is current (empty list when none)."""
        ...

    def patch_factory_config(self, reason: str, files: list[ConfigFile]) -> None: ...

    def device_config(self, device: str) -> list[ConfigEntry]: ...

    def patch_device_config(self, device: str, reason: str, files: list[ConfigFile]) -> None: ...

    def list_devices(self, *, group: str | None = None,
                     tag: str | None = None) -> list[Device]:
        """Every device of the factory (only those of ``group`` / with ``tag`` when
        given: the API filters), following ``next`` through all pages."""
        ...

    def get_device(self, device: str) -> Device: ...


def current_file(entries: list[ConfigEntry], name: str) -> ConfigFile | None:
    """The named file in the current (newest) config, or None."""
    return entries[0].file(name) if entries else None
