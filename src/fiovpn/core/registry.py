"""The client registry ``factory-clients.conf``: ``<public_key> <ip> [name] [attr=value …]``.

``#`` starts a comment (anywhere on a line); blank lines are fine. A token
holding ``=`` is an attribute (SPEC section 11): ``groups=G1,G2`` (the client
reaches only devices of those factory device groups) and
``expires=YYYY-MM-DDTHH:MM:SSZ`` (from then it is off the interface). Unknown
attributes are kept as written and reported; a known one with a bad value
makes the whole line bad (skipped: a mistyped ``groups=`` must never widen
access). A line without attributes means what it always did. The parsed
document keeps every line as written (comments, blank lines, order, even bad
lines) so that adding or removing a client rewrites only that client's line.
A bad line is reported with its line number and skipped; the others apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from typing import Any

from fiovpn.core.addresses import parse_ip
from fiovpn.core.keys import Key
from fiovpn.core.names import validate_name
from fiovpn.core.timespec import format_timestamp, parse_timestamp
from fiovpn.errors import BadInput, NotFound

KNOWN_ATTRIBUTES = ("groups", "expires")
_ATTR_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")

HEADER = ("# fiovpn client registry: <public_key> <ip> [name] [groups=G1,G2] "
          "[expires=YYYY-MM-DDTHH:MM:SSZ], one client a line.\n"
          "# Managed with `fiovpn server clients add|remove`; comments and order are kept.\n")


def parse_groups(value: str, *, what: str = "groups") -> tuple[str, ...]:
    """``G1,G2`` -> ``("G1", "G2")``: device-group names, at least one, no repeats."""
    parts = value.split(",")
    if not value or any(not p for p in parts):
        raise BadInput(f"invalid {what} {value!r}: give device-group names separated by "
                       "commas (e.g. lab,field)", code="bad_groups")
    for p in parts:
        validate_name(p, what="device-group name")
    if len(set(parts)) != len(parts):
        raise BadInput(f"invalid {what} {value!r}: a group is named twice", code="bad_groups")
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class ClientEntry:
    public_key: Key
    ip: IPv4Address
    name: str | None = None
    groups: tuple[str, ...] | None = None  # None: every device (as before attributes)
    expires: int | None = None  # seconds since the epoch (UTC, whole seconds)
    extra: tuple[tuple[str, str], ...] = ()  # unknown attributes, kept as written

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        """``{"public_key","ip","name"}``; with ``now`` (``clients list``) also
        ``groups``, ``expires`` and ``expired``; without it ``groups``/``expires``
        only when set (``clients add``'s answer keeps its shape)."""
        data: dict[str, Any] = {"public_key": str(self.public_key), "ip": str(self.ip),
                                "name": self.name}
        groups = list(self.groups) if self.groups is not None else None
        expires = format_timestamp(self.expires) if self.expires is not None else None
        if now is not None:
            data.update(groups=groups, expires=expires, expired=self.expired(now))
        else:
            data.update({k: v for k, v in (("groups", groups), ("expires", expires))
                         if v is not None})
        return data

    def attribute_tokens(self) -> list[str]:
        tokens = [f"{k}={v}" for k, v in self.extra]
        if self.groups is not None:
            tokens.append("groups=" + ",".join(self.groups))
        if self.expires is not None:
            tokens.append(f"expires={format_timestamp(self.expires)}")
        return tokens

    def render(self) -> str:
        return " ".join([str(self.public_key), str(self.ip),
                         *([self.name] if self.name else []), *self.attribute_tokens()])


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
    notes: tuple[str, ...] = ()  # reported but harmless (unknown attributes)


def parse_line(text: str) -> RegistryLine:
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:  # bytes that were not UTF-8 (kept via surrogateescape)
            return RegistryLine(text, problem="not valid UTF-8 text")
    body = text.split("#", 1)[0].strip()
    if not body:
        return RegistryLine(text)
    # The key (base64, may end in '=') and the IP come first; after them a token
    # holding '=' is an attribute, any other is the name.
    tokens = body.split()
    rest = tokens[2:]
    fields = tokens[:2] + [t for t in rest if "=" not in t]
    attrs = [t for t in rest if "=" in t]
    if len(tokens) < 2 or len(fields) not in (2, 3):
        return RegistryLine(text, problem=f"expected '<public_key> <ip> [name] "
                                          f"[attr=value …]', got {len(fields)} field(s)")
    if len(fields) == 3 and rest[0] != fields[2]:
        return RegistryLine(text, problem="the name goes before the attributes "
                                          "(attr=value)")
    try:
        key = Key.parse_public(fields[0])
        ip = parse_ip(fields[1], what="client IP")
        name = validate_name(fields[2], what="client name") if len(fields) == 3 else None
        entry, notes = _attributes(ClientEntry(key, ip, name), attrs)
    except BadInput as exc:
        return RegistryLine(text, problem=exc.message)
    return RegistryLine(text, entry, notes=notes)


def _attributes(entry: ClientEntry, tokens: list[str]) -> tuple[ClientEntry, tuple[str, ...]]:
    seen: set[str] = set()
    extra: list[tuple[str, str]] = []
    notes: list[str] = []
    for token in tokens:
        attr, value = token.split("=", 1)
        if not _ATTR_NAME.fullmatch(attr):
            raise BadInput(f"invalid attribute {token!r}: expected name=value with a "
                           "lower-case name")
        if attr in seen:
            raise BadInput(f"attribute {attr!r} given twice")
        seen.add(attr)
        if attr == "groups":
            entry = replace(entry, groups=parse_groups(value, what="groups="))
        elif attr == "expires":
            entry = replace(entry, expires=parse_timestamp(value, what="expires="))
        else:
            extra.append((attr, value))
            notes.append(f"unknown attribute {attr!r} kept as written (fiovpn knows "
                         + ", ".join(KNOWN_ATTRIBUTES) + ")")
    return replace(entry, extra=tuple(extra)), tuple(notes)


def _with_attribute(text: str, attr: str, value: str | None) -> str:
    """``text`` with attribute ``attr`` set to ``value`` (``None`` drops it); the
    rest of the line (other tokens, spacing before a comment, the comment) kept."""
    cut = text.find("#")
    body, comment = (text, "") if cut < 0 else (text[:cut], text[cut:])
    lead = body[:len(body) - len(body.lstrip())]
    trail = body[len(body.rstrip()):]
    tokens = body.split()
    new = tokens[:2] + [t for t in tokens[2:] if not t.startswith(f"{attr}=")]
    at = next((i for i, t in enumerate(tokens) if i >= 2 and t.startswith(f"{attr}=")),
              len(new))
    if value is not None:
        new.insert(min(at, len(new)), f"{attr}={value}")
    if comment and not trail:
        trail = " "
    return lead + " ".join(new) + trail + comment


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

    @property
    def notes(self) -> list[RegistryProblem]:
        """Harmless findings (unknown attributes), by line number."""
        return [RegistryProblem(n, ln.text, note)
                for n, ln in enumerate(self.lines, start=1) for note in ln.notes]

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

    def set_expires(self, expires: int | None, *, public_key: Key | None = None,
                    name: str | None = None) -> tuple[Registry, list[ClientEntry]]:
        """Set (or with ``None`` drop) ``expires=`` on the matching clients' lines;
        every other byte of those lines and of the file is kept."""
        value = format_timestamp(expires) if expires is not None else None
        lines: list[RegistryLine] = []
        changed: list[ClientEntry] = []
        for ln in self.lines:
            e = ln.entry
            if e is not None and ((public_key is not None and e.public_key == public_key)
                                  or (name is not None and e.name == name)):
                new = parse_line(_with_attribute(ln.text, "expires", value))
                assert new.entry is not None, new.problem
                lines.append(new)
                changed.append(new.entry)
            else:
                lines.append(ln)
        if not changed:
            what = f"public key {public_key}" if public_key is not None else f"name {name!r}"
            raise NotFound(f"no client with {what} in the registry",
                           hint="see `fiovpn server clients list`")
        return Registry(tuple(lines), self.trailing_newline), changed

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
