"""HA: the journal kept on both servers without reading all of it every copy.

The journal is append-only, so the active sends the standby only the bytes after
its copy, with the size and digest (a ``JournalMark``) of the prefix they extend
(``core/ha.py``). Every ``ha-sync-interval`` (2 s) both ends need their own mark;
neither reads the whole file for it:

- the active (``JournalDigest``, one per file and process, in memory) hashes only
  what was appended since it last looked: a copy with nothing new hashes no byte
  of the journal (it reads back the last 64 bytes it hashed: a file rewritten in
  place, as ``cp`` restores a backup, keeps its inode), one with a new line hashes
  that line;
- the standby (``StandbyJournal``) writes its copy only through ``take``, so it
  keeps the mark it last wrote, with the file's identity (device, inode, size,
  mtime, ctime: a tool that sets the mtime back cannot set the ctime back), in
  ``ha-journal.json`` and trusts it while the file is as it left it.

Drift stays detected: a standby copy changed any other way (a split brain, a
restore, a hand edit) no longer matches its identity, is hashed once, its mark no
longer fits the active's journal, and the active sends all of it once.

So the standby never writes a line of its own into its copy (a whole copy would
drop it, and it would make the copy drift): ``StandbyLines`` keeps them apart
until the active has them in the journal.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fiovpn.adapters.fs import atomic_write, locked
from fiovpn.core.ha import EMPTY_MARK, JournalMark, journal_mark, journal_part
from fiovpn.services.journal import JOURNAL_FILE, Journal

MARK_FILE = "ha-journal.json"
STANDBY_LINES_FILE = "journal.standby.jsonl"
STANDBY_SENT_FILE = "journal.standby.sent"
_STANDBY_PART_MAX = 256 * 1024  # bytes of the standby's own lines in one answer
_CHUNK = 1 << 20
_MARKS_KEPT = 32  # recent (size, digest) pairs: a standby a few copies behind still fits
_TAIL = 64  # bytes last hashed, read back each look: the file is still the one hashed


@dataclass
class JournalDigest:
    """The active's journal: its size and digest, brought up to date by hashing only
    the bytes appended since the last look. A file replaced (another inode), cut
    shorter or rewritten in place (its last bytes hashed are not there any more) is
    hashed again from the start."""

    path: Path
    _identity: tuple[int, int] | None = None
    _size: int = 0
    _hash: Any = field(default_factory=hashlib.sha256)
    _tail: bytes = b""  # the last bytes hashed (up to _TAIL), which end at _size
    _marks: dict[int, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    bytes_hashed: int = 0  # what this object read and hashed so far (for tests, logs)

    def mark(self) -> JournalMark:
        with self._lock:
            return self._refresh()

    def _refresh(self) -> JournalMark:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._restart(None)
            return EMPTY_MARK
        identity = (st.st_dev, st.st_ino)
        if identity != self._identity or st.st_size < self._size or (
                self._tail and self._read(self._size - len(self._tail), self._size)
                != self._tail):
            self._restart(identity)
        if st.st_size > self._size:
            with self.path.open("rb") as fh:
                fh.seek(self._size)
                for chunk in iter(lambda: fh.read(_CHUNK), b""):
                    self._hash.update(chunk)
                    self._size += len(chunk)
                    self.bytes_hashed += len(chunk)
                    self._tail = (self._tail + chunk[-_TAIL:])[-_TAIL:]
        mark = (self._size, self._hash.hexdigest()[:16])
        self._remember(mark)
        return mark

    def _restart(self, identity: tuple[int, int] | None) -> None:
        self._identity, self._size, self._hash = identity, 0, hashlib.sha256()
        self._tail = b""
        self._marks.clear()

    def _remember(self, mark: JournalMark) -> None:
        self._marks.pop(mark[0], None)
        self._marks[mark[0]] = mark[1]
        while len(self._marks) > _MARKS_KEPT:
            del self._marks[next(iter(self._marks))]

    def _digest_at(self, size: int) -> str | None:
        """The digest of our first ``size`` bytes: remembered, else read (once)."""
        if size in self._marks:
            return self._marks[size]
        data = self._read(0, size)
        if len(data) != size:
            return None
        self.bytes_hashed += size
        mark = journal_mark(data)
        self._remember(mark)
        return mark[1]

    def _read(self, start: int, end: int) -> bytes:
        try:
            with self.path.open("rb") as fh:
                fh.seek(start)
                return fh.read(end - start)
        except FileNotFoundError:
            return b""

    def update_for(self, peer: JournalMark | None) -> dict[str, Any]:
        """The journal part of a copy to a standby whose copy has ``peer`` (its
        size and digest): what follows it when it is a prefix of ours, else all of
        ours (``offset`` 0). Nothing new: an empty part (no byte read)."""
        with self._lock:
            size, sha = self._refresh()
            if peer is not None and 0 < peer[0] <= size and self._digest_at(peer[0]) == peer[1]:
                offset, prefix = peer
            else:
                offset, prefix = EMPTY_MARK
            return journal_part(offset, prefix, self._read(offset, size) if offset < size
                                else b"", sha)


_digests: dict[Path, JournalDigest] = {}
_digests_lock = threading.Lock()


def journal_digest(path: Path) -> JournalDigest:
    """This process's ``JournalDigest`` of ``path`` (the daemon's lives as long as it)."""
    with _digests_lock:
        found = _digests.get(path)
        if found is None:
            found = _digests[path] = JournalDigest(path)
        return found


@dataclass
class StandbyJournal:
    """The standby's copy of the active's journal, and its mark without reading it:
    the mark ``take`` last wrote is trusted while the file's identity is the one
    recorded with it."""

    path: Path

    @property
    def mark_path(self) -> Path:
        return self.path.parent / MARK_FILE

    def mark(self) -> JournalMark:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return EMPTY_MARK
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            saved = json.loads(self.mark_path.read_text())
            # a mark recorded without the ctime (the version before) is read once
            if [saved["dev"], saved["ino"], saved["size"], saved["mtime_ns"],
                    saved["ctime_ns"]] == [st.st_dev, st.st_ino, st.st_size,
                                           st.st_mtime_ns, st.st_ctime_ns]:
                return int(saved["size"]), str(saved["sha"])
        # changed by another hand (or never recorded): read it once
        mark = journal_mark(self.path.read_bytes())
        self._record(mark)
        return mark

    def _record(self, mark: JournalMark) -> None:
        """Keep ``mark`` with the file's identity as it is now; none when the file is
        not ``mark``'s size (someone else wrote meanwhile: read it next time)."""
        try:
            st = os.stat(self.path)
            if st.st_size != mark[0]:
                self.mark_path.unlink(missing_ok=True)
                return
            atomic_write(self.mark_path, json.dumps(
                {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size,
                 "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
                 "sha": mark[1]}) + "\n", mode=0o600)
        except OSError:
            with contextlib.suppress(OSError):
                self.mark_path.unlink(missing_ok=True)

    def take(self, update: dict[str, Any]) -> bool:
        """The active's journal part: its new lines appended (or all of it, replacing
        ours); False when the part does not fit our copy (the active then sends all)."""
        data = str(update["data"]).encode("utf-8", "surrogateescape")
        offset = int(update["offset"])
        sha = update.get("sha")
        with locked(self.path):
            mark = self.mark()
            if offset > 0:
                if mark != (offset, str(update["prefix_sha"])):
                    return False
                if data:
                    self._append(data)
                    # our prefix was the active's: the result is its journal up to there
                    self._record((offset + len(data), str(sha)) if sha
                                 else journal_mark(self.path.read_bytes()))
                return True
            whole = journal_mark(data)
            if whole == mark:
                return True
            if 0 < mark[0] <= len(data) and journal_mark(data[:mark[0]]) == mark:
                self._append(data[mark[0]:])  # appended, as the journal is
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(self.path, data, mode=0o600)
            self._record(whole)
        return True

    def _append(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        Journal(self.path).write_raw(data)


@dataclass
class StandbyLines:
    """The journal lines this server writes while it is the HA standby (a refused
    admin command): ``journal.standby.jsonl``, append-only like the journal.

    Each copy from the active carries them back in the standby's answer
    (``pending``); the active appends them to the journal, which comes back here
    with its next copy, and that copy says how far the active took this file
    (``acknowledge``). Lines not taken yet are read with the journal
    (``read_server_journal``), so none is lost while the active is away; a standby
    that becomes active puts them into its own journal (``fold_into``)."""

    directory: Path

    @property
    def path(self) -> Path:
        return self.directory / STANDBY_LINES_FILE

    @property
    def sent_path(self) -> Path:
        return self.directory / STANDBY_SENT_FILE

    def journal(self) -> Journal:
        return Journal(self.path)

    def file_id(self) -> str | None:
        """Which file this is: device, inode and its first line's digest (a file
        removed and written anew may get the old inode back); a new one starts from
        its byte 0."""
        try:
            with self.path.open("rb") as fh:
                st = os.fstat(fh.fileno())
                first = fh.readline(4096)
        except FileNotFoundError:
            return None
        return f"{st.st_dev}:{st.st_ino}:{hashlib.sha256(first).hexdigest()[:16]}"

    def sent(self) -> int:
        """Bytes of this file the journal has (0 for another file than the one
        recorded)."""
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            saved = json.loads(self.sent_path.read_text())
            if saved["file"] == self.file_id():
                return max(0, min(int(saved["bytes"]), self.path.stat().st_size))
        return 0

    def pending(self) -> dict[str, Any] | None:
        """``{"file", "offset", "data"}``: the whole lines after ``sent`` (at most
        256 KiB, the rest with the next copy); None when there are none."""
        file = self.file_id()
        if file is None:
            return None
        offset = self.sent()
        try:
            with self.path.open("rb") as fh:
                fh.seek(offset)
                data = fh.read(_STANDBY_PART_MAX)
        except FileNotFoundError:
            return None
        data = data[:data.rfind(b"\n") + 1]  # a line being written goes next time
        if not data:
            return None
        return {"file": file, "offset": offset,
                "data": data.decode("utf-8", "surrogateescape")}

    def acknowledge(self, taken: tuple[str, int]) -> None:
        """The journal has this file up to ``taken`` (the active said so)."""
        file, upto = taken
        if file != self.file_id() or upto <= self.sent():
            return
        with contextlib.suppress(OSError):
            upto = min(upto, self.path.stat().st_size)
            atomic_write(self.sent_path, json.dumps({"file": file, "bytes": upto}) + "\n",
                         mode=0o600)

    def unsent(self, *, since: float | None = None, action: str | None = None
               ) -> list[dict[str, Any]]:
        return self.journal().read(since=since, action=action, start=self.sent())

    def fold_into(self, journal: Journal) -> int:
        """This server became active: its standby lines go into its own journal (they
        reach the new standby with the next copy). How many lines."""
        n = 0
        while (part := self.pending()) is not None:
            data = part["data"].encode("utf-8", "surrogateescape")
            journal.write_raw(data)
            n += data.count(b"\n")
            self.acknowledge((part["file"], part["offset"] + len(data)))
            if self.sent() != part["offset"] + len(data):
                break  # could not record it: the rest next time, never twice now
        return n


def read_server_journal(state_dir: Path, *, since: float | None = None,
                        action: str | None = None) -> list[dict[str, Any]]:
    """`server journal`: the journal and the standby lines it does not have yet, in
    time order."""
    main = Journal(state_dir / JOURNAL_FILE).read(since=since, action=action)
    own = StandbyLines(state_dir).unsent(since=since, action=action)
    if not own:
        return main
    return list(heapq.merge(main, own, key=lambda line: str(line.get("at"))))
