"""The factory's block in the hosts file: device names, written only when they
changed (the rest of the file is not ours)."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterable
from pathlib import Path

from fiovpn.adapters.fs import atomic_write
from fiovpn.core.hosts import update_hosts
from fiovpn.core.names import validate_name
from fiovpn.core.peers import Peer
from fiovpn.errors import BadInput
from fiovpn.services.server.context import ServerContext

log = logging.getLogger("fiovpn.server")


def _file_id(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=1 << 17)
def _host_name(name: str) -> str | None:
    try:
        return validate_name(name)
    except BadInput:
        return None


def update_hosts_file(ctx: ServerContext, path: Path, factory: str, peers: Iterable[Peer]
                  ) -> bool:
    entries = []
    for p in peers:
        if p.kind == "device" and p.name:
            name = _host_name(p.name)
            if name is not None:
                entries.append((p.ip, name))
    memo = (factory, frozenset(entries), _file_id(path))
    if memo == ctx.last_hosts:
        return False  # same devices, file untouched since we last looked
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raw = b""
    # The rest of the file is not ours: bytes that are not UTF-8 (a latin-1
    # comment) pass through unchanged instead of stopping the daemon.
    new = update_hosts(raw.decode("utf-8", "surrogateescape"), factory, entries)
    if new is None:
        ctx.last_hosts = memo
        return False
    mode = 0o644
    with contextlib.suppress(FileNotFoundError):
        mode = path.stat().st_mode & 0o777
    atomic_write(path, new.encode("utf-8", "surrogateescape"), mode=mode)
    ctx.last_hosts = (factory, frozenset(entries), _file_id(path))
    log.info("hosts block for factory %s updated in %s (%d devices)", factory, path,
             len(entries))
    return True
