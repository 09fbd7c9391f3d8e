"""WireGuard through ``wg`` and ``ip`` (kernel module, else ``wireguard-go``).

Every change is a delta through ``wg set``: the interface is never taken down
and peers that did not change keep their sessions (no ``wg setconf``, no
``wg-quick down/up``). The private key reaches ``wg`` as a 0600 file path,
never in argv.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Literal

from fiovpn.adapters.runner import CommandFailed, Completed, Runner
from fiovpn.core.keys import Key
from fiovpn.core.plan import PeerChange
from fiovpn.core.wgdump import WgDump, parse_lines
from fiovpn.errors import PermanentError

# Peers per `wg set` invocation: keeps argv far below ARG_MAX while a
# 5,000-peer sync still takes only a handful of calls.
BATCH = 500


@contextlib.contextmanager
def private_key_file(key: Key) -> Iterator[Path]:
    """A 0600 temp file holding ``key``, removed afterwards."""
    fd, name = tempfile.mkstemp(prefix="fiovpn-key-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{key}\n")
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


@dataclass
class WireGuard:
    """Drives one host's (or namespace's) WireGuard through an injected ``Runner``."""

    runner: Runner
    wireguard_go: str = "wireguard-go"
    # The last dump read, by a digest of its lines: an idle interface (no handshake,
    # no byte moved) gives the same lines again, and the same WgDump object is
    # returned without parsing 50,000 lines (nor keeping the text).
    _last: tuple[str, tuple[int, int, int], WgDump] | None = field(
        default=None, repr=False, compare=False)

    def show_dump(self, iface: str) -> WgDump:
        out = self.runner.run(["wg", "show", iface, "dump"], timeout=30.0).stdout
        return self.parse_dump(iface, out)

    def dump_text(self, iface: str) -> str:
        """The text of ``wg show IFACE dump`` (only the process: ``parse_dump``
        turns it into a ``WgDump``, so a caller may read it in another thread).

        ``wg`` writes into a temp file, not a pipe: a pipe holds 64 KiB, and a
        waiting thread that must take the GIL back for every chunk of 8 MB would
        hold ``wg`` up while the caller's thread computes."""
        argv = ["wg", "show", iface, "dump"]
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            code = self.runner.call(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    timeout=30.0)
            out.seek(0)
            text = out.read().decode()
            if code != 0:
                err.seek(0)
                raise CommandFailed(Completed(tuple(argv), code, text,
                                              err.read().decode(errors="replace")))
        return text

    def parse_dump(self, iface: str, out: str) -> WgDump:
        """``out`` (from ``dump_text``) parsed; the last dump's object when the
        interface has not changed since."""
        # wireguard-go lists peers in a different order each time (a Go map): the
        # digest does not depend on the order (the count, sum and xor of the lines'
        # hashes: this process's own, randomly keyed string hash)
        lines = out.split("\n")
        hashes = list(map(hash, lines))
        digest = (len(lines), sum(hashes) & 0xFFFF_FFFF_FFFF_FFFF,
                  functools.reduce(operator.xor, hashes, 0))
        del hashes
        last = self._last
        if last is not None and last[0] == iface and last[1] == digest:
            return last[2]
        dump = parse_lines(lines)
        self._last = (iface, digest, dump)
        return dump

    def interface_exists(self, iface: str) -> bool:
        return self.runner.run(["ip", "link", "show", "dev", iface], check=False).ok

    def create_interface(self, iface: str) -> Literal["kernel", "wireguard-go"]:
        """Create ``iface``: kernel WireGuard when available, else ``wireguard-go``.

        ``wireguard-go IFACE`` (without ``-f``) daemonizes, and ``setsid`` puts it
        in its own session: a signal to the fiovpn daemon's process group (Ctrl-C,
        a supervisor stopping it) leaves the interface and every tunnel up. Under
        systemd the unit also needs ``KillMode=process``.
        """
        kernel = self.runner.run(["ip", "link", "add", "dev", iface, "type", "wireguard"],
                                 check=False)
        if kernel.ok:
            return "kernel"
        argv = [self.wireguard_go, iface]
        if shutil.which("setsid"):
            argv = ["setsid", *argv]
        try:
            self.runner.run(argv, timeout=30.0)
        except CommandFailed as exc:
            raise PermanentError(
                f"cannot create WireGuard interface {iface}: no kernel WireGuard "
                f"({kernel.stderr.strip() or 'ip link add failed'}) and wireguard-go failed: "
                f"{exc.message}", code="interface_failed",
                hint="install wireguard-go (apt-get install wireguard-go) or load the "
                     "wireguard kernel module") from None
        if not self.interface_exists(iface):
            raise PermanentError(f"wireguard-go started but interface {iface} did not appear",
                                 code="interface_failed")
        return "wireguard-go"

    def configure(self, iface: str, *, private_key: Key, port: int, address: IPv4Address,
                  prefix: int) -> None:
        """Set key and port, the server address, and bring the link up (idempotent)."""
        with private_key_file(private_key) as path:
            self.runner.run(["wg", "set", iface, "private-key", str(path),
                             "listen-port", str(port)])
        # one `ip` for both (each process is ~3 ms of a `--once` pass)
        self.runner.run(["ip", "-batch", "-"],
                        input=f"address replace {address}/{prefix} dev {iface}\n"
                              f"link set dev {iface} up\n")

    def apply(self, iface: str, changes: Sequence[PeerChange]) -> None:
        """Apply the delta with as few ``wg set`` calls as possible, in plan order."""
        groups: list[list[str]] = []
        for change in changes:
            if change.action == "remove":
                groups.append(["peer", str(change.public_key), "remove"])
            else:
                assert change.new is not None
                groups.append(["peer", str(change.public_key), "allowed-ips",
                               change.new.allowed_ip])
        for start in range(0, len(groups), BATCH):
            argv = ["wg", "set", iface]
            for group in groups[start:start + BATCH]:
                argv += group
            self.runner.run(argv, timeout=120.0)

    def set_peer(self, iface: str, key: Key, ip: IPv4Address) -> None:
        self.runner.run(["wg", "set", iface, "peer", str(key), "allowed-ips", f"{ip}/32"])

    def remove_peer(self, iface: str, key: Key) -> None:
        self.runner.run(["wg", "set", iface, "peer", str(key), "remove"])
