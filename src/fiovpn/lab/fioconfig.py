"""The lab's stand-in for fioconfig on a device: config files and their handlers.

What it models, as fioconfig does it:

- the device's config files live in ``/var/run/secrets/`` (a tmpfs: a reboot
  empties it); each file is written atomically (mode 0640);
- a file's ``on-changed`` handler runs only when the file's bytes changed, or
  when the file went away (then it is removed first); handlers get
  ``CONFIG_FILE`` in their environment; a failing handler is logged and the
  rest go on; handlers outside ``/usr/share/fioconfig/handlers/`` are skipped;
- a check-in with nothing new (the 304 of If-Modified-Since) runs nothing;
- ``extract`` at boot writes every file of the stored config afresh, so every
  file's handler runs once.

The config comes from the sandbox factory (the device's and the factory's
files, the device's overriding), fetched from inside the device's namespace.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiovpn.adapters.fs import atomic_write
from fiovpn.lab.proc import LabError
from fiovpn.sandbox.server import CHECKIN_HEADER

if TYPE_CHECKING:
    from fiovpn.lab.roles import Device

HANDLERS_DIR = "/usr/share/fioconfig/handlers/"
SECRETS_DIR = "run/secrets"  # /var/run/secrets, relative to the device's root


@dataclass(frozen=True)
class ConfigFile:
    name: str
    value: str
    on_changed: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "on-changed": list(self.on_changed)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConfigFile:
        return cls(str(data["name"]), str(data.get("value") or ""),
                   tuple(str(c) for c in (data.get("on-changed") or ())))


Config = dict[str, ConfigFile]


@dataclass(frozen=True)
class HandlerRun:
    file: str
    handler: str
    exit_code: int
    output: str


class Fioconfig:
    """fioconfig of one lab device. ``handlers`` maps a handler path as the factory
    names it (``/usr/share/fioconfig/handlers/...``) to the lab's script."""

    def __init__(self, device: Device, handlers: Mapping[str, Path]) -> None:
        self.device = device
        self.handlers = dict(handlers)
        # /var/sota/config.encrypted on a device: survives reboots
        self.stored_path = device.home / "fioconfig-config.json"
        self.runs: list[HandlerRun] = []

    @property
    def secrets_dir(self) -> Path:
        """The secrets dir as the lab (outside the device) reaches it."""
        return self.device.root / SECRETS_DIR

    def stored(self) -> Config | None:
        try:
            data = json.loads(self.stored_path.read_text())
        except FileNotFoundError:
            return None
        return {f["name"]: ConfigFile.from_json(f) for f in data}

    def _store(self, config: Config) -> None:
        atomic_write(self.stored_path, json.dumps([f.to_json() for f in config.values()],
                                                  indent=1), mode=0o600)

    def extract(self, config: Config, prev: Config | None) -> list[HandlerRun]:
        """Write every file of ``config``; run the handler of each file whose bytes
        changed, then of each file of ``prev`` that is gone (removed first)."""
        self.secrets_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        runs = []
        for f in config.values():
            path = self.secrets_dir / f.name
            try:
                same = path.read_bytes() == f.value.encode()
            except FileNotFoundError:
                same = False
            if same:
                continue
            atomic_write(path, f.value, mode=0o640)
            runs += self.on_changed(f)
        for f in (prev or {}).values():
            if f.name in config:
                continue
            (self.secrets_dir / f.name).unlink(missing_ok=True)
            runs += self.on_changed(f)
        return runs

    def on_changed(self, f: ConfigFile) -> list[HandlerRun]:
        """Run ``f``'s on-changed handler (if fioconfig would)."""
        if not f.on_changed:
            return []
        handler = f.on_changed[0]
        script = self.handlers.get(handler)
        if not handler.startswith(HANDLERS_DIR) or script is None:
            return []  # fioconfig skips handlers it will not run
        result = self.device.run([str(script), *f.on_changed[1:]], check=False, timeout=120,
                                 env={"CONFIG_FILE": f"/var/{SECRETS_DIR}/{f.name}"})
        run = HandlerRun(f.name, handler, result.returncode,
                         (result.stdout + result.stderr).strip())
        self.runs.append(run)
        return [run]

    def boot(self) -> list[HandlerRun]:
        """``fioconfig extract`` at boot: the secrets tmpfs is empty, so every stored
        file is written and every handler runs once per file."""
        stored = self.stored()
        return [] if stored is None else self.extract(stored, None)

    def set_config(self, config: Config) -> list[HandlerRun]:
        """A check-in that brought ``config`` (a changed config, or the first one)."""
        prev = self.stored()
        if prev == config and all((self.secrets_dir / n).exists() for n in config):
            return []  # 304: nothing new, nothing runs
        runs = self.extract(config, prev)
        self._store(config)
        return runs

    def check_in(self) -> list[HandlerRun]:
        """Fetch the device's config from the sandbox factory and apply it."""
        return self.set_config(self.fetch())

    def fetch(self) -> Config:
        device = self.device
        factory = device.lab.factory
        if factory is None:
            raise LabError("this lab has no factory: use Device.configure_vpn()")
        url = factory.api_url
        replies = [
            device.http("GET", f"{url}/ota/factories/{factory.factory}/config/",
                        token=factory.token),
            # the device's own fetch is a check-in (its last-seen moves), as with fioconfig
            device.http("GET", f"{url}/ota/devices/{device.device_name}/config/"
                               f"?factory={factory.factory}", token=factory.token,
                        headers={CHECKIN_HEADER: device.device_name}),
        ]
        config: Config = {}
        for reply in replies:  # factory files first: the device's own override them
            if not reply.ok:
                raise LabError(f"{device.name} cannot read its config: {reply.status} "
                               f"{reply.body[:200]}")
            data = reply.json()
            current = (data.get("config") or [{}])[0] if isinstance(data, dict) else {}
            for f in current.get("files", []) if current else []:
                cf = ConfigFile.from_json(f)
                config[cf.name] = cf
        return config
