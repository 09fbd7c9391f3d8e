"""Short SHA-256 hex digests that name things (SSH control sockets, cache keys).

``import hashlib`` loads OpenSSL's libcrypto: 2-3 ms of a ``fiovpn ssh`` call that
needs two short digests and nothing else of it. As CPython's own ``random`` module
does for its hash, the interpreter's built-in implementation is taken first, and
hashlib only when the interpreter was built without it.
"""

from __future__ import annotations

try:
    from _sha2 import sha256  # type: ignore[import-not-found,unused-ignore]  # CPython 3.12+
except ImportError:
    try:
        from _sha256 import sha256  # type: ignore[import-not-found,no-redef,unused-ignore]
    except ImportError:
        from hashlib import sha256  # type: ignore[assignment,unused-ignore]


def sha256_hex(text: str, length: int = 64) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``text`` (UTF-8)."""
    return str(sha256(text.encode()).hexdigest())[:length]
