"""The journal: one JSON object a line, ``{"at","actor","action","target","detail"}``.

On the server ``<state dir>/journal.jsonl`` records every change an admin or
the daemon makes; on an engineer's machine ``~/.local/state/fiovpn/journal.jsonl``
(a setting) records every device-touching command and MCP tool call. The file
is 0600 and only ever appended to (``O_APPEND``, one ``write`` a line, under
a lock), so lines of two writers never interleave and nothing is rewritten.

API (for the daemon, the CLI, MCP and replication):
- ``Journal(path).append(actor=, action=, target=, detail=) -> dict``;
- ``Journal(path).read(since=None, action=None) -> list[dict]``;
- ``actor_from_env(env, names_by_ip)``: who is acting (section 11).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fiovpn.core.timespec import format_timestamp, parse_timestamp
from fiovpn.errors import BadInput, FiovpnError

JOURNAL_FILE = "journal.jsonl"
ADMIN_ENV = "FIOVPN_ADMIN"  # set by the admins' forced command (services/admins.py)
DAEMON = "daemon"


def _warn(message: str, *args: object) -> None:
    import logging  # here: most commands never warn, and `fiovpn ssh` starts without it

    logging.getLogger("fiovpn").warning(message, *args)


@dataclass
class Journal:
    path: Path
    clock: Callable[[], float] = field(default=time.time, repr=False)

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> Journal:
        return cls(state_dir / JOURNAL_FILE)

    def append(self, *, actor: str, action: str, target: str,
               detail: Mapping[str, Any] | None = None) -> dict[str, Any]:
        line = {"at": format_timestamp(self.clock()), "actor": actor, "action": action,
                "target": target, "detail": dict(detail or {})}
        self._write((json.dumps(line, separators=(",", ":"), default=str) + "\n").encode())
        return line

    def append_many(self, actor: str, items: list[dict[str, Any]]) -> None:
        """Several lines (``action``, ``target``, ``detail`` each) in one write."""
        at = format_timestamp(self.clock())
        # One encoder for all lines: json.dumps with options builds one per call,
        # and an initial sync journals 50,000 peers.
        encode = json.JSONEncoder(separators=(",", ":"), default=str).encode
        data = "".join(encode({"at": at, "actor": actor, "action": i["action"],
                               "target": i["target"], "detail": i.get("detail", {})}) + "\n"
                       for i in items).encode()
        try:
            self._write(data)
        except OSError as exc:
            _warn("cannot write the journal %s: %s", self.path, exc)

    def write_raw(self, data: bytes) -> None:
        """Append lines as they are (HA: the active's lines, on the standby)."""
        self._write(data)

    def _write(self, data: bytes) -> None:
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, data)
        finally:
            os.close(fd)

    def try_append(self, **kwargs: Any) -> None:
        """``append`` that never stops the caller: the change is already made."""
        try:
            self.append(**kwargs)
        except OSError as exc:
            _warn("cannot write the journal %s: %s", self.path, exc)

    def read(self, *, since: float | None = None, action: str | None = None,
             start: int = 0) -> list[dict[str, Any]]:
        """The well-formed lines (from byte ``start`` on), oldest first."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(start)
                raw = fh.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return []
        out: list[dict[str, Any]] = []
        for text in raw.splitlines():
            try:
                item = json.loads(text)
            except ValueError:
                continue  # a torn last line after a crash: skip, never fail the reader
            if not isinstance(item, dict):
                continue
            if action is not None and item.get("action") != action:
                continue
            if since is not None:
                with contextlib.suppress(BadInput, TypeError):
                    if parse_timestamp(str(item.get("at"))) < since:
                        continue
            out.append(item)
        return out


def local_user() -> str:
    with contextlib.suppress(KeyError):
        return pwd.getpwuid(os.getuid()).pw_name
    return str(os.getuid())


def actor_from_env(env: Mapping[str, str], names_by_ip: Mapping[str, str | None]
                   ) -> str:
    """The admin's name from the forced command, else the registry name of the VPN
    address the SSH session came from (``SSH_CONNECTION``), else the local user."""
    admin = env.get(ADMIN_ENV)
    if admin:
        return admin
    conn = env.get("SSH_CONNECTION", "").split()
    if conn:
        name = names_by_ip.get(conn[0])
        return name or f"ssh:{conn[0]}"
    return f"local:{local_user()}"


def server_actor(clients_file: Path, env: Mapping[str, str] | None = None) -> str:
    """Who runs this server command (the journal's ``actor``): the admin of the
    forced command, else the registry name of the VPN address of the SSH session."""
    env = os.environ if env is None else env
    names: dict[str, str | None] = {}
    if env.get("SSH_CONNECTION") and not env.get(ADMIN_ENV):
        # here: the engineer's `fiovpn ssh` journals through this module without it
        from fiovpn.services.registry import read_registry

        try:
            names = {str(e.ip): e.name for e in read_registry(clients_file).entries}
        except FiovpnError:
            names = {}
    return actor_from_env(env, names)


def record_device_call(journal_path: Path, *, action: str, device: str, via: str,
                       detail: Mapping[str, Any] | None = None) -> None:
    """The engineer's journal line for a device-touching command or MCP call
    (``detail.via``: ``cli`` or ``mcp``). Never fails the call it records."""
    Journal(journal_path).try_append(actor=local_user(), action=action, target=device,
                                     detail={"via": via, **(detail or {})})
