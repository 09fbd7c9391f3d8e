"""The device list's filters and sorting, as fioctl sends them (``devices list``).

fioctl (``subcommands/devices/list.go``) sends ``name`` (a glob: ``*`` and
``?``), ``group``, ``match_tag``, ``target_name``, ``uuid``, ``prod`` (1/0),
``mine`` (1) and ``sortby`` (comma list of ``name``/``last_seen``, ``-`` for
descending; default: by owner, then name). Older fioctl sent ``name_ilike``
(SQL LIKE: ``%``, ``_``, ``\\_``), also understood here.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from typing import Any

from fiovpn.errors import BadInput

SORT_FIELDS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "name": lambda d: str(d.get("name", "")),
    "last_seen": lambda d: str(d.get("last-seen", "")),
    "owner": lambda d: str(d.get("owner", "")),
}
_EXACT = {"group": "device-group", "match_tag": "tag", "target_name": "target-name",
          "uuid": "uuid"}


def _like_to_glob(pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(f"[{pattern[i + 1]}]")
            i += 2
            continue
        out.append({"%": "*", "_": "?", "*": "[*]", "?": "[?]", "[": "[[]"}.get(c, c))
        i += 1
    return "".join(out)


def select(devices: list[dict[str, Any]], query: Mapping[str, str],
           me: str) -> list[dict[str, Any]]:
    """The devices matching every filter in ``query`` (``me``: the caller's polis-id)."""
    out = list(devices)
    for param, key in _EXACT.items():
        if query.get(param):
            out = [d for d in out if str(d.get(key, "")) == query[param]]
    if query.get("name"):
        out = [d for d in out if fnmatch.fnmatchcase(str(d["name"]), query["name"])]
    if query.get("name_ilike"):
        glob = _like_to_glob(query["name_ilike"]).lower()
        out = [d for d in out if fnmatch.fnmatchcase(str(d["name"]).lower(), glob)]
    prod = query.get("prod")
    if prod:
        if prod not in ("0", "1"):
            raise BadInput(f"Invalid prod: {prod!r} (expected 1 or 0)")
        out = [d for d in out if bool(d.get("is-prod")) == (prod == "1")]
    if query.get("mine") == "1":
        out = [d for d in out if d.get("owner") == me]
    return sort(out, query.get("sortby", ""))


def sort(devices: list[dict[str, Any]], sortby: str) -> list[dict[str, Any]]:
    keys = [k.strip() for k in sortby.split(",") if k.strip()] or ["owner", "name"]
    out = list(devices)
    # Python's sort is stable: apply the keys last to first.
    for key in reversed(keys):
        field = key.lstrip("-")
        if field not in SORT_FIELDS:
            raise BadInput(f"Invalid sortby field {field!r} "
                           f"(allowed: {', '.join(sorted(SORT_FIELDS))})")
        out.sort(key=SORT_FIELDS[field], reverse=key.startswith("-"))
    return out
