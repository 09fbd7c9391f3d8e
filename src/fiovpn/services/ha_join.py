"""``fiovpn server ha-join --from USER@HOST[:PORT]``: make this machine the second
server of an HA pair by copying what must be identical from the active one.

The active answers ``fiovpn server ha-export`` over SSH (keys, host key checked):
the private key (the pair shares it: the factory announces one key), its
settings, the registry, the device cache and its SSH host key (engineers'
``register`` reaches whichever server holds the VIP and must see one host key).
Every file is written atomically, 0600 where it holds a key or peers.
"""

from __future__ import annotations

import base64
import json
import tomllib
from pathlib import Path
from typing import Any

from fiovpn.adapters.fs import atomic_write
from fiovpn.adapters.runner import Runner, SubprocessRunner
from fiovpn.adapters.ssh import SshClient, SshOptions, parse_ha_peer
from fiovpn.core.ha import registry_digest
from fiovpn.core.keys import Key, public_key
from fiovpn.errors import BadInput, PermanentError
from fiovpn.services.ha_registry import registry_text
from fiovpn.settings import ServerSettings, load, load_toml, render_toml

EXPORT_VERSION = 1


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PermanentError(f"cannot read {path}: {exc.strerror}", code="ha_export_failed"
                             ) from None


def export(settings: ServerSettings, config_path: Path) -> dict[str, Any]:
    """``fiovpn server ha-export`` on the active: everything ha-join copies. Sent over
    the SSH session's stdout only (never argv, never a log)."""
    key = _read(settings.private_key)
    if key is None:
        raise PermanentError(f"no server private key at {settings.private_key}",
                             code="ha_export_failed")
    host_key = _read(settings.ssh_host_key)
    host_pub = _read(settings.ssh_host_key.with_name(settings.ssh_host_key.name + ".pub"))
    devices = _read(settings.state_dir / "devices.json")
    return {
        "version": EXPORT_VERSION,
        "settings": load_toml(config_path, required=False),
        "private_key": key,
        "registry": base64.b64encode(registry_text(settings.clients_file).encode(
            "utf-8", "surrogateescape")).decode(),
        "devices": devices,
        "ssh_host_key": host_key,
        "ssh_host_key_pub": host_pub,
    }


def join(source: str, *, config_path: Path, identity_file: Path | None = None,
         known_hosts: Path | None = None, server_command: str = "fiovpn",
         runner: Runner | None = None) -> dict[str, Any]:
    """Copy from the active server ``source``. Settings: the active's, except the
    keys this machine's settings file already sets (its own paths, say), with
    ``ha-peer`` = ``source``."""
    target = parse_ha_peer(source)
    client = SshClient(runner or SubprocessRunner(), target,
                       SshOptions(identity_file=identity_file, known_hosts=known_hosts,
                                  extra=("GlobalKnownHostsFile=/dev/null",)
                                  if known_hosts is not None else ()))
    result = client.run([server_command, "server", "ha-export", "--json"], timeout=120.0)

    try:
        data = json.loads(result.stdout)
    except ValueError:
        raise PermanentError(f"{target} answered ha-export with no JSON",
                             code="ha_join_failed") from None
    if not isinstance(data, dict) or data.get("version") != EXPORT_VERSION:
        raise PermanentError(f"{target} runs another fiovpn version (ha-export format "
                             f"{data.get('version') if isinstance(data, dict) else '?'})",
                             code="ha_join_failed")
    values = {**dict(data.get("settings") or {}),
              **load_toml(config_path, required=False)}
    if not values.get("ha-vip"):
        raise BadInput(f"{target} is not in HA mode: set ha-vip (and ha-peer) in its "
                       "settings first", code="ha_off")
    values["ha-peer"] = source
    # Settings are validated before anything is written: bad input changes nothing.
    tmp_check = render_toml(values)
    settings = load(ServerSettings, toml_path=None, toml_required=False,
                    flags={k.replace("-", "_"): v for k, v in tomllib.loads(tmp_check).items()},
                    env={})
    key = Key.parse(str(data["private_key"]).strip(), what="server private key")
    copied: list[str] = []
    atomic_write(settings.private_key, f"{key}\n", mode=0o600)
    copied.append(f"private key ({public_key(key)})")
    atomic_write(config_path, render_toml(values, header="fiovpn server settings (copied by "
                                                          f"ha-join from {source})"),
                 mode=0o600)
    copied.append("settings")
    registry = base64.b64decode(str(data.get("registry") or ""))
    atomic_write(settings.clients_file, registry, mode=0o600)
    copied.append(f"registry ({registry_digest(registry.decode('utf-8', 'surrogateescape'))})")
    if data.get("devices"):
        atomic_write(settings.state_dir / "devices.json", str(data["devices"]), mode=0o600)
        copied.append("device cache")
    if data.get("ssh_host_key"):
        atomic_write(settings.ssh_host_key, str(data["ssh_host_key"]), mode=0o600)
        if data.get("ssh_host_key_pub"):
            atomic_write(settings.ssh_host_key.with_name(settings.ssh_host_key.name + ".pub"),
                         str(data["ssh_host_key_pub"]), mode=0o644)
        copied.append("SSH host key")
    return {"from": source, "config": str(config_path), "copied": copied,
            "public_key": str(public_key(key)), "ha_vip": values.get("ha-vip")}
