"""``fiovpn server health``: can this server serve right now? (keepalived's
``track_script``: exit 0 keeps this server eligible for the VIP, non-zero makes
keepalived give the VIP to the other server.)

Checks, each cheap (keepalived runs this every second or two): the WireGuard
interface exists, the daemon runs, fiovpn's firewall table is in place, the
daemon synced recently, and in HA mode the daemon has caught up from its peer
since it started.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fiovpn.adapters.runner import Runner, SubprocessRunner, pid_alive
from fiovpn.core.ha import local_ipv4, role_for
from fiovpn.settings import ServerSettings

# Only light imports here: keepalived starts this every couple of seconds, and on
# a loaded machine the interpreter's start-up is most of its cost.
STATUS_FILE = "status.json"  # fiovpn.services.state.STATUS_FILE
HA_STATE_FILE = "ha.json"  # fiovpn.services.ha.HA_STATE_FILE
HEALTH_LOG = "health.log"
HEALTH_LOG_LINES = 200

SYNC_GRACE = 30.0  # seconds beyond two intervals before a silent daemon is unhealthy


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def _age(stamp: Any, now: float) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        at = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
    return max(0.0, now - at)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _role(settings: ServerSettings) -> str:
    vip = settings.vip
    if vip is None:
        return "single"
    try:
        return role_for(vip, local_ipv4(settings.local_addresses_file.read_text()))
    except OSError:
        return "standby"


def health(settings: ServerSettings, *, runner: Runner | None = None,
           clock: Any = time.time) -> dict[str, Any]:
    """``{"healthy", "role", "reason", "checks": [{"name","ok","detail"}]}``."""
    runner = runner or SubprocessRunner()
    now = float(clock())
    checks: list[Check] = []
    up = runner.run(["ip", "link", "show", "dev", settings.interface], check=False,
                    timeout=10.0).ok
    checks.append(Check("interface", up, f"{settings.interface} "
                        + ("exists" if up else "is missing")))
    doc = _read_json(settings.state_dir / STATUS_FILE)
    pid = doc.get("daemon_pid")
    alive = pid_alive(pid)
    checks.append(Check("daemon", alive, f"pid {pid} running" if alive else
                        (f"pid {pid} is gone" if pid else "no daemon has run here")))
    fw = runner.run(["nft", "list", "chain", "inet", settings.nft_table, "input"],
                    check=False, timeout=10.0)
    checks.append(Check("firewall", fw.ok, f"table inet {settings.nft_table} "
                        + ("in place" if fw.ok else "is missing")))
    age = _age(doc.get("last_sync"), now)
    limit = 2 * settings.interval + SYNC_GRACE
    fresh = age is not None and age <= limit
    checks.append(Check("last_sync", fresh, "never synced" if age is None else
                        f"last sync {age:.0f}s ago (limit {limit:.0f}s)"))
    role = _role(settings)
    if settings.vip is not None:
        state = _read_json(settings.state_dir / HA_STATE_FILE)
        caught = state.get("caught_up")
        started = alive and state.get("role") is not None and caught not in (None, "pending")
        last = state.get("last_received" if role == "standby" else "last_sync_ok")
        copy_age = (f"{max(0.0, now - float(last)):.0f}s ago"
                    if isinstance(last, int | float) else "never")
        checks.append(Check("peer_copy", started,
                            f"caught up: {caught or 'not yet'}; last copy {copy_age}"
                            + (f" ({settings.ha_peer})" if settings.ha_peer else "")))
    failed = [c for c in checks if not c.ok]
    reason = "; ".join(f"{c.name}: {c.detail}" for c in failed) or None
    if reason is not None:
        _note_failure(settings, now, role, reason)
    return {"healthy": not failed, "role": role, "reason": reason,
            "checks": [c.to_json() for c in checks]}


def _note_failure(settings: ServerSettings, now: float, role: str, reason: str) -> None:
    """keepalived keeps only the exit code: the reason goes to ``health.log`` in the
    state dir (the last lines kept), for whoever wonders why the VIP moved."""
    path = settings.state_dir / HEALTH_LOG
    line = f"{datetime.fromtimestamp(now, UTC):%Y-%m-%dT%H:%M:%SZ} {role} {reason}\n"
    try:
        old = path.read_text().splitlines(keepends=True)[-(HEALTH_LOG_LINES - 1):]
    except OSError:
        old = []
    try:
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join([*old, line]))
        os.chmod(tmp, 0o600)
        tmp.replace(path)
    except OSError:
        pass
