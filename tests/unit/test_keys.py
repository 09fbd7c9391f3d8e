from __future__ import annotations

import base64
import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fiovpn.core.keys import Key, KeyPair, public_key
from fiovpn.errors import BadInput


def test_generated_pair_matches_wg_pubkey() -> None:
    pair = KeyPair.generate()
    if shutil.which("wg") is None:
        pytest.skip("wg not installed")
    out = subprocess.run(["wg", "pubkey"], input=str(pair.private), capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == str(pair.public)


def test_private_key_is_clamped_like_wg_genkey() -> None:
    raw = KeyPair.generate().private.raw
    assert raw[0] & 7 == 0
    assert raw[31] & 0x80 == 0
    assert raw[31] & 0x40 == 0x40


def test_known_vector() -> None:
    # RFC 7748 section 6.1: Alice's private and public keys.
    priv = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    pub = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    assert public_key(Key(base64.b64encode(priv).decode())).raw == pub


@pytest.mark.parametrize("bad", ["", "abc", "not base64 at all!!!!!!!!!!!!!!!!!!!!!!!!!!!",
                                 base64.b64encode(b"x" * 31).decode(),
                                 base64.b64encode(b"x" * 33).decode()])
def test_bad_keys_are_refused_with_a_clear_message(bad: str) -> None:
    with pytest.raises(BadInput, match="invalid WireGuard public key"):
        Key.parse(bad, what="public key")


@given(st.binary(min_size=32, max_size=32))
def test_any_32_bytes_round_trip(raw: bytes) -> None:
    text = base64.b64encode(raw).decode()
    assert Key.parse(f"  {text}\n").raw == raw


def test_the_lean_sha256_is_sha256() -> None:
    """core.digest names control sockets and cache keys with the interpreter's built-in
    SHA-256 when there is one: the digests are hashlib's, byte for byte."""
    import hashlib

    from fiovpn.core.digest import sha256_hex

    for text in ("", "abc", "(PosixPath('/k'), None, '/dev/null')", "é" * 1000):
        assert sha256_hex(text) == hashlib.sha256(text.encode()).hexdigest()
        assert sha256_hex(text, 8) == hashlib.sha256(text.encode()).hexdigest()[:8]
