"""A picture of the live VPN from a status snapshot (``fiovpn server status --json``):
the server in the middle, clients (engineers) on the left, devices on the right,
one line per WireGuard peer (solid and green with a recent handshake, dashed
and grey without one), and device-to-device paths as arcs between devices.

Pure: a dict in, SVG text out. ``now`` (epoch seconds) is passed in so a
snapshot always renders the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

FRESH_HANDSHAKE_S = 180  # WireGuard re-keys every 2 minutes; older means no live session

WIDTH = 1100
NODE_W = 250
NODE_H = 64
ROW = 92
TOP = 96
LEFT_X = 30
RIGHT_X = WIDTH - 100 - NODE_W  # room on the right for device-to-device arcs
SERVER_W = 250
SERVER_H = 84

FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"
GREEN = "#2e7d32"
GREY = "#9e9e9e"
ORANGE = "#ef6c00"


@dataclass(frozen=True)
class Node:
    kind: str
    name: str
    ip: str
    handshake: int | None
    rx: int
    tx: int
    endpoint: str | None

    def fresh(self, now: float) -> bool:
        return self.handshake is not None and now - self.handshake <= FRESH_HANDSHAKE_S


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def handshake_text(handshake: int | None, now: float) -> str:
    if handshake is None:
        return "no handshake"
    age = max(0, int(now - handshake))
    return f"handshake {age}s ago" if age < 120 else f"handshake {age // 60}m ago"


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def nodes(snapshot: Mapping[str, Any]) -> list[Node]:
    """The peers of a status snapshot, clients first, each kind by IP then name."""
    out = []
    for p in snapshot.get("peers") or ():
        if not isinstance(p, Mapping):
            continue
        hs = p.get("latest_handshake")
        out.append(Node(
            kind="client" if p.get("kind") == "client" else "device",
            name=str(p.get("name") or _short_key(p.get("public_key"))),
            ip=str(p.get("ip") or "?"),
            handshake=int(hs) if isinstance(hs, int | float) and hs > 0 else None,
            rx=_int(p.get("rx")), tx=_int(p.get("tx")),
            endpoint=str(p["endpoint"]) if p.get("endpoint") else None))
    return sorted(out, key=lambda n: (n.kind != "client", _ip_key(n.ip), n.name))


def _short_key(key: Any) -> str:
    text = str(key or "")
    return text[:8] + "…" if text else "(unnamed)"


def _ip_key(ip: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in ip.split("."))
    except ValueError:
        return (999,)


def _attr(value: str) -> str:
    return escape(value, {"'": "&apos;", '"': "&quot;"})


def _text(x: float, y: float, text: str, *, size: int = 12, weight: str = "normal",
          anchor: str = "start", fill: str = "#212121") -> str:
    return (f"<text x='{x:.0f}' y='{y:.0f}' {FONT} font-size='{size}' "
            f"font-weight='{weight}' text-anchor='{anchor}' fill='{fill}'>"
            f"{escape(text)}</text>")


def _box(x: float, y: float, w: float, h: float, *, fill: str, stroke: str,
         cls: str, title: str) -> str:
    return (f"<g class='{_attr(cls)}'><title>{escape(title)}</title>"
            f"<rect x='{x:.0f}' y='{y:.0f}' width='{w:.0f}' height='{h:.0f}' rx='10' "
            f"fill='{fill}' stroke='{stroke}' stroke-width='2'/></g>")


def render_svg(snapshot: Mapping[str, Any], *, now: float,
               d2d: Iterable[tuple[str, str]] = (), title: str | None = None) -> str:
    """The SVG picture of ``snapshot``; ``d2d``: pairs of device names shown
    talking to each other directly (through the server)."""
    peers = nodes(snapshot)
    clients = [n for n in peers if n.kind == "client"]
    devices = [n for n in peers if n.kind == "device"]
    rows = max(len(clients), len(devices), 1)
    height = TOP + rows * ROW + 90
    server_cx = (LEFT_X + NODE_W + RIGHT_X) / 2  # halfway between the two columns
    server_x = server_cx - SERVER_W / 2
    server_y = TOP + (rows * ROW - NODE_H) / 2 - (SERVER_H - NODE_H) / 2
    server_cy = server_y + SERVER_H / 2

    factory = str(snapshot.get("factory") or "?")
    heading = title or f"fiovpn: factory {factory}"
    fresh = sum(1 for n in peers if n.fresh(now))
    sub = (f"{len(clients)} client(s), {len(devices)} device(s), "
           f"{fresh} with a live WireGuard session")
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height:.0f}' "
        f"viewBox='0 0 {WIDTH} {height:.0f}'>",
        f"<title>{escape(heading)}</title>",
        f"<rect width='{WIDTH}' height='{height:.0f}' fill='#fafafa'/>",
        _text(LEFT_X, 34, heading, size=20, weight="bold"),
        _text(LEFT_X, 58, sub, size=13, fill="#616161"),
        _text(LEFT_X + NODE_W / 2, TOP - 14, "engineers (clients)", size=13,
              weight="bold", anchor="middle", fill="#616161"),
        _text(RIGHT_X + NODE_W / 2, TOP - 14, "devices", size=13, weight="bold",
              anchor="middle", fill="#616161"),
    ]

    positions: dict[str, tuple[float, float]] = {}
    edges: list[str] = []
    boxes: list[str] = []
    for column, x, side in ((clients, LEFT_X, -1), (devices, RIGHT_X, 1)):
        offset = (rows - len(column)) * ROW / 2
        for i, n in enumerate(column):
            y = TOP + offset + i * ROW
            cy = y + NODE_H / 2
            positions[n.name] = (x, cy)
            edge_x = x + NODE_W if side < 0 else x
            sx = server_cx + side * SERVER_W / 2
            live = n.fresh(now)
            dash = "" if live else " stroke-dasharray='6 5'"
            edges.append(
                f"<line class='peer-link {'live' if live else 'idle'}' x1='{sx:.0f}' "
                f"y1='{server_cy:.0f}' x2='{edge_x:.0f}' y2='{cy:.0f}' "
                f"stroke='{GREEN if live else GREY}' stroke-width='{3 if live else 2}'{dash}/>")
            fill = "#e3f2fd" if n.kind == "client" else "#f1f8e9"
            stroke = "#1565c0" if n.kind == "client" else "#558b2f"
            boxes.append(_box(x, y, NODE_W, NODE_H, fill=fill, stroke=stroke,
                              cls=f"peer {n.kind}",
                              title=f"{n.kind} {n.name} {n.ip}"
                                    + (f" via {n.endpoint}" if n.endpoint else "")))
            boxes.append(_text(x + 12, y + 22, n.name, size=14, weight="bold"))
            boxes.append(_text(x + NODE_W - 12, y + 22, n.ip, size=13, anchor="end",
                               fill=stroke))
            boxes.append(_text(x + 12, y + 41, handshake_text(n.handshake, now), size=11,
                               fill=GREEN if live else "#757575"))
            boxes.append(_text(x + 12, y + 57, f"rx {human_bytes(n.rx)} · tx "
                                               f"{human_bytes(n.tx)}", size=11,
                               fill="#616161"))

    arcs = []
    for a, b in _pairs(d2d, {n.name for n in devices}):
        (ax, ay), (_, by) = positions[a], positions[b]
        x0 = ax + NODE_W
        bulge = x0 + 30 + min(abs(by - ay) * 0.2, 40)
        arcs.append(
            f"<path class='d2d' d='M {x0:.0f} {ay:.0f} C {bulge:.0f} {ay:.0f} {bulge:.0f} "
            f"{by:.0f} {x0:.0f} {by:.0f}' fill='none' stroke='{ORANGE}' stroke-width='2.5' "
            f"stroke-dasharray='2 4'><title>{escape(f'device-to-device: {a} <-> {b}')}"
            f"</title></path>")

    server_ip = str(snapshot.get("server_address") or "?")
    iface = str(snapshot.get("interface") or "?")
    port = snapshot.get("port")
    server_box = [
        _box(server_x, server_y, SERVER_W, SERVER_H, fill="#fff3e0", stroke=ORANGE,
             cls="server", title=f"WireGuard server {server_ip}"),
        _text(server_cx, server_y + 26, "WireGuard server", size=15, weight="bold",
              anchor="middle"),
        _text(server_cx, server_y + 47, f"{server_ip}  ·  {iface}"
              + (f" :{port}" if port else ""), size=12, anchor="middle"),
        _text(server_cx, server_y + 66,
              "device-to-device on" if snapshot.get("allow_device_to_device") or arcs
              else "fiovpn server daemon", size=11, anchor="middle", fill="#757575"),
    ]

    legend_y = height - 28
    legend = [
        f"<line x1='{LEFT_X}' y1='{legend_y - 4}' x2='{LEFT_X + 30}' y2='{legend_y - 4}' "
        f"stroke='{GREEN}' stroke-width='3'/>",
        _text(LEFT_X + 38, legend_y, "live session (handshake < 3 min)", size=11),
        f"<line x1='{LEFT_X + 260}' y1='{legend_y - 4}' x2='{LEFT_X + 290}' "
        f"y2='{legend_y - 4}' stroke='{GREY}' stroke-width='2' stroke-dasharray='6 5'/>",
        _text(LEFT_X + 298, legend_y, "no recent handshake", size=11),
        f"<line x1='{LEFT_X + 460}' y1='{legend_y - 4}' x2='{LEFT_X + 490}' "
        f"y2='{legend_y - 4}' stroke='{ORANGE}' stroke-width='2.5' "
        f"stroke-dasharray='2 4'/>",
        _text(LEFT_X + 498, legend_y, "device-to-device (forwarded by the server)",
              size=11),
    ]
    if not peers:
        parts.append(_text(server_cx, server_y - 16, "no peers yet", size=13, anchor="middle",
                           fill="#757575"))
    parts += edges + arcs + server_box + boxes + legend + ["</svg>"]
    return "\n".join(parts) + "\n"


def _pairs(d2d: Iterable[tuple[str, str]], known: set[str]) -> Sequence[tuple[str, str]]:
    """Unique unordered pairs of two different known devices, in first-seen order."""
    seen: set[frozenset[str]] = set()
    out: list[tuple[str, str]] = []
    for a, b in d2d:
        key = frozenset((a, b))
        if a == b or a not in known or b not in known or key in seen:
            continue
        seen.add(key)
        out.append((a, b))
    return out
