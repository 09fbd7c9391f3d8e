"""The factory's block in the hosts file: device names, written only when they
changed (the rest of the file is not ours)."""

from __future__ import annotations

import contextlib
import logging
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


_HOST_NAMES: dict[str, str | None] = {}  # device name -> host name (None: not valid)


def _host_name(name: str) -> str | None:
    """``validate_name``, remembered (a plain dict: an lru_cache node per name
    costs twice the memory at 50,000 devices)."""
    try:
        return _HOST_NAMES[name]
    except KeyError:
        pass
    try:
        host: str | None = validate_name(name)
    except BadInput:
        host = None
    if len(_HOST_NAMES) >= 1 << 17:
        _HOST_NAMES.clear()
    _HOST_NAMES[name] = host
    return host


def update_hosts_file(ctx: ServerContext, path: Path, factory: str, peers: list[Peer]
                      ) -> bool:
    """Bring the factory's block in ``path`` to the devices among ``peers``; True
    when the file was written. ``peers`` is the pass's list: the same list object as
    when the block was last made (the reconcile keeps the last pass's list while the
    peers are equal) and the file untouched since means nothing to do."""
    file_id = _file_id(path)
    last = ctx.last_hosts
    if (last is not None and peers is ctx.last_hosts_peers and last[0] == factory
            and last[2] == file_id):
        return False  # the same peers as when the block was made, file untouched since
    entries = []
    for p in peers:
        if p.kind == "device" and p.name:
            name = _host_name(p.name)
            if name is not None:
                entries.append((p.ip, name))
    # Other peers: the block is rendered and compared with the file (no memo of
    # 50,000 (ip, name) pairs kept for the rare change that leaves them alone).
    memo = (factory, None, file_id)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raw = b""
    # The rest of the file is not ours: bytes that are not UTF-8 (a latin-1
    # comment) pass through unchanged instead of stopping the daemon.
    new = update_hosts(raw.decode("utf-8", "surrogateescape"), factory, entries)
    if new is None:
        ctx.last_hosts, ctx.last_hosts_peers = memo, peers
        return False
    mode = 0o644
    with contextlib.suppress(FileNotFoundError):
        mode = path.stat().st_mode & 0o777
    atomic_write(path, new.encode("utf-8", "surrogateescape"), mode=mode)
    ctx.last_hosts, ctx.last_hosts_peers = (memo[0], memo[1], _file_id(path)), peers
    log.info("hosts block for factory %s updated in %s (%d devices)", factory, path,
             len(entries))
    return True
