"""Validated names: device/client names, interface names, factory names.

Names end up in remote command lines, hosts files and registry lines, so
anything beyond a conservative character set is refused up front.
"""

from __future__ import annotations

import re

from fiovpn.errors import BadInput

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,126}$")
_IFACE = re.compile(r"^[A-Za-z0-9_=+.-]{1,15}$")


def validate_name(value: str, *, what: str = "name") -> str:
    """A device, client or factory name: letters, digits, ``.``, ``_``, ``-``."""
    if not _NAME.fullmatch(value):
        raise BadInput(
            f"invalid {what} {value!r}: use letters, digits, '.', '_' and '-' only "
            "(no spaces or shell characters), starting with a letter or digit",
            code="bad_name",
        )
    return value


def validate_interface(value: str) -> str:
    """A Linux interface name: at most 15 characters of ``[A-Za-z0-9_=+.-]``."""
    if not _IFACE.fullmatch(value) or value in {".", ".."} or value.startswith("-"):
        raise BadInput(
            f"invalid interface name {value!r}: 1-15 characters of letters, digits, '_=+.-'",
            code="bad_interface",
        )
    return value
