"""High availability, the pure part: the floating address (VIP), the role it gives a
server, the peer it replicates to, and what one replication message holds.

Two servers share one private key behind a VIP that keepalived (VRRP) moves; a
server is ``active`` while the VIP is one of its own addresses, ``standby``
otherwise, and ``single`` when HA mode is off (no VIP setting).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any, Literal

from fiovpn.core.addresses import VpnNetwork, parse_ip
from fiovpn.core.names import validate_name
from fiovpn.core.sshkeys import check_public_key
from fiovpn.errors import BadInput

Role = Literal["active", "standby", "single"]
ACTIVE: Role = "active"
STANDBY: Role = "standby"
SINGLE: Role = "single"


def parse_vip(text: str, network: VpnNetwork) -> IPv4Address:
    """The VIP setting: an IPv4 address outside the VPN subnet (it is the underlay
    address devices and engineers reach the server at, never a tunnel address)."""
    try:
        vip = parse_ip(text, what="--ha-vip address")
    except BadInput:
        raise BadInput(f"invalid --ha-vip {text!r}: expected the IPv4 floating address "
                       "keepalived moves between the two servers, like 203.0.113.10",
                       code="bad_ha_vip") from None
    if vip in network.subnet:
        raise BadInput(f"--ha-vip {vip} is inside the VPN subnet {network.subnet}: the VIP "
                       "is the servers' public (underlay) address that devices and engineers "
                       "connect to, not a tunnel address", code="bad_ha_vip")
    if vip.is_unspecified or vip.is_loopback or vip.is_multicast:
        raise BadInput(f"--ha-vip {vip} cannot be a floating address", code="bad_ha_vip")
    return vip


def local_ipv4(fib_trie: str) -> set[IPv4Address]:
    """This network namespace's own IPv4 addresses, from ``/proc/net/fib_trie``
    (an address line followed by ``/32 host LOCAL``). Reading it costs no process,
    so the daemon can look several times a second."""
    found: set[IPv4Address] = set()
    last: str | None = None
    for line in fib_trie.splitlines():
        text = line.strip()
        if text.startswith(("|--", "+--")):
            last = text[3:].split()[0] if text.startswith("|--") else None
        elif text.startswith("/32 host LOCAL") and last is not None:
            with contextlib.suppress(ValueError):
                found.add(IPv4Address(last))
    return found


def role_for(vip: IPv4Address | None, local: set[IPv4Address]) -> Role:
    if vip is None:
        return SINGLE
    return ACTIVE if vip in local else STANDBY


# State files the active keeps identical on the standby (besides the registry).
REPLICATED_FILES = ("grants.json",)


def registry_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def admins_digest(admins: list[dict[str, str]]) -> str:
    """One digest of the managed admins (name, key type, key), in name order."""
    rows = sorted((a["name"], a["key_type"], a["public_key"]) for a in admins)
    return registry_digest(json.dumps(rows))


# --- the journal: append-only, so the active sends only what the standby lacks -----


JournalMark = tuple[int, str]  # (size in bytes, digest of those bytes)


def journal_mark(data: bytes) -> JournalMark:
    return len(data), hashlib.sha256(data).hexdigest()[:16]


EMPTY_MARK: JournalMark = (0, hashlib.sha256(b"").hexdigest()[:16])


def journal_part(offset: int, prefix_sha: str, data: bytes, sha: str) -> dict[str, Any]:
    """A journal update: ``data`` goes after the standby's first ``offset`` bytes
    (their digest ``prefix_sha``; ``offset`` 0: it replaces the standby's copy), and
    ``sha`` is the digest of the result (the active's journal up to there), so the
    standby need not read its copy back to know it."""
    return {"offset": offset, "prefix_sha": prefix_sha,
            "data": data.decode("utf-8", "surrogateescape"), "sha": sha}


def journal_update(data: bytes, peer: JournalMark | None) -> dict[str, Any]:
    """What the standby needs of the active's journal ``data``: the bytes after its
    copy when its copy is a prefix of ours (``peer``: its size and digest), else all
    of it (``offset`` 0: the standby replaces its copy)."""
    if peer is not None and 0 < peer[0] <= len(data) and journal_mark(data[:peer[0]]) == peer:
        offset, prefix = peer
    else:
        offset, prefix = EMPTY_MARK
    return journal_part(offset, prefix, data[offset:], journal_mark(data)[1])


def standby_part(value: Any) -> dict[str, Any] | None:
    """The standby's own journal lines in its answer to a copy, checked:
    ``{"file", "offset", "data"}`` (``file``: which file, so a new one is never
    taken for the old; ``data``: whole lines from byte ``offset``); each line kept
    only if it is one JSON object (it goes into the active's journal)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("data"), str) \
            or not isinstance(value.get("file"), str):
        raise ValueError("standby_lines")
    offset = value.get("offset")  # missing: a ValueError too, never a KeyError
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ValueError(f"standby_lines offset {offset!r}")
    return {"file": value["file"], "offset": offset, "data": value["data"]}


def untaken_standby_lines(part: dict[str, Any], taken: tuple[str, int] | None
                          ) -> tuple[list[dict[str, Any]], int]:
    """Of the standby's ``part``, the lines the active has not put in its journal
    yet (``taken``: the file and how far into it the active took lines before; a
    copy whose answer was lost sends them again) and how far it has taken then."""
    data = str(part["data"]).encode("utf-8", "surrogateescape")
    offset, end = int(part["offset"]), int(part["offset"]) + len(data)
    skip = 0
    if taken is not None and taken[0] == part["file"] and offset <= taken[1] <= end:
        skip = taken[1] - offset
    lines: list[dict[str, Any]] = []
    for text in data[skip:].splitlines():
        with contextlib.suppress(ValueError):
            item = json.loads(text)
            if isinstance(item, dict):
                lines.append(item)
    return lines, end


@dataclass(frozen=True)
class SyncMessage:
    """What the active sends the standby every few seconds (and before it confirms
    a registry change): the peers' current endpoints and, when it changed, the
    registry's text. ``sent`` is the sender's clock (seconds since the epoch)."""

    sent: float
    sender_role: Role
    endpoints: dict[str, str]
    registry: str | None = None
    registry_sha: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # REPLICATED_FILES by name
    # the managed admins of authorized_keys (None: not sent) and the journal's new
    # part (``journal_update``; None: not sent)
    admins: list[dict[str, str]] | None = None
    journal: dict[str, Any] | None = None
    # how far the active took the standby's own journal lines (StandbyLines):
    # ``(file, bytes)``; None: none taken
    standby_taken: tuple[str, int] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"sent": self.sent, "sender_role": self.sender_role,
                "endpoints": dict(sorted(self.endpoints.items())),
                "registry": self.registry, "registry_sha": self.registry_sha,
                "files": dict(self.files), "admins": self.admins, "journal": self.journal,
                "standby_taken": list(self.standby_taken) if self.standby_taken else None}

    @classmethod
    def from_json(cls, data: Any) -> SyncMessage:
        if not isinstance(data, dict):
            raise BadInput("an HA sync message is a JSON object", code="bad_ha_message")
        try:
            sent = float(data["sent"])
            role = str(data["sender_role"])
            endpoints = data.get("endpoints") or {}
            if role not in (ACTIVE, STANDBY, SINGLE) or not isinstance(endpoints, dict):
                raise ValueError(role)
            from fiovpn.core.keys import Key  # late: health imports this module

            clean: dict[str, str] = {}
            for key, ep in endpoints.items():
                Key.parse(str(key), what="peer public key")
                clean[str(key)] = _endpoint(str(ep))
            registry = data.get("registry")
            sha = data.get("registry_sha")
            if registry is not None and not isinstance(registry, str):
                raise ValueError("registry")
            files = data.get("files") or {}
            if not isinstance(files, dict) or not all(
                    k in REPLICATED_FILES and isinstance(v, str) for k, v in files.items()):
                raise ValueError("files")
            admins = _admins(data.get("admins"))
            journal = _journal(data.get("journal"))
            taken = taken_mark(data.get("standby_taken"))
            if data.get("standby_taken") is not None and taken is None:
                raise ValueError("standby_taken")
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"malformed HA sync message: {exc}", code="bad_ha_message") from None
        return cls(sent, role, clean, registry, str(sha) if sha else None,
                   {str(k): str(v) for k, v in files.items()}, admins, journal, taken)


def taken_mark(value: Any) -> tuple[str, int] | None:
    """``(file, bytes)`` from its JSON form (a list), None when it is not one."""
    if isinstance(value, list | tuple) and len(value) == 2 and isinstance(value[0], str) \
            and isinstance(value[1], int) and not isinstance(value[1], bool) and value[1] >= 0:
        return value[0], value[1]
    return None


def _admins(value: Any) -> list[dict[str, str]] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError("admins")
    return [checked_admin(item) for item in value]


def checked_admin(item: Any) -> dict[str, str]:
    """One admin of a sync message (``name``, ``key_type``, ``public_key``), checked
    as `server admins add` checks them (one check: ``core/sshkeys``; the receiver
    writes them into authorized_keys); ValueError otherwise. The sender leaves out
    a line that fails it (one bad line must not stop every copy)."""
    if not isinstance(item, dict):
        raise ValueError("admins")
    name, key_type, key = (str(item.get(k) or "") for k in ("name", "key_type", "public_key"))
    try:
        validate_name(name, what="admin name")
    except BadInput as exc:
        raise ValueError(f"admin name {name!r}") from exc
    try:
        check_public_key(key_type, key, what=f"admin {name!r} key")
    except BadInput as exc:
        raise ValueError(f"admin {name!r} key: {exc.message}") from exc
    return {"name": name, "key_type": key_type, "public_key": key}


def _journal(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("data"), str):
        raise ValueError("journal")
    offset = int(value["offset"])
    if offset < 0:
        raise ValueError("journal offset")
    sha = value.get("sha")  # None from an active that does not send it yet
    if sha is not None and not (isinstance(sha, str) and sha.isalnum()):
        raise ValueError("journal sha")
    return {"offset": offset, "prefix_sha": str(value.get("prefix_sha") or ""),
            "data": value["data"], "sha": sha}


def _endpoint(text: str) -> str:
    """``IP:PORT`` of a peer endpoint (IPv4, as ``wg show endpoints`` prints it)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint {text!r}")
    parse_ip(host.strip("[]"), what="endpoint address")
    return text
