"""Is a device online in the factory but without a VPN session?

The join an admin needs to tell a device problem (offline: nothing fiovpn can
do) from a VPN problem (the device checks in with the factory, yet WireGuard
has had no handshake from it for three minutes). Pure: values in, values out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

FRESH_HANDSHAKE_S = 180  # WireGuard re-keys every 2 minutes; older means no live session
# fioconfig checks in every 300 s: two missed check-ins and the factory sees it gone.
ONLINE_WINDOW_S = 600
ONLINE_STATUSES = frozenset({"ok", "online", "up"})


def parse_time(text: str | None) -> float | None:
    """Epoch seconds of an API timestamp (``2026-01-02T03:04:05+00:00`` or ``…Z``,
    with or without fractions); None when empty or unreadable."""
    if not text:
        return None
    raw = text.strip()
    if raw.endswith("Z"):
        raw = raw[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def factory_online(status: str | None, last_seen: str | None, now: float) -> bool:
    """Online as the factory sees it: a ``last-seen`` in the last ten minutes; a
    device without ``last-seen`` counts when its ``status`` says so."""
    seen = parse_time(last_seen)
    if seen is not None:
        return now - seen <= ONLINE_WINDOW_S
    return (status or "").strip().lower() in ONLINE_STATUSES


def live_session(latest_handshake: float | None, now: float) -> bool:
    return bool(latest_handshake) and now - float(latest_handshake or 0) <= FRESH_HANDSHAKE_S


def online_without_vpn(online: Iterable[str], handshakes: Mapping[str, float | None],
                       now: float) -> list[str]:
    """Names of VPN-enabled devices (the keys of ``handshakes``: device name ->
    latest handshake) that the factory lists as ``online`` but that have had no
    handshake for ``FRESH_HANDSHAKE_S``. Sorted."""
    return sorted(name for name in set(online)
                  if name in handshakes and not live_session(handshakes[name], now))
