"""WireGuard keys: X25519, base64 of 32 bytes, identical to ``wg genkey`` / ``wg pubkey``."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from fiovpn.errors import BadInput

KEY_BYTES = 32
_VALID: set[str] = set()  # key texts already checked (public keys: not secret)
_VALID_MAX = 500_000
_SHARED: dict[str, Key] = {}  # one Key object per public key text (Key.shared)

# X25519 points of small order (RFC 7748 section 7; libsodium's list), top bit
# cleared: a peer "public key" among them yields an all-zero shared secret, so
# no handshake can ever be trusted. WireGuard refuses them; so does fiovpn,
# before they reach a registry line or the interface.
_LOW_ORDER = frozenset(bytes.fromhex(h) for h in (
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
))


def is_low_order(raw: bytes) -> bool:
    """True for the X25519 points of order 1, 2, 4 or 8 (and their aliases with
    the ignored top bit set, or the field prime added)."""
    return raw[:31] + bytes([raw[31] & 0x7F]) in _LOW_ORDER


@dataclass(frozen=True, order=True, slots=True)
class Key:
    """A validated WireGuard key (public or private) in its base64 text form."""

    text: str

    def __post_init__(self) -> None:
        # Every pass meets the same 50,000 keys (wg dump, factory list): each text
        # is checked once per process.
        if self.text not in _VALID:
            _decode(self.text)
            if len(_VALID) >= _VALID_MAX:
                _VALID.clear()
            _VALID.add(self.text)

    @classmethod
    def shared(cls, text: str) -> Key:
        """``Key(text)``, the same object each time for the same text: the wg dump and
        the factory list name the same 50,000 public keys on every pass (never use it
        for private keys: they would stay in memory)."""
        key = _SHARED.get(text)
        if key is None:
            key = cls(text)
            if len(_SHARED) >= _VALID_MAX:
                _SHARED.clear()
            _SHARED[text] = key
        return key

    @classmethod
    def parse(cls, value: str, *, what: str = "key", public: bool = False) -> Key:
        """Validate ``value`` (surrounding whitespace ignored) or raise ``BadInput``.
        With ``public``, a low-order point (all zeros, ...) is refused too."""
        text = value.strip()
        seen = _SHARED.get(text) if public else None
        if seen is not None and not is_low_order(base64.b64decode(text)):
            return seen  # the factory list names the same 50,000 keys on every read
        try:
            raw = _decode(text)
        except ValueError as exc:
            raise BadInput(
                f"invalid WireGuard {what} {_show(text)}: {exc}", code="bad_key",
                hint="a key is 44 characters of base64, as printed by `wg pubkey`",
            ) from None
        if public and is_low_order(raw):
            raise BadInput(
                f"invalid WireGuard {what} {_show(text)}: a low-order X25519 point "
                "(all zeros or similar), which no real key pair has", code="bad_key",
                hint="use the public key `wg pubkey` (or `fiovpn keys generate`) printed")
        return cls.shared(text) if public else cls(text)

    @classmethod
    def parse_public(cls, value: str, *, what: str = "public key") -> Key:
        """``parse`` for a peer's public key: low-order points refused."""
        return cls.parse(value, what=what, public=True)

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
    # imported here: reading and checking keys (every command) needs no X25519 maths
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    raw = X25519PrivateKey.generate().private_bytes_raw()
    return Key(base64.b64encode(clamp(raw)).decode())


def public_key(private: Key) -> Key:
    """The public key of ``private`` (same result as ``wg pubkey``)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

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
