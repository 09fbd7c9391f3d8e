"""The server's state directory: the last good device list and the status file.

The device cache lets a restarted daemon keep device peers while the API is
down; ``status.json`` is what ``fiovpn server status`` reads. Both 0600.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from fiovpn.adapters.factory_api import WireguardIp
from fiovpn.adapters.fs import atomic_write
from fiovpn.core.firewall import TableModel, model_from_json, model_to_json
from fiovpn.core.keys import Key
from fiovpn.core.peerrows import PeerRows
from fiovpn.core.peers import Peer, ip_text
from fiovpn.errors import PermanentError

log = logging.getLogger("fiovpn.server")

DEVICES_FILE = "devices.json"
STATUS_FILE = "status.json"
FIREWALL_FILE = "firewall.json"  # the nft table as this server last applied it
LOCK_FILE = "daemon.lock"
EFFECTIVE_FILE = "effective.json"
CLI_HOLDER = "cli"  # what a CLI applying without a daemon writes into the lock file


def row_to_json(row: WireguardIp) -> dict[str, Any]:
    return {"name": row.name, "ip": ip_text(row.ip) if row.ip else None,
            "enabled": row.enabled, "pubkey": row.pubkey.text if row.pubkey else None}


def _json_text(value: str) -> str:
    """``json.dumps(value)``, without the call for the usual plain ASCII text."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return json.dumps(value)


def _row_text(row: WireguardIp) -> str:
    ip = f'"{ip_text(row.ip)}"' if row.ip else "null"
    key = f'"{row.pubkey.text}"' if row.pubkey else "null"
    enabled = "true" if row.enabled else "false"
    return f'{{"name":{_json_text(row.name)},"ip":{ip},"enabled":{enabled},"pubkey":{key}}}'


def row_from_json(data: dict[str, Any]) -> WireguardIp:
    return WireguardIp(
        name=str(data["name"]),
        ip=IPv4Address(data["ip"]) if data.get("ip") else None,
        enabled=bool(data.get("enabled", True)),
        pubkey=Key.shared(data["pubkey"]) if data.get("pubkey") else None,
    )


@dataclass
class StateCache:
    directory: Path
    # What this process last wrote: an unchanged device list is not rewritten
    # (at 5,000 devices that write is a third of an idle poll).
    _saved_rows: list[WireguardIp] | None = field(default=None, repr=False, compare=False)
    # the settings file the daemon owning this cache read (``save_effective`` records
    # it): a CLI that read another one cannot take its settings for an edit since
    settings_file: str | None = field(default=None, compare=False)

    @property
    def devices_path(self) -> Path:
        return self.directory / DEVICES_FILE

    @property
    def status_path(self) -> Path:
        return self.directory / STATUS_FILE

    def _ensure_dir(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(self.directory, 0o700)

    @property
    def effective_path(self) -> Path:
        return self.directory / EFFECTIVE_FILE

    def _open_lock(self) -> int:
        try:
            self._ensure_dir()
            return os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise PermanentError(f"cannot use the state directory {self.directory}: "
                                 f"{exc.strerror}", code="state_dir_failed") from None

    @contextlib.contextmanager
    def daemon_lock(self, *, wait_for_cli: float = 10.0) -> Iterator[None]:
        """Held while a daemon runs on this state directory: a second daemon (a
        hand-started one next to the systemd unit) would fight over the same
        interface and status file, so it is refused. A CLI applying a registry
        edit without a daemon holds it for a moment: that one is waited for."""
        fd = self._open_lock()
        try:
            deadline = time.monotonic() + wait_for_cli
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    other = os.pread(fd, 32, 0).decode(errors="replace").strip()
                    if other.startswith(CLI_HOLDER) and time.monotonic() < deadline:
                        time.sleep(0.05)
                        continue
                    who = f" (pid {other})" if other.isdigit() else ""
                    raise PermanentError(
                        f"another fiovpn server daemon{who} is already running with state "
                        f"directory {self.directory}", code="daemon_running",
                        hint="stop it first (systemctl stop fiovpn-<factory>); "
                             "`fiovpn server status` shows what it does") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def cli_lock(self, *, timeout: float = 10.0) -> Iterator[bool]:
        """For a CLI about to write live state itself: yields True holding the
        daemon lock (no daemon runs; none starts until this ends), or False at
        once when a daemon holds it. Another CLI holding it is waited for."""
        fd = self._open_lock()
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    other = os.pread(fd, 32, 0).decode(errors="replace").strip()
                    if not other.startswith(CLI_HOLDER) or time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(0.05)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{CLI_HOLDER} {os.getpid()}\n".encode(), 0)
            try:
                yield True
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def save_effective(self, record: dict[str, Any], *, pid: int, started_at: str,
                       overrides: dict[str, Any] | None = None) -> None:
        """The daemon's effective settings (flags, env and TOML merged): what a CLI
        applies with when no daemon runs, so policy never depends on the process.
        ``overrides``: those of them its command line and environment set (not the
        settings file), so a CLI can tell a flag from a settings-file edit since."""
        self._ensure_dir()
        doc: dict[str, Any] = {"pid": pid, "started_at": started_at, "settings": record}
        if overrides is not None:
            doc["overrides"] = overrides
        if self.settings_file is not None:
            doc["settings_file"] = self.settings_file
        atomic_write(self.effective_path, json.dumps(doc, indent=1) + "\n", mode=0o600)

    def load_effective(self) -> dict[str, Any] | None:
        data = self.load_effective_document()
        return None if data is None else dict(data["settings"])

    def load_effective_document(self) -> dict[str, Any] | None:
        """All of ``effective.json`` (``settings``, ``overrides`` and ``settings_file``
        when recorded, ``pid``, ``started_at``), or None."""
        data = self._load(self.effective_path)
        if data is None or not isinstance(data.get("settings"), dict):
            return None
        return data

    def save_devices(self, rows: list[WireguardIp], saved_at: str) -> bool:
        """Keep ``rows`` as the last good device list; False when it was already kept.

        ``saved_at`` is when the list last changed."""
        if rows == self._saved_rows and self.devices_path.exists():
            return False
        self._ensure_dir()
        # The same bytes json.dumps(separators=(",", ":")) writes, a row at a time
        # without a dict each (a changed list of 50,000 devices is rewritten whole).
        devices = ",".join([_row_text(r) for r in rows])
        text = f'{{"saved_at":{_json_text(saved_at)},"devices":[{devices}]}}\n'
        atomic_write(self.devices_path, text, mode=0o600)
        self._saved_rows = list(rows)
        return True

    def load_devices(self) -> list[WireguardIp] | None:
        """The last good device list, or None when there is none (or it is unreadable)."""
        data = self._load(self.devices_path)
        if data is None:
            return None
        try:
            return [row_from_json(r) for r in data["devices"]]
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring unreadable device cache %s: %s", self.devices_path, exc)
            return None

    def save_status(self, status: dict[str, Any]) -> None:
        """The last pass's status document. Made again by every pass that changed
        something, so it does not wait for the disk (fsync: ~1.5 ms of a pass)."""
        self._ensure_dir()
        # compact: at 5,000 peers this file is rewritten on every poll
        peers = status.get("peers")
        if not isinstance(peers, PeerRows):
            atomic_write(self.status_path, [json.dumps(status, separators=(",", ":")), "\n"],
                         mode=0o600, durable=False)
            return
        # the rows written a few thousand at a time, no dict each (50,000 a poll)
        head = json.dumps({k: v for k, v in status.items() if k != "peers"},
                          separators=(",", ":"))
        atomic_write(self.status_path,
                     itertools.chain([head[:-1], "," if len(head) > 2 else "", '"peers":'],
                                     peers.json_chunks(), ["}\n"]), mode=0o600,
                     durable=False)

    @property
    def firewall_path(self) -> Path:
        return self.directory / FIREWALL_FILE

    def save_firewall(self, model: TableModel, generation: str) -> None:
        """The nft table as last applied (``generation``: the token of the kernel's
        table it went to). Not fsynced: a power cut takes the kernel's table with it,
        and a model that cannot be read is not used (the table is made whole)."""
        self._ensure_dir()
        atomic_write(self.firewall_path, json.dumps(
            {"generation": generation, **model_to_json(model)}, separators=(",", ":")),
            mode=0o600, durable=False)

    def drop_firewall(self) -> None:
        """Forget the applied table (before changing it: a crash in between leaves
        no model that may differ from the kernel's table)."""
        with contextlib.suppress(FileNotFoundError):
            self.firewall_path.unlink()

    def load_firewall(self) -> tuple[TableModel, str] | None:
        data = self._load(self.firewall_path)
        if data is None or not isinstance(data.get("generation"), str):
            return None
        try:
            return model_from_json(data), data["generation"]
        except ValueError as exc:
            log.warning("ignoring unreadable firewall model %s: %s", self.firewall_path, exc)
            return None

    def load_status(self) -> dict[str, Any] | None:
        return self._load(self.status_path)

    def known_peers(self) -> dict[Key, Peer]:
        """The peers the last reconcile wanted, by key (names for removal logs)."""
        status = self.load_status() or {}
        out: dict[Key, Peer] = {}
        for item in status.get("peers", []):
            try:
                peer = Peer.from_json(item)
            except (KeyError, TypeError, ValueError):
                continue
            out[peer.public_key] = peer
        return out

    def _load(self, path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable state file %s: %s", path, exc)
            return None
        return data if isinstance(data, dict) else None
