"""The client registry ``factory-clients.conf``: ``<public_key> <ip> [name]`` a line.

``#`` starts a comment (anywhere on a line); blank lines are fine. The parsed
document keeps every line as written (comments, blank lines, order, even bad
lines) so that adding or removing a client rewrites only that client's line.
A bad line is reported with its line number and skipped; the others apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from fiovpn.core.addresses import parse_ip
from fiovpn.core.keys import Key
from fiovpn.core.names import validate_name
from fiovpn.errors import BadInput, NotFound

HEADER = ("# fiovpn client registry: <public_key> <ip> [name], one client a line.\n"
          "# Managed with `fiovpn server clients add|remove`; comments and order are kept.\n")


@dataclass(frozen=True, slots=True)
class ClientEntry:
    public_key: Key
    ip: IPv4Address
    name: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"public_key": str(self.public_key), "ip": str(self.ip), "name": self.name}

    def render(self) -> str:
        return f"{self.public_key} {self.ip}" + (f" {self.name}" if self.name else "")


@dataclass(frozen=True, slots=True)
class RegistryProblem:
    line: int
    text: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"

    def to_json(self) -> dict[str, str | int]:
        return {"line": self.line, "text": self.text, "message": self.message}


@dataclass(frozen=True, slots=True)
class RegistryLine:
    text: str  # exactly as written, without the newline
    entry: ClientEntry | None = None
    problem: str | None = None


def parse_line(text: str) -> RegistryLine:
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:  # bytes that were not UTF-8 (kept via surrogateescape)
            return RegistryLine(text, problem="not valid UTF-8 text")
    body = text.split("#", 1)[0].strip()
    if not body:
        return RegistryLine(text)
    fields = body.split()
    if len(fields) not in (2, 3):
        return RegistryLine(text, problem=f"expected '<public_key> <ip> [name]', "
                                          f"got {len(fields)} field(s)")
    try:
        key = Key.parse(fields[0], what="public key")
        ip = parse_ip(fields[1], what="client IP")
        name = validate_name(fields[2], what="client name") if len(fields) == 3 else None
    except BadInput as exc:
        return RegistryLine(text, problem=exc.message)
    return RegistryLine(text, ClientEntry(key, ip, name))


@dataclass(frozen=True, slots=True)
class Registry:
    """A parsed registry document. Operations return a new document."""

    lines: tuple[RegistryLine, ...] = ()
    trailing_newline: bool = True

    @classmethod
    def parse(cls, text: str) -> Registry:
        raw = text.split("\n")
        trailing = raw[-1] == ""
        if trailing:
            raw.pop()
        return cls(tuple(parse_line(t) for t in raw), trailing)

    @property
    def entries(self) -> list[ClientEntry]:
        return [ln.entry for ln in self.lines if ln.entry is not None]

    @property
    def problems(self) -> list[RegistryProblem]:
        return [RegistryProblem(n, ln.text, ln.problem)
                for n, ln in enumerate(self.lines, start=1) if ln.problem is not None]

    def render(self) -> str:
        text = "\n".join(ln.text for ln in self.lines)
        return text + "\n" if self.trailing_newline and self.lines else text

    def find(self, *, public_key: Key | None = None, name: str | None = None
             ) -> list[ClientEntry]:
        return [e for e in self.entries
                if (public_key is not None and e.public_key == public_key)
                or (name is not None and e.name == name)]

    def add(self, entry: ClientEntry) -> Registry:
        """Append ``entry`` as a new last line (the caller checks for conflicts)."""
        lines = self.lines if self.lines else tuple(
            RegistryLine(t) for t in HEADER.rstrip("\n").split("\n"))
        return Registry((*lines, RegistryLine(entry.render(), entry)), True)

    def remove(self, *, public_key: Key | None = None, name: str | None = None
               ) -> tuple[Registry, list[ClientEntry]]:
        """Drop the lines of clients matching the key or name; NotFound when none does."""
        kept: list[RegistryLine] = []
        removed: list[ClientEntry] = []
        for ln in self.lines:
            e = ln.entry
            if e is not None and ((public_key is not None and e.public_key == public_key)
                                  or (name is not None and e.name == name)):
                removed.append(e)
            else:
                kept.append(ln)
        if not removed:
            what = f"public key {public_key}" if public_key is not None else f"name {name!r}"
            raise NotFound(f"no client with {what} in the registry",
                           hint="see `fiovpn server clients list`")
        return Registry(tuple(kept), self.trailing_newline), removed
