"""Files: atomic writes (temp file + rename), exclusive locks, private modes."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from fiovpn.errors import TemporaryError

WRITE_CHUNK = 1 << 20  # characters encoded at a time by atomic_write


def atomic_write(path: Path, data: str | bytes | Iterable[str], *, mode: int = 0o600,
                 durable: bool = True) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory + rename.

    Readers see either the old or the new file, never a half-written one. The
    new file gets ``mode`` before any data lands in it. ``durable``: the data is on
    disk before the rename (fsync); ``False`` only for a file made again from the
    live state by every pass (a power cut may then leave it empty, which its reader
    takes as no file).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, bytes):
                fh.write(data)
            else:
                # encoded a piece at a time: a status file of 50,000 peers is ~10 MB,
                # and a whole second copy of it would count in the daemon's peak memory
                for text in [data] if isinstance(data, str) else data:
                    for start in range(0, len(text), WRITE_CHUNK):
                        fh.write(text[start:start + WRITE_CHUNK].encode())
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def locked(path: Path, *, timeout: float = 30.0) -> Iterator[None]:
    """Hold an exclusive lock for ``path`` (on a sibling lock file, so the
    atomic rename of ``path`` itself does not lose it)."""
    lp = lock_path(path)
    lp.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TemporaryError(f"{path} is locked by another fiovpn process; "
                                         "try again in a moment", code="locked") from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)


def read_text(path: Path) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def write_private(path: Path, data: str) -> None:
    atomic_write(path, data, mode=0o600)


def file_signature(path: Path) -> tuple[int, int, int, int] | None:
    """Inode, size, mtime and ctime of ``path`` (None when missing): changes with
    every write, including an atomic replace."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def readable_by_others(path: Path) -> int | None:
    """The permission bits of ``path`` when group or others may read or write it
    (a secret file should be 0600), else None (also when it does not exist)."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return None
    return mode if mode & 0o077 else None


def loose_secret_file(path: Path, what: str) -> str | None:
    """One sentence saying that ``path`` (holding ``what``) is open to others, or None."""
    mode = readable_by_others(path)
    if mode is None:
        return None
    return (f"{path} holds {what} but group or others may read it (mode {mode:04o}): "
            f"run `chmod 600 {path}`")
