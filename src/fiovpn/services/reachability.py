"""Waiting until devices answer through the tunnel (``devices enable-vpn --wait``).

A device "answers" when its sshd greets us over its VPN address: a TCP connect to
port 22 that completes and sends an ``SSH-`` banner. A refused or unreachable
connection does not count (a firewall's reject is not the device). Each device
has its own clock, started when its VPN was enabled; all are polled at once.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address

from fiovpn.services.device_access import DEVICE_SSH_PORT

Probe = Callable[[IPv4Address, float], bool]
POLL_INTERVAL = 0.5


def ssh_answers(ip: IPv4Address, timeout: float, port: int = DEVICE_SSH_PORT) -> bool:
    """One probe: does sshd on ``ip`` greet us within ``timeout`` seconds?"""
    try:
        with socket.create_connection((str(ip), port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class Reached:
    name: str
    ip: IPv4Address
    after_s: float | None  # None: it did not answer within the timeout


def wait_reachable(devices: Sequence[tuple[str, IPv4Address, float]], *, timeout: float,
                   probe: Probe = ssh_answers,
                   on_done: Callable[[Reached], None] | None = None,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> list[Reached]:
    """For each ``(name, ip, started_at)`` (``clock()`` time its VPN was enabled), poll
    until it answers or ``timeout`` seconds after its start; results in input order."""

    def one(item: tuple[str, IPv4Address, float]) -> Reached:
        name, ip, started = item
        deadline = started + timeout
        result = Reached(name, ip, None)
        while True:
            left = deadline - clock()
            if left <= 0:
                break
            if probe(ip, min(2.0, max(0.2, left))):
                result = Reached(name, ip, round(clock() - started, 2))
                break
            sleep(min(POLL_INTERVAL, max(0.0, deadline - clock())))
        if on_done is not None:
            on_done(result)
        return result

    if not devices:
        return []
    with ThreadPoolExecutor(max_workers=min(64, len(devices)),
                            thread_name_prefix="fiovpn-wait") as pool:
        return list(pool.map(one, devices))
