"""HA: the active's 2 s copy reads and hashes the registry only when it changed,
and a changed registry is always sent.

Before, every copy read the whole registry twice (``registry_sha`` and
``state_message``) and hashed it twice, though it is sent only when it changed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from tests.unit.test_ha_parts import FakeWg, ReceivingLink, settings, standby_of  # noqa: F401

from fiovpn.adapters.wireguard import WireGuard
from fiovpn.core.ha import registry_digest
from fiovpn.core.keys import KeyPair
from fiovpn.services import ha, ha_registry
from fiovpn.services.ha_registry import RACY_NS, RegistryDigest, registry_digest_of
from fiovpn.settings import ServerSettings

LATER = 10 * 10**9  # the copies run this long after the registry was written


def _registry(n: int) -> str:
    return "".join(f"{KeyPair.generate().public} 10.42.42.{200 + i % 50} c{i}\n"
                   for i in range(n))


def _node(active: ServerSettings) -> tuple[ha.HaNode, ReceivingLink, RegistryDigest]:
    link = ReceivingLink(standby_of(active))
    node = ha.HaNode(active, WireGuard(FakeWg({}).runner), link=link)  # type: ignore[arg-type]
    digests = registry_digest_of(active.clients_file)
    digests.clock_ns = lambda: time.time_ns() + LATER
    return node, link, digests


class ReadSpy:
    """Counts reads of one file (``Path.read_bytes``, which every registry read uses)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
        self.reads = 0
        original = Path.read_bytes

        def read_bytes(p: Path) -> bytes:
            if p == path:
                self.reads += 1
            return original(p)
        monkeypatch.setattr(Path, "read_bytes", read_bytes)


def test_a_copy_with_the_registry_unchanged_reads_none_of_it(
        settings: ServerSettings, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    text = _registry(3000)  # ~190 kB
    settings.clients_file.write_text(text)
    node, link, _digests = _node(settings)
    assert node.sync_once()
    assert link.sent[-1].registry == text
    spy = ReadSpy(monkeypatch, settings.clients_file)
    for _ in range(5):
        assert node.sync_once()
        assert link.sent[-1].registry is None  # not resent ...
        assert link.sent[-1].registry_sha == registry_digest(text)  # ... its digest right
    assert spy.reads == 0  # and not a byte of it read for that (was 2 reads a copy)


def test_every_way_the_registry_changes_is_sent_at_the_next_copy(
        settings: ServerSettings) -> None:  # noqa: F811
    from fiovpn.services.registry import ClientRegistry

    path = settings.clients_file
    path.write_text(_registry(3))
    node, link, _digests = _node(settings)
    assert node.sync_once()
    standby = link.peer.clients_file

    # the CLI's way: an atomic replace (a new inode)
    ClientRegistry(path, settings.network()).add(str(KeyPair.generate().public), name="new")
    assert node.sync_once() and link.sent[-1].registry == path.read_text()
    assert standby.read_bytes() == path.read_bytes()

    # by hand, in place: same size, same inode, mtime set back; its ctime moved
    # (a few ms on: the kernel's timestamp tick; within one is RACY_NS's case below)
    time.sleep(0.05)
    st = path.stat()
    old = path.read_bytes()
    with path.open("r+b") as fh:
        fh.write(old.replace(b" c0\n", b" cX\n", 1))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_ino == st.st_ino
    assert node.sync_once() and link.sent[-1].registry == path.read_text()
    assert standby.read_bytes() == path.read_bytes()

    # removed: the standby gets the empty registry (it had clients)
    path.unlink()
    assert node.sync_once() and link.sent[-1].registry == ""
    assert standby.read_text() == ""


@pytest.mark.parametrize("age_ns, trusted", [(RACY_NS + 1, True), (RACY_NS // 2, False)])
def test_an_identity_written_in_the_same_tick_is_not_trusted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, age_ns: int, trusted: bool) -> None:
    """A same-size edit within the filesystem's timestamp granularity keeps inode,
    size, mtime and ctime: a digest is remembered only for an identity older than
    RACY_NS, so such an edit is read at the next copy."""
    path = tmp_path / "clients.conf"
    path.write_text("a\n")
    sig = (1, 2, 5_000_000_000, 5_000_000_000)
    monkeypatch.setattr(ha_registry, "file_signature", lambda _p: sig)
    digests = RegistryDigest(path, clock_ns=lambda: sig[3] + age_ns)
    assert digests.digest() == registry_digest("a\n")
    path.write_text("b\n")  # the identity (as faked) unchanged
    assert digests.digest() == registry_digest("a\n" if trusted else "b\n")
    assert digests.reads == (1 if trusted else 2)


def test_the_standby_reads_its_registry_only_after_it_changed(
        settings: ServerSettings, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Each `ha-receive` is a new process: the identity and digest it last had are
    kept in its HA state file, trusted while the registry is as it was then."""
    from fiovpn.core.ha import SyncMessage
    from fiovpn.services.admins import AdminKeys

    standby = standby_of(settings)
    monkeypatch.setattr(ha_registry, "RACY_NS", -LATER)  # as if written long ago

    def receive(message: SyncMessage) -> str:
        monkeypatch.setattr(ha_registry, "_digests", {})  # a new process each copy
        answer = ha.receive(standby, message, admins=AdminKeys(
            standby.authorized_keys, ["/usr/bin/fiovpn"], None))
        return str(answer["registry_sha"])

    text = _registry(3000)
    assert receive(SyncMessage(time.time(), "active", {}, text, registry_digest(text))) \
        == registry_digest(text)
    spy = ReadSpy(monkeypatch, standby.clients_file)
    unchanged = SyncMessage(time.time(), "active", {}, None, registry_digest(text))
    for _ in range(3):
        assert receive(unchanged) == registry_digest(text)
    assert spy.reads == 0  # was: the whole registry read and hashed every copy
    time.sleep(0.05)  # past the kernel's timestamp tick
    edited = text.replace(" c0\n", " cX\n", 1)
    standby.clients_file.write_text(edited)  # by another hand, in place
    assert receive(unchanged) == registry_digest(edited)  # so the active resends it
    assert spy.reads == 1
    # a mark that is not one is ignored, not trusted
    ha.HaFiles(standby.state_dir).update_state(registry_mark=["x", 1, 2, 3, "sha"])
    assert receive(unchanged) == registry_digest(edited)
