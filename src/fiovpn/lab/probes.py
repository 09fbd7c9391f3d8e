"""Probes that run inside a role's namespace: ping, TCP connect, HTTP, and a
background ping stream for session-survival tests.

Root-namespace code never sends a packet itself: each probe is a short
program started behind the role's enter prefix.
"""

from __future__ import annotations

import json
import re
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fiovpn.lab.proc import Child, LabError

if TYPE_CHECKING:
    from fiovpn.lab.roles import Role

TCP_SCRIPT = """
import socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
except OSError as exc:
    print(exc)
    sys.exit(1)
"""

# The request (with the token) comes on stdin, never in argv.
HTTP_SCRIPT = """
import json, sys, urllib.error, urllib.request
req = json.load(sys.stdin)
data = None if req.get("body") is None else json.dumps(req["body"]).encode()
r = urllib.request.Request(req["url"], data=data, method=req["method"])
if req.get("token"):
    r.add_header("OSF-TOKEN", req["token"])
for key, value in (req.get("headers") or {}).items():
    r.add_header(key, value)
if data is not None:
    r.add_header("Content-Type", "application/json")
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(r, timeout=req["timeout"]) as resp:
        status, body = resp.status, resp.read().decode()
except urllib.error.HTTPError as exc:
    status, body = exc.code, exc.read().decode()
except OSError as exc:
    status, body = 0, str(exc)
json.dump({"status": status, "body": body}, sys.stdout)
"""


@dataclass(frozen=True)
class HttpReply:
    status: int  # 0: no answer (connection refused, timeout); ``body`` says why
    body: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise LabError(f"HTTP answer is not JSON (status {self.status}): "
                           f"{self.body[:200]!r}") from None


@dataclass(frozen=True)
class PingStats:
    sent: int
    received: int
    last_answered: int | None = None  # highest icmp_seq that got a reply

    @property
    def lost(self) -> int:
        """Echoes that went unanswered, not counting the one possibly still in
        flight when ping was stopped (it cannot be judged either way)."""
        if self.last_answered is None:
            return self.sent - self.received
        gaps = self.last_answered - self.received  # missing before the last reply
        tail = self.sent - self.last_answered  # sent after the last reply
        return gaps + max(0, tail - 1)


_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
_REPLY = re.compile(r"bytes from .*icmp_seq=(\d+)")


def ping_stats(output: str) -> PingStats | None:
    """Parse iputils ``ping`` output: the summary line and the replies' icmp_seq."""
    m = _SUMMARY.search(output)
    if m is None:
        return None
    seqs = {int(s) for s in _REPLY.findall(output)}
    return PingStats(int(m.group(1)), int(m.group(2)), max(seqs) if seqs else None)


class PingStream:
    """``ping`` running in the background inside a namespace; ``stop()`` says how
    many replies were lost. Use as a context manager."""

    def __init__(self, role: Role, ip: str, *, interval: float = 0.2) -> None:
        self.role = role
        self.ip = ip
        log = role.home / f"ping-{ip}-{id(self):x}.log"
        self.child: Child = role.spawn(["ping", "-n", "-i", f"{interval:g}", ip],
                                       name=f"ping {ip}", log=log)
        self._stats: PingStats | None = None

    def stop(self) -> PingStats:
        if self._stats is None:
            self.child.stop(signal.SIGINT)
            self.role.lab.untrack(self.child)
            text = self.child.log_tail(1_000_000)
            stats = ping_stats(text)
            if stats is None:
                raise LabError(f"ping to {self.ip} printed no summary: {text[-500:]!r}")
            self._stats = stats
        return self._stats

    def __enter__(self) -> PingStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
