"""``fiovpn exec``: one command on many devices at once.

Devices are chosen by name, by factory device group or tag (the API's own list
filters), or all VPN-enabled devices; every name is checked before anything runs.
At most ``parallel`` devices run at a time; each has its own deadline
(``timeout``, which also bounds the SSH connect), so a slow or dead device never
holds the others, and each device's output is kept apart.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from fiovpn.adapters.factory_api import FactoryApi, WireguardIp
from fiovpn.adapters.runner import Runner
from fiovpn.adapters.ssh import SshOptions
from fiovpn.core.names import validate_name
from fiovpn.core.timespec import check_timeout
from fiovpn.errors import BadInput, FiovpnError, NotFound
from fiovpn.services.device_access import DeviceTarget, decode_output, device_client
from fiovpn.services.remote import ssh_options
from fiovpn.settings import ClientSettings

DEFAULT_PARALLEL = 10
DEFAULT_TIMEOUT = 60.0
MAX_PARALLEL = 256


@dataclass(frozen=True)
class Selection:
    targets: list[DeviceTarget]
    skipped: list[str]  # chosen by group/tag/all but not on the VPN: named, not run
    how: str  # "names", "group G", "tag T", "all"


def vpn_rows(api: FactoryApi) -> dict[str, WireguardIp]:
    return {w.name: w for w in api.wireguard_ips()}


def select(api: FactoryApi, *, names: Sequence[str] = (), group: str | None = None,
           tag: str | None = None, all_devices: bool = False,
           list_names: Callable[..., list[str]] | None = None) -> Selection:
    """The devices to run on. Exactly one way of choosing; named devices must exist and
    be on the VPN (bad input otherwise, nothing runs); a group or tag with no
    VPN-enabled device is bad input too. ``list_names(group=, tag=)`` asks the factory
    for the names in a group/tag (its own filters)."""
    ways = sum([bool(names), group is not None, tag is not None, all_devices])
    if ways != 1:
        raise BadInput("choose the devices one way: NAME..., --group G, --tag T or --all",
                       code="bad_usage")
    for n in names:
        validate_name(n, what="device name")
    if group is not None:
        validate_name(group, what="device group")
    if tag is not None:
        validate_name(tag, what="tag")
    rows = vpn_rows(api)

    def on_vpn(name: str) -> bool:
        row = rows.get(name)
        return row is not None and row.enabled and row.ip is not None

    if names:
        unknown = [n for n in names if n not in rows]
        if unknown:
            raise NotFound(f"unknown device(s): {', '.join(unknown)}", code="unknown_device",
                           hint="see `fiovpn devices list`")
        off = [n for n in names if not on_vpn(n)]
        if off:
            raise BadInput(f"VPN is not enabled on: {', '.join(off)}", code="vpn_disabled",
                           hint=f"run `fiovpn devices enable-vpn {' '.join(off)}`")
        chosen, how = list(dict.fromkeys(names)), "names"
    elif all_devices:
        chosen, how = sorted(n for n in rows if on_vpn(n)), "all"
    else:
        if list_names is None:
            raise BadInput("this factory client cannot filter by group or tag",
                           code="bad_usage")
        chosen = sorted(list_names(group=group, tag=tag))
        how = f"group {group}" if group is not None else f"tag {tag}"
        if not chosen:
            if group is not None:
                raise NotFound(f"no device in {how} of factory {api.factory}",
                               code="unknown_group", hint="see `fiovpn devices list`")
            raise NotFound(f"no device in {how} of factory {api.factory}",
                           code="unknown_tag", hint="see `fiovpn devices list`")
    targets = []
    for n in chosen:
        row = rows.get(n)
        if row is not None and row.enabled and row.ip is not None:
            targets.append(DeviceTarget(n, row.ip, "factory"))
    skipped = [n for n in chosen if not on_vpn(n)]
    if not targets:
        raise BadInput(f"no device of {how} is on the VPN ({', '.join(skipped)})",
                       code="vpn_disabled", hint="run `fiovpn devices enable-vpn ...` first")
    return Selection(targets, skipped, how)


@dataclass(frozen=True)
class ExecResult:
    name: str
    vpn_ip: IPv4Address
    exit_code: int | None  # None: it did not run to the end (see error)
    stdout: bytes
    stderr: bytes
    duration_s: float
    error: str | None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.error is None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "vpn_ip": str(self.vpn_ip), "exit_code": self.exit_code,
                "stdout": decode_output(self.stdout)[0],
                "stderr": decode_output(self.stderr)[0],
                "duration_s": round(self.duration_s, 3), "error": self.error}


def check_limits(parallel: int, timeout: float) -> None:
    if not 1 <= parallel <= MAX_PARALLEL:
        raise BadInput(f"--parallel must be 1-{MAX_PARALLEL}, not {parallel}",
                       code="bad_parallel")
    check_timeout(timeout)


def run_many(settings: ClientSettings, runner: Runner, targets: Sequence[DeviceTarget],
             command: Sequence[str], *, parallel: int = DEFAULT_PARALLEL,
             timeout: float = DEFAULT_TIMEOUT, options: SshOptions | None = None,
             on_start: Callable[[DeviceTarget], None] | None = None,
             on_done: Callable[[ExecResult], None] | None = None,
             clock: Callable[[], float] = time.monotonic) -> list[ExecResult]:
    """Run ``command`` on every target, ``parallel`` at a time, each within ``timeout``
    seconds (connect included); results in the targets' order."""
    if not command:
        raise BadInput("no command given: fiovpn exec ... -- CMD", code="bad_command")
    check_limits(parallel, timeout)
    base = options or ssh_options(settings)
    opts = dataclasses.replace(base, connect_timeout=max(1, min(base.connect_timeout,
                                                                int(timeout))))

    def one(target: DeviceTarget) -> ExecResult:
        if on_start is not None:
            on_start(target)
        start = clock()
        try:
            got = device_client(settings, runner, target, opts).capture(command,
                                                                        timeout=timeout)
            result = ExecResult(target.name, target.ip, got.returncode, got.stdout,
                                got.stderr, clock() - start, None)
        except FiovpnError as exc:
            result = ExecResult(target.name, target.ip, None, b"", b"", clock() - start,
                                str(exc))
        if on_done is not None:
            on_done(result)
        return result

    with ThreadPoolExecutor(max_workers=min(parallel, max(1, len(targets))),
                            thread_name_prefix="fiovpn-exec") as pool:
        return list(pool.map(one, targets))
