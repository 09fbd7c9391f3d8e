"""Key files on disk."""

from __future__ import annotations

import os
from pathlib import Path

from fiovpn.adapters.fs import atomic_write
from fiovpn.core.keys import Key, KeyPair, public_key
from fiovpn.errors import BadInput, PermanentError


def default_key_path() -> Path:
    home = Path(os.environ.get("HOME") or Path.home())
    return home / ".config" / "wireguard" / "foundries.key"


def read_private_key(path: Path) -> Key:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BadInput(f"private key {path} does not exist", code="no_key") from None
    except OSError as exc:
        raise PermanentError(f"cannot read private key {path}: {exc.strerror or exc}",
                             code="key_unreadable") from None
    try:
        return Key.parse(text, what="private key")
    except BadInput as exc:
        # Never echo the file: a damaged key is still (mostly) a secret, and this
        # message lands in the daemon's log.
        reason = exc.message.rpartition(": ")[2]
        raise BadInput(f"{path} does not hold a valid WireGuard private key ({reason}); "
                       "its content is not shown", code="bad_key",
                       hint="a private key is 44 characters of base64, as printed by "
                            "`wg genkey`") from None


def generate_key_file(path: Path, *, force: bool = False) -> Key:
    """Write a new private key to ``path`` (0600) and return its public key.

    An existing key is never replaced without ``force``.
    """
    if path.exists() and not force:
        existing = read_private_key(path)
        raise BadInput(f"{path} already holds a private key (public key "
                       f"{public_key(existing)}); use --force to replace it", code="key_exists")
    pair = KeyPair.generate()
    _write_key(path, pair.private)
    return pair.public


def _write_key(path: Path, key: Key) -> None:
    try:
        atomic_write(path, f"{key}\n", mode=0o600)
    except OSError as exc:
        raise PermanentError(f"cannot write private key {path}: {exc.strerror or exc}",
                             code="key_unwritable") from None


def ensure_key_file(path: Path) -> tuple[Key, bool]:
    """The private key at ``path``, generating it if missing. Returns (private, created)."""
    if path.exists():
        return read_private_key(path), False
    pair = KeyPair.generate()
    _write_key(path, pair.private)
    return pair.private, True
