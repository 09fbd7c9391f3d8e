"""The status document's ``peers``: one pass's peers (in status order) joined with
that pass's ``wg show dump``, as rows built when read.

At 50,000 peers a dict per peer kept from pass to pass was a quarter of the
daemon's memory (~27 MB); the ``Peer`` and ``PeerDump`` objects the rows are
made of are held anyway. Every read gives new dicts: what a reader does with
them (the web page, a scrape) never reaches the next pass or another reader.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, overload

from fiovpn.core.peers import Peer, ip_text
from fiovpn.core.wgdump import PeerDump, WgDump

# One metric sample source a peer: kind, name, ip, latest handshake, rx, tx.
Sample = tuple[str, "str | None", str, int, int, int]
CHUNK = 2000  # rows per piece of JSON text


def json_text(value: str | None) -> str:
    """``json.dumps(value)``, without the call for plain ASCII text."""
    if value is None:
        return "null"
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return json.dumps(value)


def _row(p: Peer, d: PeerDump | None) -> dict[str, Any]:
    if d is None:
        return {"kind": p.kind, "name": p.name, "ip": ip_text(p.ip),
                "public_key": p.public_key.text, "latest_handshake": None, "rx": 0, "tx": 0,
                "endpoint": None}
    return {"kind": p.kind, "name": p.name, "ip": ip_text(p.ip),
            "public_key": p.public_key.text, "latest_handshake": d.latest_handshake or None,
            "rx": d.rx, "tx": d.tx, "endpoint": d.endpoint}


class PeerRows(Sequence[dict[str, Any]]):
    """``[{"kind","name","ip","public_key","latest_handshake","rx","tx","endpoint"}]``
    of ``peers`` against ``dump``, built on each read (immutable)."""

    __slots__ = ("_dumps", "_peers")

    def __init__(self, peers: Sequence[Peer], dump: WgDump | None) -> None:
        self._peers = peers
        live = dump.by_text() if dump else {}
        self._dumps: list[PeerDump | None] = [live.get(p.public_key.text) for p in peers]

    def __len__(self) -> int:
        return len(self._peers)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [_row(p, d) for p, d in zip(self._peers[index], self._dumps[index],
                                                strict=True)]
        return _row(self._peers[index], self._dumps[index])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for p, d in zip(self._peers, self._dumps, strict=True):
            yield _row(p, d)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PeerRows):
            return list(self) == list(other)
        if isinstance(other, list | tuple):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PeerRows({len(self)} peers)"

    def samples(self) -> Iterator[Sample]:
        """``(kind, name, ip, latest_handshake, rx, tx)`` a peer, without a dict each
        (what a scrape needs)."""
        for p, d in zip(self._peers, self._dumps, strict=True):
            if d is None:
                yield p.kind, p.name, ip_text(p.ip), 0, 0, 0
            else:
                yield p.kind, p.name, ip_text(p.ip), d.latest_handshake, d.rx, d.tx

    def client_ips(self) -> set[str]:
        return {ip_text(p.ip) for p in self._peers if p.kind == "client"}

    def json_chunks(self) -> Iterator[str]:
        """The rows as a JSON array (what ``json.dumps(list(self))`` gives, compact),
        a few thousand rows a piece."""
        yield "["
        peers, dumps = self._peers, self._dumps
        for start in range(0, len(peers), CHUNK):
            part: list[str] = []
            add = part.append
            for p, d in zip(peers[start:start + CHUNK], dumps[start:start + CHUNK],
                            strict=True):
                head = (f'{{"kind":"{p.kind}","name":{json_text(p.name)},'
                        f'"ip":"{ip_text(p.ip)}","public_key":"{p.public_key.text}",')
                if d is None:
                    add(head + '"latest_handshake":null,"rx":0,"tx":0,"endpoint":null}')
                else:
                    add(f'{head}"latest_handshake":{d.latest_handshake or "null"},'
                        f'"rx":{d.rx},"tx":{d.tx},"endpoint":{json_text(d.endpoint)}}}')
            yield ("," if start else "") + ",".join(part)
        yield "]"
