"""The dashboard: the page (plain HTML and JS, no build step, no external
asset) and the document it polls (status, live grants, recent journal, and
the topology picture ``fiovpn demo`` draws)."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from fiovpn.core.topology import render_svg
from fiovpn.ops.view import StatusView

TOPOLOGY_MAX_PEERS = 40  # a picture of 50,000 boxes shows nothing: the table has them all
JOURNAL_ENTRIES = 50


@cache
def _template() -> str:
    return resources.files("fiovpn.ops").joinpath("dashboard.html").read_text("utf-8")


def page(refresh_s: float) -> str:
    """The dashboard page, polling every ``refresh_s`` seconds."""
    return _template().replace("__REFRESH_MS__", str(max(200, int(refresh_s * 1000))))


def refresh_seconds(interval: float) -> float:
    """How often the page polls: often enough that a change the daemon applies
    shows within a second or two, never more than once per 200 ms."""
    return max(0.2, min(1.0, interval / 2))


def topology_snapshot(status: dict[str, Any], limit: int = TOPOLOGY_MAX_PEERS
                      ) -> tuple[dict[str, Any], int]:
    """``status`` with at most ``limit`` peers for the picture (every client first,
    then devices with the newest handshake), and how many were left out."""
    peers = [p for p in status.get("peers") or () if isinstance(p, dict)]
    if len(peers) <= limit:
        return status, 0
    clients = [p for p in peers if p.get("kind") == "client"]
    devices = sorted((p for p in peers if p.get("kind") != "client"),
                     key=lambda p: -(p.get("latest_handshake") or 0))
    shown = (clients + devices)[:limit]
    return {**status, "peers": shown}, len(peers) - len(shown)


def dashboard_document(view: StatusView) -> dict[str, Any]:
    """What the page draws: ``{"now","status","grants","journal","topology"}``."""
    status = view.status()
    now = view.clock()
    snapshot, hidden = topology_snapshot(status)
    title = None
    if hidden:
        title = (f"fiovpn: factory {status.get('factory') or '?'} "
                 f"({len(snapshot['peers'])} of {len(snapshot['peers']) + hidden} peers shown)")
    return {"now": now, "status": status, "grants": view.grants(),
            "journal": view.journal(JOURNAL_ENTRIES),
            "topology": render_svg(snapshot, now=now, title=title)}
