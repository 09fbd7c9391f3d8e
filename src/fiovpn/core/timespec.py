"""Durations (``5s``, ``90m``, ``1h30m``, ``7d``) and UTC timestamps
(``YYYY-MM-DDTHH:MM:SSZ``) as the registry, grants and the journal write them.

Pure: the caller passes ``now`` (seconds since the epoch).
"""

from __future__ import annotations

import re
import time

from fiovpn.errors import BadInput

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(?:\d+[smhdw])+$")
_PART = re.compile(r"(\d+)([smhdw])")
_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
MAX_SECONDS = 10 * 366 * 86400  # ten years: anything longer is a typo


def parse_duration(text: str, *, what: str = "duration") -> int:
    """Seconds in ``text`` (``5s``, ``10m``, ``2h``, ``1h30m``, ``7d``, ``2w``); > 0."""
    value = text.strip().lower()
    if not _DURATION.fullmatch(value):
        raise BadInput(f"invalid {what} {text!r}: use a number with a unit s, m, h, d or w "
                       "(e.g. 5s, 30m, 1h30m, 7d)", code="bad_duration")
    seconds = sum(int(n) * _UNITS[u] for n, u in _PART.findall(value))
    if not 0 < seconds <= MAX_SECONDS:
        raise BadInput(f"invalid {what} {text!r}: must be more than 0 s and at most ten years",
                       code="bad_duration")
    return seconds


def check_timeout(timeout: float | None, *, what: str = "--timeout") -> float | None:
    """``timeout`` when it is a positive number of seconds (or None: no limit), else
    one clear ``BadInput`` (0, negative and NaN included)."""
    if timeout is not None and not timeout > 0:
        raise BadInput(f"{what} must be positive, not {timeout:g}", code="bad_timeout")
    return timeout


def format_timestamp(ts: float) -> str:
    # time, not datetime: the journal line of every `fiovpn ssh` is written with it
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts)))


def parse_timestamp(text: str, *, what: str = "timestamp") -> int:
    """Seconds since the epoch of ``YYYY-MM-DDTHH:MM:SSZ`` (UTC, whole seconds)."""
    if not _STAMP.fullmatch(text):
        raise BadInput(f"invalid {what} {text!r}: expected YYYY-MM-DDTHH:MM:SSZ (UTC)",
                       code="bad_timestamp")
    from datetime import UTC, datetime

    try:
        stamp = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise BadInput(f"invalid {what} {text!r}: not a real date and time",
                       code="bad_timestamp") from None
    return int(stamp.timestamp())


def parse_expiry(text: str, now: float, *, what: str = "--expires") -> int:
    """An end time from a DURATION (from ``now``) or a TIMESTAMP; never in the past."""
    if _STAMP.fullmatch(text.strip()):
        at = parse_timestamp(text.strip(), what=what)
        if at <= now:
            raise BadInput(f"{what} {text} is in the past (now is {format_timestamp(now)})",
                           code="expires_in_past",
                           hint="give a later time or a duration such as 30d")
        return at
    if text.strip() and text.strip()[0] == "-":
        raise BadInput(f"{what} {text!r} is in the past: give a duration such as 30d",
                       code="expires_in_past")
    try:
        return int(now) + parse_duration(text, what=what)
    except BadInput:
        raise BadInput(f"invalid {what} {text!r}: give a duration (5s, 30m, 1h30m, 7d) or a "
                       "UTC time YYYY-MM-DDTHH:MM:SSZ", code="bad_expires") from None
