"""``fiovpn cp`` (scp) and ``fiovpn forward`` (ssh -L) to a device by name.

Both use the options ``fiovpn ssh`` uses (keys only, host keys checked against the
same known_hosts). Every argument is checked before anything runs: a bad
``DEVICE:PATH`` or port spec is bad input (exit 2) and nothing is started.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

from fiovpn.adapters.runner import Runner, Stdio
from fiovpn.adapters.ssh import SshClient
from fiovpn.errors import BadInput, PermanentError
from fiovpn.services.client_config import ApiFactory
from fiovpn.services.device_access import DeviceTarget, device_client, resolve_device
from fiovpn.services.remote import ssh_options
from fiovpn.settings import ClientSettings

_DEVICE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")


# --- cp -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Location:
    """One operand of ``cp``: a local path, or ``DEVICE:PATH`` (as scp reads them)."""

    path: str
    device: str | None = None

    @classmethod
    def parse(cls, spec: str) -> Location:
        if not spec:
            raise BadInput("an empty path was given", code="bad_path")
        head, colon, tail = spec.partition(":")
        # As scp: a colon before any slash makes it remote; `./a:b` or `/x:y` is local.
        if colon and "/" not in head and head:
            if not _DEVICE_PART.fullmatch(head):
                raise BadInput(f"invalid device in {spec!r}: expected DEVICE:PATH",
                               code="bad_path")
            return cls(tail or ".", head)
        if colon and not head:
            raise BadInput(f"{spec!r}: a device name goes before the colon (DEVICE:PATH)",
                           code="bad_path")
        return cls(spec)


@dataclass(frozen=True, slots=True)
class CopyPlan:
    target: DeviceTarget
    sources: tuple[str, ...]  # as scp gets them (`user@ip:path` for remote ones)
    destination: str
    upload: bool


def plan_copy(settings: ClientSettings, sources: Sequence[str], destination: str, *,
              api: ApiFactory | None = None) -> CopyPlan:
    """Check the operands: exactly one side is on one device (by name or VPN IP)."""
    if not sources:
        raise BadInput("give at least one source and a destination: fiovpn cp SRC... DST",
                       code="bad_usage")
    srcs = [Location.parse(s) for s in sources]
    dst = Location.parse(destination)
    remote_srcs = {s.device for s in srcs if s.device is not None}
    if dst.device is not None:
        if remote_srcs:
            raise BadInput("both sides are on a device: one side of cp must be local",
                           code="bad_copy")
        device, upload = dst.device, True
    elif remote_srcs:
        if len(remote_srcs) > 1 or any(s.device is None for s in srcs):
            raise BadInput("all sources must be on the same device (or all local)",
                           code="bad_copy")
        device, upload = next(iter(remote_srcs)), False
    else:
        raise BadInput("neither side is on a device: write one side as DEVICE:PATH, e.g. "
                       "fiovpn cp ./app.conf device1:/etc/app.conf", code="bad_copy")
    target = resolve_device(settings, device, api=api)
    user = settings.user

    def scp_form(loc: Location) -> str:
        return f"{user}@{target.ip}:{loc.path}" if loc.device is not None else loc.path

    return CopyPlan(target, tuple(scp_form(s) for s in srcs), scp_form(dst), upload)


def scp_argv(ssh: SshClient, plan: CopyPlan, *, recursive: bool) -> list[str]:
    """scp with fiovpn's ssh options (its own flags: ``-P`` port, ``-r``)."""
    o = ssh.options
    argv = ["scp", "-q", *(["-F", str(o.config_file)] if o.config_file is not None else []),
            "-P", str(ssh.target.port), *ssh.option_args()]
    if recursive:
        argv.append("-r")
    return [*argv, "--", *plan.sources, plan.destination]


def copy(settings: ClientSettings, runner: Runner, sources: Sequence[str], destination: str,
         *, recursive: bool = False, api: ApiFactory | None = None,
         timeout: float | None = None, stdout: Stdio = None, stderr: Stdio = None
         ) -> dict[str, Any]:
    """Copy with scp; scp's own messages go to ``stderr`` (ours by default)."""
    plan = plan_copy(settings, sources, destination, api=api)
    ssh = device_client(settings, runner, plan.target)
    code = runner.call(scp_argv(ssh, plan, recursive=recursive), stdin=subprocess.DEVNULL,
                       stdout=stdout, stderr=stderr, timeout=timeout)
    if code != 0:
        raise PermanentError(f"copy {'to' if plan.upload else 'from'} {plan.target.name} "
                             f"failed (scp exit code {code}; its message is above)",
                             code="copy_failed",
                             hint="check the paths (a directory needs -r) and "
                                  "`fiovpn ssh DEVICE -- true`")
    return {"device": plan.target.name, "vpn_ip": str(plan.target.ip),
            "direction": "upload" if plan.upload else "download",
            "sources": list(sources), "destination": destination, "recursive": recursive}


# --- forward --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Forward:
    bind: str | None
    port: int
    host: str
    host_port: int

    @classmethod
    def parse(cls, spec: str) -> Forward:
        """``[BIND:]PORT:HOST:HOSTPORT`` as ``ssh -L``; an IPv6 host in brackets."""
        parts = _split(spec)
        if len(parts) not in (3, 4) or not all(parts):
            raise _bad_forward(spec)
        bind = parts[0] if len(parts) == 4 else None
        port_s, host, host_port_s = parts[-3:]
        host = host.strip("[]")
        if bind is not None:
            bind = bind.strip("[]")
            if bind not in ("localhost", "*"):
                try:
                    ip_address(bind)
                except ValueError:
                    raise _bad_forward(spec, f"bind address {bind!r}") from None
        try:
            ip_address(host)
        except ValueError:
            if not _HOST.fullmatch(host):
                raise _bad_forward(spec, f"host {host!r}") from None
        return cls(bind, _port(port_s, spec), host, _port(host_port_s, spec))

    def __str__(self) -> str:
        def fmt(h: str) -> str:
            return f"[{h}]" if ":" in h else h
        head = f"{fmt(self.bind)}:" if self.bind is not None else ""
        return f"{head}{self.port}:{fmt(self.host)}:{self.host_port}"

    def local(self) -> str:
        return f"{self.bind or '127.0.0.1'}:{self.port}"


def _split(spec: str) -> list[str]:
    """``spec`` split at the colons outside ``[...]``."""
    parts, current, bracket = [], "", False
    for ch in spec:
        if ch == ":" and not bracket:
            parts.append(current)
            current = ""
            continue
        bracket = (bracket or ch == "[") and ch != "]"
        current += ch
    return [*parts, current]


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise _bad_forward(spec, f"port {text!r} (expected 1-65535)")
    return int(text)


def _bad_forward(spec: str, what: str | None = None) -> BadInput:
    detail = f": bad {what}" if what else ""
    return BadInput(f"invalid forward {spec!r}{detail}; expected [BIND:]PORT:HOST:HOSTPORT, "
                    "e.g. 8080:127.0.0.1:80 (the device's own port 80)", code="bad_forward")


def forward_client(settings: ClientSettings, runner: Runner, device: str, spec: Forward, *,
                   api: ApiFactory | None = None) -> tuple[DeviceTarget, SshClient]:
    """The device and an ssh client that shares no connection (the forward lives in
    its own ssh process, which ends with it)."""
    target = resolve_device(settings, device, api=api)
    return target, device_client(settings, runner, target, ssh_options(settings, share=False))


def forward(ssh: SshClient, spec: Forward, *, stdin: Stdio = subprocess.DEVNULL) -> int:
    """``ssh -N -L SPEC``: runs until interrupted (or ssh ends); ssh's exit code."""
    return ssh.stream([], stdin=stdin, options=["-N", "-o", "ExitOnForwardFailure=yes",
                                                "-L", str(spec)])

