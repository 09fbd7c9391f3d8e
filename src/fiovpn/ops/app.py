"""The daemon's HTTP app: ``/metrics``, ``/`` (the dashboard), ``/api/status``
and ``/api/dashboard`` (what the page polls).

Read-only: every route reads the :class:`~fiovpn.ops.view.StatusView`. Who
may connect is the firewall's business (only clients through the tunnel);
the app checks the source address once more, so a device that somehow gets
through is still refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from ipaddress import IPv4Address, ip_address
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from fiovpn.core.peerrows import PeerRows
from fiovpn.ops.dashboard import dashboard_document, page, refresh_seconds
from fiovpn.ops.metrics import CONTENT_TYPE, DaemonMetrics
from fiovpn.ops.view import StatusFn, StatusView


def allowed_source(host: str | None, status: dict[str, Any] | StatusFn) -> bool:
    """Loopback, the server itself (Prometheus on this host) and registered
    clients; never a device or an unknown address. ``status``: the status
    document, or what gives it (only asked when loopback does not decide)."""
    if host is None:
        return False
    try:
        addr = ip_address(host)
    except ValueError:
        return False
    if addr.is_loopback:
        return True
    if not isinstance(addr, IPv4Address):
        return False
    if callable(status):
        status = status()
    if str(addr) == status.get("server_address"):
        return True
    peers = status.get("peers") or ()
    if isinstance(peers, PeerRows):  # the daemon's last pass: no dict per peer
        return str(addr) in peers.client_ips()
    return any(p.get("kind") == "client" and p.get("ip") == str(addr)
               for p in peers if isinstance(p, dict))


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def build_app(view: StatusView, metrics: DaemonMetrics) -> Starlette:
    refresh = refresh_seconds(view.interval)

    def guarded(handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def run(request: Request) -> Response:
            host = request.client.host if request.client else None
            if not allowed_source(host, view.snapshot):
                return PlainTextResponse("only fiovpn clients through the tunnel may read "
                                         "this\n", status_code=403)
            return handler(request)
        return run

    def metrics_route(_request: Request) -> Response:
        # streamed: at 50,000 peers the text is ~16 MB, made and sent a piece at a time
        return StreamingResponse(metrics.render_chunks(), media_type=CONTENT_TYPE)

    def status_route(_request: Request) -> Response:
        return JSONResponse(view.status())

    def dashboard_data(request: Request) -> Response:
        doc = dashboard_document(view)
        # The tag leaves out the clock and the picture drawn from it: an unchanged
        # state is one small 304, not the whole table again.
        same = _json_bytes([doc["status"], doc["grants"], doc["journal"]])
        tag = '"' + hashlib.blake2b(same, digest_size=12).hexdigest() + '"'
        headers = {"ETag": tag, "Cache-Control": "no-store"}
        if request.headers.get("if-none-match") == tag:
            return Response(status_code=304, headers=headers)
        return Response(_json_bytes(doc), media_type="application/json", headers=headers)

    def index(_request: Request) -> Response:
        return HTMLResponse(page(refresh), headers={"Cache-Control": "no-store"})

    # Plain (sync) handlers: Starlette runs them in its thread pool, so a slow
    # `wg show dump` never blocks the event loop.
    routes = [
        Route("/", guarded(index)),
        Route("/metrics", guarded(metrics_route)),
        Route("/api/status", guarded(status_route)),
        Route("/api/dashboard", guarded(dashboard_data)),
    ]
    return Starlette(routes=routes)
