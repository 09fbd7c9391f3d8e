"""OpenSSH public keys as an ``authorized_keys`` line holds them: ``<type> <base64>``.

One check for every writer of such a line: ``server admins add`` (a ``.pub`` file)
and the HA standby (the active's admins, by type and blob).
"""

from __future__ import annotations

import base64
import binascii

from fiovpn.errors import BadInput

KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
             "sk-ecdsa-sha2-nistp256@openssh.com")


def parse_public_key(text: str, *, what: str = "SSH public key") -> tuple[str, str]:
    """``(type, base64 blob)`` of one OpenSSH public key line (comment ignored)."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) != 1:
        raise BadInput(f"the {what} file must hold exactly one key line, found "
                       f"{len(lines)}", code="bad_ssh_key")
    parts = lines[0].split()
    if len(parts) < 2:
        raise _not_a_key()
    return check_public_key(parts[0], parts[1], what=what)


def check_public_key(key_type: str, blob: str, *, what: str = "SSH public key"
                     ) -> tuple[str, str]:
    """``(key_type, blob)`` when they are one OpenSSH public key: a known type, the
    blob strict base64 (no space, quote or newline could reach the line) that starts
    with its own type name (RFC 4253); else ``BadInput`` (``bad_ssh_key``)."""
    if key_type not in KEY_TYPES:
        raise _not_a_key()
    try:
        raw = base64.b64decode(blob.encode("ascii"), validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(f"the {what} is not valid base64", code="bad_ssh_key") from None
    fields = _wire_fields(raw)
    if fields is None or len(fields) < 2:
        raise BadInput(f"the {what} blob is truncated or not an OpenSSH key",
                       code="bad_ssh_key", hint="give the .pub file from ssh-keygen")
    if fields[0] != key_type.encode():  # a pasted mismatch
        raise BadInput(f"the {what} blob does not match its type {key_type}",
                       code="bad_ssh_key")
    return key_type, blob


def _wire_fields(raw: bytes) -> list[bytes] | None:
    """The length-prefixed strings a public key blob is made of (its type name first,
    then the key: RFC 4253 6.6, RFC 5656, PROTOCOL.u2f), None when they do not fill
    it exactly or one is empty."""
    fields: list[bytes] = []
    at = 0
    while at < len(raw):
        if at + 4 > len(raw):
            return None
        size = int.from_bytes(raw[at:at + 4], "big")
        if size == 0 or at + 4 + size > len(raw):
            return None
        fields.append(raw[at + 4:at + 4 + size])
        at += 4 + size
    return fields


def _not_a_key() -> BadInput:
    return BadInput(f"not an OpenSSH public key (expected '<type> <base64> [comment]' "
                    f"with a type of {', '.join(KEY_TYPES[:3])}, …; options are not "
                    "allowed)", code="bad_ssh_key", hint="give the .pub file from ssh-keygen")
