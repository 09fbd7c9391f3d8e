"""A fake LmP device behind ``ssh`` for unit tests of the d2d service: a file system
(keyfile, dispatcher hook), the live ``factory-vpn0`` peers, ``wg``, ``nmcli load``
(an active connection's profile is re-read, nothing live changes) and ``sudo -n``
that may refuse. The lab's device is the faithful one; this is its shape only."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from fiovpn.adapters.runner import Completed, FakeRunner
from fiovpn.core import nmconnection

KEYFILE = "/etc/NetworkManager/system-connections/factory-vpn0.nmconnection"
HOOK = "/etc/NetworkManager/dispatcher.d/90-fiovpn-d2d"
SERVER_PUB = "+ROwjfXn/J3nfDA0WDG9zpqkWx9hwz5vhoUhVO3XTBU="


class FakeLmpDevice:
    def __init__(self, keyfile: str, *, sudo: bool = True) -> None:
        self.files: dict[str, str] = {KEYFILE: keyfile}
        self.modes: dict[str, str] = {}
        self.live: dict[str, list[str]] | None = {SERVER_PUB: ["10.42.42.1/32"]}
        self.commands: list[list[str]] = []
        self.sudo = sudo  # False: the user may not run anything as root

    def runner(self) -> FakeRunner:
        r = FakeRunner()
        r.on("ssh", reply=self.handle)
        return r

    def attach(self, runner: FakeRunner) -> None:
        runner.on("ssh", reply=self.handle)

    def written(self) -> list[list[str]]:
        """Commands that change something on the device."""
        reads = (["cat"], ["wg", "show"])
        return [c for c in self.commands if not any(c[:len(r)] == r for r in reads)]

    def handle(self, argv: Sequence[str], stdin: str | None) -> Completed:
        words = shlex.split(argv[-1])
        if words[:3] == ["sudo", "-n", "--"]:
            if not self.sudo:
                return Completed(tuple(argv), 1, "", "sudo: a password is required\n")
            words = words[3:]
        self.commands.append(words)
        out, rc, err = "", 0, ""
        if words[0] == "cat":
            if words[1] in self.files:
                out = self.files[words[1]]
            else:
                rc, err = 1, f"cat: {words[1]}: No such file or directory"
        elif words[0] == "install":
            mode = words[words.index("-m") + 1]
            self.files[words[-1]] = stdin or ""
            self.modes[words[-1]] = mode
        elif words[0] == "mv":
            self.files[words[3]] = self.files.pop(words[2])
            self.modes[words[3]] = self.modes.pop(words[2], "")
        elif words[:2] == ["rm", "-f"]:
            self.files.pop(words[2], None)
        elif words[:3] == ["nmcli", "connection", "load"]:
            nmconnection.parse(self.files[words[3]])  # re-read; active: nothing live
        elif words[:4] == ["wg", "show", "factory-vpn0", "allowed-ips"]:
            if self.live is None:
                rc, err = 1, "Unable to access interface: No such device"
            else:
                out = "".join(f"{p}\t{' '.join(ips) or '(none)'}\n"
                              for p, ips in self.live.items())
        elif words[:3] == ["wg", "set", "factory-vpn0"] and words[3] == "peer":
            assert self.live is not None
            self.live[words[4]] = words[6].split(",")
        elif words[:2] == ["nmcli", "connection"] and words[2] == "up":
            raise AssertionError("`nmcli connection up` would cut the SSH session")
        else:
            rc, err = 127, f"{words[0]}: not found"
        return Completed(tuple(argv), rc, out, err)
