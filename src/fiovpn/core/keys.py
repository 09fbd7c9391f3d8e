"""WireGuard keys: X25519, base64 of 32 bytes, identical to ``wg genkey`` / ``wg pubkey``."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fiovpn.errors import BadInput

KEY_BYTES = 32


@dataclass(frozen=True, order=True, slots=True)
class Key:
    """A validated WireGuard key (public or private) in its base64 text form."""

    text: str

    def __post_init__(self) -> None:
        _decode(self.text)

    @classmethod
    def parse(cls, value: str, *, what: str = "key") -> Key:
        """Validate ``value`` (surrounding whitespace ignored) or raise ``BadInput``."""
        text = value.strip()
        try:
            _decode(text)
        except ValueError as exc:
            raise BadInput(
                f"invalid WireGuard {what} {_show(text)}: {exc}", code="bad_key",
                hint="a key is 44 characters of base64, as printed by `wg pubkey`",
            ) from None
        return cls(text)

    @property
    def raw(self) -> bytes:
        return _decode(self.text)

    def __str__(self) -> str:
        return self.text


def _show(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _decode(text: str) -> bytes:
    if len(text) != 44 or not text.endswith("="):
        raise ValueError(f"expected 44 base64 characters, got {len(text)}")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"decodes to {len(raw)} bytes, expected {KEY_BYTES}")
    if base64.b64encode(raw).decode() != text:
        raise ValueError("not canonical base64")
    return raw


def clamp(raw: bytes) -> bytes:
    """Clamp a Curve25519 scalar the way ``wg genkey`` does."""
    b = bytearray(raw)
    b[0] &= 248
    b[31] &= 127
    b[31] |= 64
    return bytes(b)


def generate_private_key() -> Key:
    """A new private key, clamped like ``wg genkey``."""
    raw = X25519PrivateKey.generate().private_bytes_raw()
    return Key(base64.b64encode(clamp(raw)).decode())


def public_key(private: Key) -> Key:
    """The public key of ``private`` (same result as ``wg pubkey``)."""
    pub = X25519PrivateKey.from_private_bytes(private.raw).public_key().public_bytes_raw()
    return Key(base64.b64encode(pub).decode())


@dataclass(frozen=True, slots=True)
class KeyPair:
    private: Key
    public: Key

    @classmethod
    def generate(cls) -> KeyPair:
        priv = generate_private_key()
        return cls(priv, public_key(priv))
