"""``fiovpn ssh-config``: write the OpenSSH fragment for every VPN-enabled device.

The device list comes from the factory (``wireguard-ips``); the options are the
ones ``fiovpn ssh`` uses: the device user, the identity file, the known_hosts file
it checks host keys against (OpenSSH's own ``~/.ssh/known_hosts`` unless
``--known-hosts``) with ``StrictHostKeyChecking yes``, and the extra ``ssh-options``.
Host keys are pinned by VPN IP in both, so one known_hosts entry serves both.
The fragment is written atomically, 0600; ``~/.ssh/config`` is never touched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fiovpn.adapters.fs import atomic_write, locked, read_text
from fiovpn.adapters.ssh import SshOptions
from fiovpn.core import sshconfig
from fiovpn.services.device_access import DEVICE_SSH_PORT
from fiovpn.settings import ClientSettings


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


def default_path() -> Path:
    return _home() / ".config" / "fiovpn" / "ssh_config"


def known_hosts_file(settings: ClientSettings) -> Path:
    """The known_hosts ``fiovpn ssh`` checks against: the setting, else OpenSSH's."""
    return settings.known_hosts or _home() / ".ssh" / "known_hosts"


@dataclass(frozen=True)
class SshConfigResult:
    path: Path
    hosts: list[sshconfig.HostEntry]
    changed: bool

    @property
    def include(self) -> str:
        return f"Include {self.path}"

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "include": self.include, "changed": self.changed,
                "hosts": [{"name": h.name, "vpn_ip": str(h.vpn_ip)} for h in self.hosts]}


def write_ssh_config(settings: ClientSettings, api_rows: list[Any], *,
                     output: Path | None = None) -> SshConfigResult:
    """Render the fragment from ``api_rows`` (``wireguard-ips`` rows) and write it to
    ``output`` (default ``~/.config/fiovpn/ssh_config``) when it changed."""
    SshOptions(extra=tuple(settings.ssh_options))  # refuses what fiovpn ssh refuses
    hosts = [sshconfig.HostEntry(r.name, r.ip) for r in api_rows
             if r.enabled and r.ip is not None]
    options = sshconfig.HostOptions(user=settings.user, known_hosts=known_hosts_file(settings),
                                    identity_file=settings.identity_file,
                                    port=DEVICE_SSH_PORT, extra=tuple(settings.ssh_options))
    text = sshconfig.render(hosts, options)
    path = (output or default_path()).expanduser().absolute()
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    with locked(path):
        changed = read_text(path) != text
        if changed or (path.stat().st_mode & 0o077):
            atomic_write(path, text, mode=0o600)
    return SshConfigResult(path, sorted(hosts, key=lambda h: h.name), changed)
