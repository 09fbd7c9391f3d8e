"""What one reconcile saw and did."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fiovpn.core.peers import DesiredPeers, Peer
from fiovpn.core.plan import PeerChange
from fiovpn.core.registry import RegistryProblem
from fiovpn.errors import FiovpnError, api_error_code

log = logging.getLogger("fiovpn.server")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")



@dataclass
class ReconcileReport:
    """What one reconcile saw and did."""

    at: str
    changes: list[PeerChange] = field(default_factory=list)
    peers: list[Peer] = field(default_factory=list)
    desired: DesiredPeers | None = None
    registry_problems: list[RegistryProblem] = field(default_factory=list)
    api_ok: bool = False
    api_error: str | None = None
    api_exception: FiovpnError | None = field(default=None, repr=False)
    retry_after: float | None = None
    errors: list[str] = field(default_factory=list)
    devices_source: str = "api"  # api | cache | interface
    used_api: bool = True
    firewall_applied: bool = False
    hosts_changed: bool = False
    cause: str | None = None  # who asked for this pass and why (logged with each change)
    registry_held: bool = False  # a doubtful registry read was not applied yet (debounce)
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.api_error is None and not self.errors

    @property
    def api_error_code(self) -> str | None:
        """``auth_failed``, ``api_unreachable`` or ``api_error`` when the factory
        read failed (SPEC section 10), else None."""
        if self.api_exception is None:
            return None if self.api_error is None else "api_error"
        return api_error_code(self.api_exception)

    @property
    def error(self) -> str | None:
        parts = ([self.api_error] if self.api_error else []) + self.errors
        return "; ".join(parts) if parts else None

