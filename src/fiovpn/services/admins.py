"""Admins without a root shell: lines of the server SSH's ``authorized_keys``
with a forced command (``core/forced.py``) that runs only fiovpn's registry,
access, journal and status commands.

A managed line is ``command="<fiovpn> server admin-command --name N",restrict
<type> <key> fiovpn-admin:N``; every other line of the file is kept byte for
byte. Written atomically (0600) under an exclusive lock.

API (for the CLI and replication):
- ``AdminKeys.of_server(settings, config_file)``: this server's, its forced command;
- ``AdminKeys(path, program, config).add(name, key_text) -> Admin``;
  the key is checked by ``core/sshkeys`` (the one check the HA standby uses too);
- ``.remove(name) -> Admin``; ``.list() -> list[Admin]``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fiovpn.adapters.fs import atomic_write, locked
from fiovpn.core.forced import forced_command_line
from fiovpn.core.names import validate_name
from fiovpn.core.sshkeys import parse_public_key
from fiovpn.errors import Conflict, NotFound, PermanentError
from fiovpn.settings import ServerSettings

MARK = "fiovpn-admin:"
_MANAGED = re.compile(r"(?:^|\s)(?P<type>\S+) (?P<blob>[A-Za-z0-9+/=]+) "
                      + re.escape(MARK) + r"(?P<name>\S+)\s*$")


def this_program() -> list[str]:
    """How sshd should start this fiovpn: its absolute path when run as ``fiovpn``,
    else ``python -m fiovpn``."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "fiovpn" and argv0.exists():
        return [str(argv0.absolute())]
    return [sys.executable, "-m", "fiovpn"]


@dataclass(frozen=True, slots=True)
class Admin:
    name: str
    key_type: str
    key: str  # base64 blob

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "key_type": self.key_type, "public_key": self.key}


def _managed(line: str) -> Admin | None:
    if MARK not in line or not line.startswith("command="):
        return None
    m = _MANAGED.search(line)
    if m is None:
        return None
    return Admin(m["name"], m["type"], m["blob"])


@dataclass
class AdminKeys:
    path: Path
    program: list[str]  # how sshd starts fiovpn (absolute path or python -m fiovpn)
    config: str | None = None  # the server settings file the forced command reads

    def _read(self) -> list[str]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise PermanentError(f"cannot read {self.path}: {exc.strerror}",
                                 code="authorized_keys_unreadable") from None
        return raw.decode("utf-8", "surrogateescape").splitlines(keepends=True)

    def _write(self, lines: list[str]) -> None:
        try:
            atomic_write(self.path, "".join(lines).encode("utf-8", "surrogateescape"),
                         mode=0o600)
        except OSError as exc:
            raise PermanentError(f"cannot write {self.path}: {exc.strerror}",
                                 code="authorized_keys_unwritable") from None

    @classmethod
    def of_server(cls, settings: ServerSettings, config_file: Path | None) -> AdminKeys:
        """This server's authorized_keys as `server admins`, the daemon (HA catch-up)
        and `ha-receive` all write it: each forced command starts this fiovpn with the
        settings file this command read (``config_file``; absolute, as sshd runs it
        from elsewhere; None: the default one)."""
        return cls(settings.authorized_keys, this_program(),
                   str(config_file.absolute()) if config_file is not None else None)

    def list(self) -> list[Admin]:
        return [a for a in map(_managed, self._read()) if a is not None]

    def add(self, name: str, key_text: str) -> Admin:
        validate_name(name, what="admin name")
        key_type, blob = parse_public_key(key_text)
        command = forced_command_line(self.program, name, self.config)
        with locked(self.path):
            lines = self._read()
            for ln in lines:
                admin = _managed(ln)
                if admin is not None and admin.name == name:
                    raise Conflict(f"an admin named {name!r} already exists",
                                   code="name_taken",
                                   hint=f"remove it first: fiovpn server admins remove "
                                        f"--name {name}")
                if blob in ln.split():
                    raise Conflict("that SSH key is already in "
                                   f"{self.path}" + (f" (admin {admin.name!r})"
                                                     if admin else " (with a shell)"),
                                   code="key_taken")
            if lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n"
            lines.append(f'command="{command}",restrict {key_type} {blob} {MARK}{name}\n')
            self._write(lines)
        return Admin(name, key_type, blob)

    def replace_managed(self, admins: Sequence[Admin]) -> bool:
        """Make the managed lines exactly ``admins`` (HA: the active's admins on the
        standby), each with this server's own forced command; every other line
        kept byte for byte. False when nothing changed."""
        command = {a.name: forced_command_line(self.program, a.name, self.config)
                   for a in admins}
        wanted = {a.name: a for a in admins}
        with locked(self.path):
            lines = self._read()
            kept: list[str] = []
            have: set[str] = set()
            for ln in lines:
                admin = _managed(ln)
                if admin is None:
                    kept.append(ln)
                elif wanted.get(admin.name) == admin and admin.name not in have:
                    kept.append(ln)
                    have.add(admin.name)
            if kept and not kept[-1].endswith("\n"):
                kept[-1] += "\n"
            for a in admins:
                if a.name not in have:
                    kept.append(f'command="{command[a.name]}",restrict {a.key_type} {a.key} '
                                f"{MARK}{a.name}\n")
            if kept == lines:
                return False
            self._write(kept)
        return True

    def remove(self, name: str) -> Admin:
        validate_name(name, what="admin name")
        with locked(self.path):
            lines = self._read()
            kept = [ln for ln in lines if (a := _managed(ln)) is None or a.name != name]
            gone = [a for ln in lines if (a := _managed(ln)) is not None and a.name == name]
            if not gone:
                raise NotFound(f"no admin named {name!r} in {self.path}",
                               hint="see `fiovpn server admins list`")
            self._write(kept)
        return gone[0]
