"""The sandbox factory's state: devices, their config history, the factory config.

Kept as the JSON the API serves, so the state file (``--state``) is readable
and the lab can pre-seed it::

    {"factory": str, "token": str | null,
     "users": [{"polis-id", "name", "role"}],
     "groups": [{"id", "name", "description"}],
     "devices": [{"name", "uuid", "owner", "device-group", "tag", "target-name",
                  "status", "last-seen", "up-to-date", "is-prod", "public-key",
                  "network-info": {"hostname", "local_ipv4", "mac"},
                  "config": [<entries newest first>]}],
     "factory_config": [<entries newest first>],
     "oauth": <the OAuth clients and tokens, see sandbox/oauth.py>}

Device fields are fioctl's (``client.Device``): ``owner`` is a user's
``polis-id``, ``device-group`` the group's name (lists) and ``public-key`` the
device's client-certificate key, not its WireGuard key. A state file without
the newer keys (users, groups, tag, ...) is filled in with defaults.

An entry is ``{"created-at", "reason", "files": [{"name", "value", "unencrypted",
"on-changed"}]}``. A device's VPN public key lives in its ``wireguard-client``
file, exactly as fioctl expects; ``wireguard-ips`` is derived from those files
and, like the real endpoint, lists only devices that have an address.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fiovpn.adapters.fs import atomic_write, locked
from fiovpn.core.factory_files import VPN_HANDLER, WIREGUARD_CLIENT_FILE
from fiovpn.core.names import validate_name
from fiovpn.errors import BadInput
from fiovpn.sandbox import oauth as oauth_state

DEFAULT_FACTORY = "sandbox"
DEFAULT_TOKEN = "sandbox"  # noqa: S105 (the sandbox's public test token)
# Every device field the sandbox serves (lists; a single GET has ``group`` instead
# of ``device-group``), with its default for state files that lack it.
DEVICE_DEFAULTS: dict[str, Any] = {
    "owner": "", "device-group": "", "tag": "", "target-name": "", "status": "OK",
    "last-seen": "", "up-to-date": True, "is-prod": False, "public-key": "",
}
DEVICE_FIELDS = ("name", "uuid", *DEVICE_DEFAULTS, "network-info")


def now() -> str:
    """A timestamp in the API's format (``2026-01-02T03:04:05+00:00``)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def random_pubkey() -> str:
    """A random WireGuard-shaped public key (any 32 bytes are a valid X25519 point)."""
    return base64.b64encode(os.urandom(32)).decode()


def client_file_value(pubkey: str | None, address: str | None = None,
                      enabled: bool = True) -> str:
    """A ``wireguard-client`` value: ``enabled=0\\npubkey=K`` before enable, as a
    fresh device publishes it; ``address=..\\npubkey=..[\\nenabled=0]`` once fioctl
    enabled it."""
    if not address:
        return f"enabled=0\npubkey={pubkey or ''}"
    text = f"address={address}\npubkey={pubkey or ''}"
    return text if enabled else text + "\nenabled=0"


def client_file(value: str, *, handler: bool = True) -> dict[str, Any]:
    """The ``wireguard-client`` file; a fresh device's own has no on-changed handler."""
    return {"name": WIREGUARD_CLIENT_FILE, "value": value, "unencrypted": True,
            "on-changed": [VPN_HANDLER] if handler else []}


def device_public_key() -> str:
    """A stand-in for the device's client-certificate public key (PEM, as the API
    sends it); random bytes in a PEM frame, never used for crypto."""
    body = base64.b64encode(os.urandom(91)).decode()
    return f"-----BEGIN PUBLIC KEY-----\n{body[:64]}\n{body[64:]}\n-----END PUBLIC KEY-----\n"


def network_info(hostname: str, local_ipv4: str = "") -> dict[str, str]:
    mac = "02:" + ":".join(f"{b:02x}" for b in os.urandom(5))
    return {"hostname": hostname, "local_ipv4": local_ipv4, "mac": mac}


def new_user(name: str, role: str = "owner") -> dict[str, str]:
    return {"polis-id": str(uuid.uuid4()), "name": name, "role": role}


def new_device(name: str, *, pubkey: str | None = None, address: str | None = None,
               enabled: bool = True, status: str = "OK", target_name: str = "",
               device_group: str = "", last_seen: str | None = None, owner: str = "",
               tag: str = "", is_prod: bool = False, up_to_date: bool = True,
               local_ipv4: str = "") -> dict[str, Any]:
    """A device record; with a ``pubkey`` it has published its VPN key (the file a
    fresh device publishes; with ``address`` as fioctl left it after enabling)."""
    device: dict[str, Any] = {
        "name": validate_name(name, what="device name"),
        "uuid": str(uuid.uuid4()),
        "owner": owner,
        "device-group": device_group,
        "tag": tag,
        "target-name": target_name,
        "status": status,
        "last-seen": now() if last_seen is None else last_seen,
        "up-to-date": up_to_date,
        "is-prod": is_prod,
        "public-key": device_public_key(),
        "network-info": network_info(name, local_ipv4),
        "config": [],
    }
    if pubkey:
        device["config"].append({
            "created-at": now(), "reason": "Device published its VPN public key",
            "files": [client_file(client_file_value(pubkey, address, enabled),
                                  handler=bool(address))],
        })
    return device


def _file(f: dict[str, Any]) -> dict[str, Any]:
    return {"name": f["name"], "value": f["value"],
            "unencrypted": bool(f.get("unencrypted", False)),
            "on-changed": list(f.get("on-changed") or [])}


def merge_entry(history: list[dict[str, Any]], reason: str,
                files: list[dict[str, Any]]) -> dict[str, Any]:
    """PATCH semantics: the current files with ``files`` merged in by name, as a new
    entry placed at ``history[0]``."""
    merged: dict[str, dict[str, Any]] = {}
    if history:
        for f in history[0].get("files", []):
            merged[f["name"]] = f
    for f in files:
        merged[f["name"]] = _file(f)
    entry = {"created-at": now(), "reason": reason, "files": list(merged.values())}
    history.insert(0, entry)
    return entry


def replace_entry(history: list[dict[str, Any]], reason: str,
                  files: list[dict[str, Any]]) -> dict[str, Any]:
    """POST semantics: a new current entry holding exactly ``files``."""
    entry = {"created-at": now(), "reason": reason, "files": [_file(f) for f in files]}
    history.insert(0, entry)
    return entry


def delete_file_entry(history: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """DELETE of one file: a new current entry without it (None: no such file)."""
    current = history[0].get("files", []) if history else []
    if not any(f.get("name") == name for f in current):
        return None
    entry = {"created-at": now(), "reason": f"Deleted file {name}",
             "files": [f for f in current if f.get("name") != name]}
    history.insert(0, entry)
    return entry


def parse_key_values(value: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in value.splitlines():
        key, sep, val = line.partition("=")
        if sep:
            out[key.strip()] = val.strip()
    return out


@dataclass
class SandboxState:
    factory: str = DEFAULT_FACTORY
    token: str | None = DEFAULT_TOKEN
    devices: list[dict[str, Any]] = field(default_factory=list)
    factory_config: list[dict[str, Any]] = field(default_factory=list)
    users: list[dict[str, str]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)
    oauth: dict[str, Any] = field(default_factory=oauth_state.empty_state)

    def __post_init__(self) -> None:
        if not self.users:
            self.users.append(new_user("Sandbox Admin"))
        for d in self.devices:
            if not d.get("owner"):
                d["owner"] = self.users[0]["polis-id"]
            if d.get("device-group"):
                self.ensure_group(str(d["device-group"]))

    # -- building ------------------------------------------------------------------------

    @classmethod
    def generate(cls, factory: str = DEFAULT_FACTORY, token: str | None = DEFAULT_TOKEN,
                 devices: int = 5, enabled: int = 2,
                 first_ip: str = "10.42.42.2") -> SandboxState:
        """``devices`` devices with random keys; the first ``enabled`` (at most
        ``devices - 1``) already on VPN with fioctl-style addresses from ``first_ip``.
        Odd devices are in group ``field`` (tag ``main``), even ones in ``lab``
        (tag ``devel``); every third one is a production device."""
        validate_name(factory, what="factory name")
        width = max(2, len(str(devices)))
        base = first_ip.rsplit(".", 1)
        state = cls(factory=factory, token=token)
        on_vpn = min(enabled, max(0, devices - 1))
        for i in range(1, devices + 1):
            address = f"{base[0]}.{int(base[1]) + i - 1}" if i <= on_vpn else None
            state.devices.append(new_device(
                f"device-{i:0{width}d}", pubkey=random_pubkey(), address=address,
                target_name=f"{factory}-lmp-{40 + i % 3}",
                device_group="field" if i % 2 else "lab",
                tag="main" if i % 2 else "devel", is_prod=i % 3 == 0,
                owner=state.users[0]["polis-id"],
            ))
            state.ensure_group(state.devices[-1]["device-group"])
        return state

    @classmethod
    def from_json(cls, data: Any, source: str = "state") -> SandboxState:
        def bad(why: str) -> BadInput:
            return BadInput(f"sandbox state {source}: {why}", code="bad_state")

        if not isinstance(data, dict):
            raise bad("expected a JSON object")
        factory = data.get("factory", DEFAULT_FACTORY)
        token = data.get("token")
        if not isinstance(factory, str) or not factory:
            raise bad("'factory' must be a name")
        validate_name(factory, what="factory name")
        if token is not None and not isinstance(token, str):
            raise bad("'token' must be a string or null")
        devices = data.get("devices", [])
        if not isinstance(devices, list):
            raise bad("'devices' must be a list")
        seen: set[str] = set()
        for n, d in enumerate(devices):
            if not isinstance(d, dict) or not isinstance(d.get("name"), str):
                raise bad(f"device {n} must be an object with a 'name'")
            validate_name(d["name"], what="device name")
            if d["name"] in seen:
                raise bad(f"device {d['name']!r} appears twice")
            seen.add(d["name"])
            d.setdefault("uuid", str(uuid.uuid4()))
            for key, default in DEVICE_DEFAULTS.items():
                d.setdefault(key, default)
            if not d["public-key"]:
                d["public-key"] = device_public_key()
            if not isinstance(d.get("network-info"), dict):
                d["network-info"] = network_info(d["name"])
            d.setdefault("config", [])
            _check_history(d["config"], f"device {d['name']!r} config", bad)
        config = data.get("factory_config", [])
        _check_history(config, "factory_config", bad)
        users = data.get("users", [])
        if not isinstance(users, list) or not all(
                isinstance(u, dict) and isinstance(u.get("polis-id"), str) for u in users):
            raise bad("'users' must be a list of objects with a 'polis-id'")
        for u in users:
            u.setdefault("name", u["polis-id"])
            u.setdefault("role", "member")
        groups = data.get("groups", [])
        if not isinstance(groups, list) or not all(
                isinstance(g, dict) and isinstance(g.get("name"), str)
                and isinstance(g.get("id"), int) for g in groups):
            raise bad("'groups' must be a list of objects with an integer 'id' and a 'name'")
        for g in groups:
            g.setdefault("description", "")
        return cls(factory=factory, token=token, devices=devices, factory_config=config,
                   users=users, groups=groups, oauth=oauth_state.check_state(data.get("oauth")))

    def to_json(self) -> dict[str, Any]:
        return {"factory": self.factory, "token": self.token, "users": self.users,
                "groups": self.groups, "devices": self.devices,
                "factory_config": self.factory_config, "oauth": self.oauth}

    def ensure_group(self, name: str) -> dict[str, Any]:
        """The device group ``name``, created when missing (ids count up from 1)."""
        for g in self.groups:
            if g["name"] == name:
                return g
        group = {"id": max((int(g["id"]) for g in self.groups), default=0) + 1,
                 "name": name, "description": ""}
        self.groups.append(group)
        return group

    # -- queries -------------------------------------------------------------------------

    def device(self, name: str) -> dict[str, Any] | None:
        for d in self.devices:
            if d["name"] == name:
                return d
        return None

    def device_by_uuid(self, device_uuid: str) -> dict[str, Any] | None:
        for d in self.devices:
            if d["uuid"] == device_uuid:
                return d
        return None

    def group(self, name: str) -> dict[str, Any] | None:
        return next((g for g in self.groups if g["name"] == name), None)

    def wireguard_ips(self) -> list[dict[str, Any]]:
        """Every device whose current ``wireguard-client`` file has an address (a
        device that only published its key is not listed, as by the real API)."""
        out: list[dict[str, Any]] = []
        for d in self.devices:
            history = d.get("config") or []
            files = history[0].get("files", []) if history else []
            f = next((f for f in files if f.get("name") == WIREGUARD_CLIENT_FILE), None)
            if f is None:
                continue
            kv = parse_key_values(str(f.get("value", "")))
            ip = kv.get("address") or None
            if ip is None:
                continue
            out.append({"name": d["name"], "ip": ip,
                        "enabled": kv.get("enabled", "1") != "0",
                        "pubkey": kv.get("pubkey") or None})
        return out

    def public_device(self, d: dict[str, Any], *, single: bool = False) -> dict[str, Any]:
        """A device as the API sends it: in lists with ``device-group`` (the name), in a
        single GET with a ``group`` object (null when in no group) instead."""
        out = {k: v for k, v in d.items() if k != "config"}
        out["factory"] = self.factory
        if single:
            name = out.pop("device-group", "")
            group = self.group(name) if name else None
            out["group"] = None if group is None else dict(group)
        return out


def _check_history(history: Any, what: str, bad: Any) -> None:
    if not isinstance(history, list):
        raise bad(f"{what} must be a list of entries")
    for n, entry in enumerate(history):
        if not isinstance(entry, dict) or not isinstance(entry.get("files", []), list):
            raise bad(f"{what} entry {n} must be an object with a 'files' list")
        entry.setdefault("created-at", "")
        entry.setdefault("reason", "")
        entry.setdefault("files", [])
        for f in entry["files"]:
            if not isinstance(f, dict) or not isinstance(f.get("name"), str) \
                    or not isinstance(f.get("value", ""), str):
                raise bad(f"{what} entry {n}: each file needs a 'name' and a string 'value'")
            f.setdefault("value", "")
            f.setdefault("unencrypted", True)
            f.setdefault("on-changed", [])


class StateFile:
    """The state on disk: loaded at start, rewritten atomically after each change,
    and re-read when another process (a second sandbox, the lab) changed it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None

    def _current_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def exists(self) -> bool:
        return self.path.exists()

    def changed(self) -> bool:
        return self._current_stamp() != self._stamp

    def load(self) -> SandboxState:
        with locked(self.path):
            try:
                text = self.path.read_text()
            except OSError as exc:
                raise BadInput(f"cannot read sandbox state {self.path}: {exc.strerror}",
                               code="bad_state") from None
            self._stamp = self._current_stamp()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInput(f"sandbox state {self.path} is not valid JSON: {exc}",
                           code="bad_state") from None
        return SandboxState.from_json(data, str(self.path))

    def save(self, state: SandboxState) -> None:
        with locked(self.path):
            atomic_write(self.path, json.dumps(state.to_json(), indent=1) + "\n", mode=0o600)
            self._stamp = self._current_stamp()
