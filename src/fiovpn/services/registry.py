"""The client registry on disk (``factory-clients.conf``) and its checks.

Every change happens under the file's exclusive lock and is written
atomically (0600). A refused change (bad key, duplicate key or name, taken IP,
IP outside the subnet or the client pool) raises ``BadInput``/``Conflict``
and leaves the file byte-identical.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiovpn.adapters.fs import atomic_write, locked
from fiovpn.adapters.wireguard import WireGuard
from fiovpn.core.addresses import VpnNetwork, parse_ip
from fiovpn.core.keys import Key
from fiovpn.core.names import validate_name
from fiovpn.core.registry import ClientEntry, Registry, parse_groups
from fiovpn.core.timespec import parse_expiry
from fiovpn.errors import BadInput, Conflict, FiovpnError, PermanentError
from fiovpn.services.state import StateCache

if TYPE_CHECKING:
    from fiovpn.services.access import DeviceGroups

log = logging.getLogger("fiovpn.server")


def read_registry(path: Path) -> Registry:
    """The registry at ``path`` (empty when missing).

    A line that is not UTF-8 is one bad line (reported with its number), not
    an unreadable file: its bytes are kept as they are (``surrogateescape``)
    and written back unchanged by ``write_registry``. A file that cannot be
    read at all raises ``PermanentError`` naming it.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Registry()
    except OSError as exc:
        raise PermanentError(f"cannot read the client registry {path}: {exc.strerror}",
                             code="registry_unreadable") from None
    return Registry.parse(raw.decode("utf-8", "surrogateescape"))


def write_registry(path: Path, registry: Registry) -> None:
    atomic_write(path, registry.render().encode("utf-8", "surrogateescape"), mode=0o600)


@dataclass
class LiveInterface:
    """The daemon's WireGuard interface, when it exists."""

    wg: WireGuard
    interface: str

    def exists(self) -> bool:
        return self.wg.interface_exists(self.interface)


@dataclass
class ClientRegistry:
    """``add`` / ``remove`` / ``list`` / ``check`` over the registry file.

    ``state`` (the daemon's cache) supplies device IPs and keys so a client
    never takes one; ``on_change`` applies the new registry to the live
    interface at once (the CLI passes a local reconcile).
    """

    path: Path
    network: VpnNetwork
    state: StateCache | None = None
    server_key: Key | None = None
    live: LiveInterface | None = None
    on_change: Callable[[], object] | None = None
    device_groups: DeviceGroups | None = None  # to refuse a group no device has
    clock: Callable[[], float] = field(default=time.time)

    def read(self) -> Registry:
        return read_registry(self.path)

    def list(self) -> list[ClientEntry]:
        return self.read().entries

    @contextlib.contextmanager
    def _editing(self) -> Iterator[None]:
        """The registry's exclusive lock; a file system that refuses the lock or
        the write (read-only, missing directory) is one clear error."""
        try:
            with locked(self.path):
                yield
        except OSError as exc:
            raise PermanentError(f"cannot update the client registry {self.path}: "
                                 f"{exc.strerror or exc}", code="registry_unwritable") from None

    def _devices(self) -> tuple[set[IPv4Address], set[Key]]:
        rows = self.state.load_devices() if self.state else None
        ips = {r.ip for r in rows or [] if r.ip is not None}
        keys = {r.pubkey for r in rows or [] if r.pubkey is not None}
        return ips, keys

    def _groups(self, groups: str | None) -> tuple[str, ...] | None:
        if groups is None:
            return None
        parsed = parse_groups(groups, what="--groups")
        if self.device_groups is not None:
            from fiovpn.services.access import check_groups

            check_groups(parsed, self.device_groups)
        return parsed

    def add(self, public_key: str, ip: str = "auto", name: str | None = None, *,
            groups: str | None = None, expires: str | None = None) -> ClientEntry:
        key = Key.parse_public(public_key)
        if name is not None:
            validate_name(name, what="client name")
        want = None if ip in ("auto", "", None) else parse_ip(ip, what="client IP")
        group_list = self._groups(groups)
        end = parse_expiry(expires, self.clock()) if expires is not None else None
        with self._editing():
            reg = self.read()
            entries = reg.entries
            dev_ips, dev_keys = self._devices()
            if key in dev_keys:
                raise Conflict(f"public key {key} belongs to a device of the factory",
                               code="key_taken")
            if self.server_key is not None and key == self.server_key:
                raise Conflict("that is the server's own public key", code="key_taken")
            for e in entries:
                if e.public_key == key:
                    raise Conflict(f"public key {key} is already registered with IP {e.ip}"
                                   + (f" as {e.name!r}" if e.name else ""),
                                   code="key_taken",
                                   hint="remove it first to change its IP or name")
                if name is not None and e.name == name:
                    raise Conflict(f"a client named {name!r} already exists ({e.ip})",
                                   code="name_taken")
            used = {e.ip for e in entries} | dev_ips | {self.network.server}
            if want is None:
                chosen = self.network.next_client_ip(used)
            else:
                chosen = self.network.check_client_ip(want, used)
            entry = ClientEntry(key, chosen, name, group_list, end)
            write_registry(self.path, reg.add(entry))
        self._changed()
        return entry

    def remove(self, public_key: str | None = None, name: str | None = None, *,
               all_matching: bool = False) -> builtins.list[ClientEntry]:
        """Remove the client with this key, or the one with this name; a name that
        several clients share is refused (their keys listed) unless ``all_matching``."""
        if (public_key is None) == (name is None):
            raise BadInput("give exactly one of the public key (--public-key) or the name "
                           "(--name)", code="usage")
        key = Key.parse_public(public_key) if public_key is not None else None
        with self._editing():
            reg = self.read()
            if name is not None and not all_matching:
                same = reg.find(name=name)
                if len(same) > 1:
                    keys = ", ".join(f"{e.public_key} ({e.ip})" for e in same)
                    raise BadInput(
                        f"{len(same)} clients are named {name!r}: {keys}; nothing removed",
                        code="ambiguous_name",
                        hint="remove one with --public-key KEY, or all of them with --all")
            new, removed = reg.remove(public_key=key, name=name)
            write_registry(self.path, new)
        self._changed()
        return removed

    def renew(self, *, expires: str, public_key: str | None = None, name: str | None = None
              ) -> builtins.list[ClientEntry]:
        """Set a new ``expires=`` on a client's line (every other byte kept); an
        expired client is back on the interface at once."""
        if (public_key is None) == (name is None):
            raise BadInput("give exactly one of the public key (--public-key) or the name "
                           "(--name)", code="usage")
        key = Key.parse_public(public_key) if public_key is not None else None
        if name is not None:
            validate_name(name, what="client name")
        end = parse_expiry(expires, self.clock())
        with self._editing():
            reg = self.read()
            new, changed = reg.set_expires(end, public_key=key, name=name)
            write_registry(self.path, new)
        self._changed()
        return changed

    def check(self, public_key: str) -> dict[str, Any]:
        """``{"registered", "in_registry", "on_interface", "ip"}`` for ``public_key``."""
        key = Key.parse_public(public_key)
        found = self.read().find(public_key=key)
        ip: str | None = str(found[0].ip) if found else None
        on_interface = False
        if self.live is not None and self.live.exists():
            peer = self.live.wg.show_dump(self.live.interface).peer(key)
            if peer is not None:
                on_interface = True
                if ip is None and peer.allowed_ips:
                    ip = peer.allowed_ips[0].split("/")[0]
        return {"registered": bool(found) and on_interface, "in_registry": bool(found),
                "on_interface": on_interface, "ip": ip}

    def _changed(self) -> None:
        # The registry is already written; if applying fails now the daemon
        # still picks the edit up within seconds, so warn instead of failing.
        if self.on_change is None:
            return
        try:
            self.on_change()
        except FiovpnError as exc:
            log.warning("registry saved, but applying it to the interface failed: %s "
                        "(the daemon retries on its next pass)", exc)
