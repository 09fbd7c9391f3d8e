"""The factory's block in ``/etc/hosts``: ``<ip>\\t<device-name>`` lines between markers.

Only the block is replaced (or appended when missing); every other line of the
file stays exactly as it was.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from ipaddress import IPv4Address

from fiovpn.core.peers import ip_text

_OURS = re.compile(r"\d{1,3}(\.\d{1,3}){3}\t[A-Za-z0-9][A-Za-z0-9._-]*")


def begin_marker(factory: str) -> str:
    return f"## Factory({factory}) VPN Lookups"


def end_marker(factory: str) -> str:
    return f"## END Factory({factory}) VPN Lookups"


_ANY_BEGIN = re.compile(r"## Factory\((.+)\) VPN Lookups")
_ANY_END = re.compile(r"## END Factory\((.+)\) VPN Lookups")


def lookup(text: str, name: str) -> IPv4Address | None:
    """The IP of device ``name`` in any factory's VPN block of an ``/etc/hosts`` text."""
    inside = False
    for raw in text.splitlines():
        line = raw.strip()
        if _ANY_BEGIN.fullmatch(line):
            inside = True
        elif _ANY_END.fullmatch(line):
            inside = False
        elif inside and line and not line.startswith("#"):
            fields = line.split()
            if len(fields) >= 2 and name in fields[1:]:
                try:
                    return IPv4Address(fields[0])
                except ValueError:
                    continue
    return None


def render_block(factory: str, hosts: Iterable[tuple[IPv4Address, str]]) -> list[str]:
    body = [f"{ip_text(ip)}\t{name}"
            for ip, name in sorted(hosts, key=lambda h: (int(h[0]), h[1]))]
    return [begin_marker(factory), *body, end_marker(factory)]


def update_hosts(text: str, factory: str, hosts: Iterable[tuple[IPv4Address, str]]
                 ) -> str | None:
    """The file with the factory's block replaced, or None when nothing changes."""
    block = render_block(factory, hosts)
    lines = text.split("\n")
    trailing = lines[-1] == ""
    if trailing:
        lines.pop()
    begin, end = begin_marker(factory), end_marker(factory)
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == begin)
    except StopIteration:
        start = -1
    if start >= 0:
        stop = next((i for i in range(start + 1, len(lines)) if lines[i].strip() == end),
                    None)
        if stop is None:
            # A block without its end marker: take only the lines right after
            # it that look like ours ("<ip>\t<name>"); whatever follows (the
            # admin's own entries, another block) is not ours to drop.
            stop = start
            while stop + 1 < len(lines) and _OURS.fullmatch(lines[stop + 1]):
                stop += 1
        new_lines = [*lines[:start], *block, *lines[stop + 1:]]
    else:
        new_lines = [*lines, *block]
    new = "\n".join(new_lines) + "\n"
    return None if new == text else new
