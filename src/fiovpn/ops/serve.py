"""Everything the daemon needs to serve its state over HTTP, built in one call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fiovpn.adapters.factory_api import FactoryApi
from fiovpn.core.listen import Listen
from fiovpn.ops.app import build_app
from fiovpn.ops.http import HttpServer
from fiovpn.ops.metrics import DaemonMetrics
from fiovpn.ops.view import Presence, StatusView

PRESENCE_MIN_S = 5.0  # at most one factory device-list read per this many seconds


@dataclass
class Web:
    view: StatusView
    metrics: DaemonMetrics
    http: HttpServer


def build_web(listen: Listen, *, status_fn: Callable[[], dict[str, Any]], state_dir: Path,
              interval: float, api: FactoryApi | None,
              snapshot_fn: Callable[[], dict[str, Any]] | None = None) -> Web:
    """The view, metrics and (bound, not yet serving) HTTP server of a daemon."""
    presence = Presence(api, ttl=max(PRESENCE_MIN_S, interval)) if api is not None else None
    view = StatusView(status_fn, state_dir, interval=interval, presence=presence,
                      snapshot_fn=snapshot_fn)
    metrics = DaemonMetrics(view)
    http = HttpServer(build_app(view, metrics), listen)
    http.bind()
    return Web(view, metrics, http)
