"""Reaching devices with the tools engineers already use: ``ssh-config``, ``cp``,
``forward`` (and ``exec``). ``fiovpn ssh`` itself lives in cli/client.py.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fiovpn.cli.client import config_option, device_ssh_options, runner, settings_from
from fiovpn.cli.output import Result, command, json_mode, progress
from fiovpn.cli.output import stderr as err_console
from fiovpn.core.timespec import check_timeout
from fiovpn.errors import BadInput, TemporaryError
from fiovpn.services import client_config, fanout, ssh_config, transfer
from fiovpn.services.journal import record_device_call

PATH = click.Path(dir_okay=False, path_type=Path)


def register(cli: click.Group) -> None:
    for cmd in (ssh_config_cmd, cp_cmd, forward_cmd, exec_cmd):
        cli.add_command(cmd)


@click.command("ssh-config")
@command
@click.option("--output", type=PATH, default=None,
              help="Where to write the fragment (default ~/.config/fiovpn/ssh_config).")
@config_option
@device_ssh_options
def ssh_config_cmd(output: Path | None, config: Path | None, user: str | None,
                   identity_file: Path | None, known_hosts: Path | None,
                   factory: str | None, api_url: str | None,
                   api_token_file: Path | None) -> Result:
    """Write an OpenSSH config fragment with a Host block per VPN-enabled device, so
    plain ssh, scp, rsync, VS Code Remote-SSH and ansible reach devices by name.

    Each block: HostName (the VPN IP), User, IdentityFile, UserKnownHostsFile and
    StrictHostKeyChecking yes -- the options `fiovpn ssh` uses, so host keys are
    checked against the same known_hosts. The file is 0600; run this again after
    devices change. ~/.ssh/config is never edited: add the printed Include line at
    its top yourself.

    \b
    Examples:
      fiovpn ssh-config
      ssh -F ~/.config/fiovpn/ssh_config device1
      rsync -a -e 'ssh -F ~/.config/fiovpn/ssh_config' ./build/ device1:/tmp/build/
    """
    settings = settings_from(config=config, user=user, identity_file=identity_file,
                             known_hosts=known_hosts, factory=factory, api_url=api_url,
                             api_token_file=api_token_file)
    rows = client_config.default_api(settings)().wireguard_ips()
    res = ssh_config.write_ssh_config(settings, rows, output=output)
    names = ", ".join(h.name for h in res.hosts) or "(no VPN-enabled device)"
    human = (f"{'Wrote' if res.changed else 'Unchanged:'} {res.path} (0600): "
             f"{len(res.hosts)} host(s): {names}\n"
             f"Add this line at the top of ~/.ssh/config (before any Host block):\n"
             f"  {res.include}")
    return Result(res.to_json(), human)


@click.command("cp")
@command
@click.option("-r", "--recursive", is_flag=True, help="Copy directories recursively.")
@click.option("--timeout", type=float, default=None,
              help="Stop after this many seconds (exit 1). Default: no limit.")
@config_option
@device_ssh_options
@click.argument("paths", nargs=-1, required=True)
def cp_cmd(recursive: bool, timeout: float | None, config: Path | None, user: str | None,
           identity_file: Path | None, known_hosts: Path | None, factory: str | None,
           api_url: str | None, api_token_file: Path | None,
           paths: tuple[str, ...]) -> Result:
    """Copy files to or from a device, as scp: SRC... DST where one side is
    DEVICE:PATH (device name or VPN IP). Host keys are checked.

    \b
    Examples:
      fiovpn cp ./app.conf device1:/etc/app.conf
      fiovpn cp device1:/var/log/messages ./
      fiovpn cp -r ./build device1:/tmp/
    """
    if len(paths) < 2:
        raise BadInput("give at least one source and a destination: fiovpn cp SRC... DST",
                       code="bad_usage")
    check_timeout(timeout)
    settings = settings_from(config=config, user=user, identity_file=identity_file,
                             known_hosts=known_hosts, factory=factory, api_url=api_url,
                             api_token_file=api_token_file)
    devices = {loc.device for loc in map(transfer.Location.parse, paths) if loc.device}
    for name in sorted(devices):
        record_device_call(settings.journal, action="cp", device=name, via="cli")
    data = transfer.copy(settings, runner(), paths[:-1], paths[-1], recursive=recursive,
                         timeout=timeout)
    where = "to" if data["direction"] == "upload" else "from"
    return Result(data, f"Copied {where} {data['device']} ({data['vpn_ip']}).")


@click.command("forward")
@command
@config_option
@device_ssh_options
@click.argument("device")
@click.argument("spec", metavar="[BIND:]PORT:HOST:HOSTPORT")
def forward_cmd(config: Path | None, user: str | None, identity_file: Path | None,
                known_hosts: Path | None, factory: str | None, api_url: str | None,
                api_token_file: Path | None, device: str, spec: str) -> Result:
    """Forward a local port to HOST:HOSTPORT as seen from DEVICE (ssh -L): a service
    bound to the device's localhost, or a host on its LAN. Runs until interrupted
    (Ctrl-C); BIND defaults to 127.0.0.1.

    \b
    Examples:
      fiovpn forward device1 8080:127.0.0.1:80        (the device's own web UI)
      fiovpn forward device1 5433:192.168.1.20:5432   (a database on its LAN)
    """
    fwd = transfer.Forward.parse(spec)  # before anything runs
    settings = settings_from(config=config, user=user, identity_file=identity_file,
                             known_hosts=known_hosts, factory=factory, api_url=api_url,
                             api_token_file=api_token_file)
    record_device_call(settings.journal, action="forward", device=device, via="cli",
                       detail={"forward": str(fwd)})
    target, ssh = transfer.forward_client(settings, runner(), device, fwd)
    progress(f"forwarding {fwd.local()} -> {fwd.host}:{fwd.host_port} through "
             f"{target.name} ({target.ip}); Ctrl-C stops")

    def stop(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        code = transfer.forward(ssh, fwd)
    except KeyboardInterrupt:
        sys.stderr.write("forward stopped\n")
        return Result({"device": target.name, "vpn_ip": str(target.ip),
                       "forward": str(fwd), "stopped": True}, None)
    finally:
        signal.signal(signal.SIGTERM, previous)
    raise TemporaryError(f"the forward through {target.name} ended (ssh exit code {code})",
                         code="forward_ended",
                         hint=f"is port {fwd.local()} free here, and does {fwd.host}:"
                              f"{fwd.host_port} answer on the device?")


# --- exec -----------------------------------------------------------------------------------


class _AfterDashDash(click.Command):
    """Keeps what follows ``--`` for the remote command (click would drop the ``--`` and
    mix those words with the device names)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            i = args.index("--")
            ctx.meta["fiovpn.exec.command"] = args[i + 1:]
            args = args[:i]
        return super().parse_args(ctx, args)


@contextmanager
def live_progress(total: int, what: str, *, enabled: bool) -> Iterator[Any]:
    """A rich progress line on stderr when it is a terminal (and not --json); else
    nothing. Yields ``advance(ok: bool)``."""
    counts = {"failed": 0}
    if not enabled:
        yield lambda ok: None
        return
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("[red]{task.fields[failed]} failed"), TimeElapsedColumn(),
                   console=err_console, transient=True)
    with bar:
        task = bar.add_task(what, total=total, failed=0)

        def advance(ok: bool) -> None:
            if not ok:
                counts["failed"] += 1
            bar.update(task, advance=1, failed=counts["failed"])
        yield advance


def _write_block(r: fanout.ExecResult) -> None:
    state = (f"exit {r.exit_code}" if r.error is None else f"error: {r.error}")
    sys.stdout.write(f"── {r.name} ({r.vpn_ip}) {state}, {r.duration_s:.1f} s\n")
    sys.stdout.flush()
    sys.stdout.buffer.write(r.stdout)
    if r.stdout and not r.stdout.endswith(b"\n"):
        sys.stdout.buffer.write(b"\n")
    sys.stdout.buffer.flush()
    if r.stderr:
        sys.stderr.buffer.write(r.stderr)
        sys.stderr.buffer.flush()


def exec_table(results: list[fanout.ExecResult], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("NAME", "VPN IP", "EXIT", "TIME", "RESULT"):
        table.add_column(col, no_wrap=col in ("NAME", "VPN IP", "EXIT"))
    for r in results:
        first = (r.stdout.decode("utf-8", "replace").strip().splitlines() or [""])[0]
        table.add_row(r.name, str(r.vpn_ip), "-" if r.exit_code is None else str(r.exit_code),
                      f"{r.duration_s:.1f}s",
                      f"[red]{r.error}[/]" if r.error else first[:60])
    return table


@click.command("exec", cls=_AfterDashDash)
@command
@click.option("--group", default=None, help="Every device of this factory device group.")
@click.option("--tag", default=None, help="Every device with this tag.")
@click.option("--all", "all_devices", is_flag=True, help="Every VPN-enabled device.")
@click.option("--parallel", type=int, default=fanout.DEFAULT_PARALLEL, show_default=True,
              help="Devices at a time.")
@click.option("--timeout", type=float, default=fanout.DEFAULT_TIMEOUT, show_default=True,
              help="Seconds per device (connect included); a device past it is reported "
                   "with an error and the others go on.")
@config_option
@device_ssh_options
@click.argument("names", nargs=-1)
def exec_cmd(group: str | None, tag: str | None, all_devices: bool, parallel: int,
             timeout: float, config: Path | None, user: str | None,
             identity_file: Path | None, known_hosts: Path | None, factory: str | None,
             api_url: str | None, api_token_file: Path | None,
             names: tuple[str, ...]) -> Result:
    """Run one command on many devices at once: NAME..., a --group, a --tag or --all
    VPN-enabled devices, --parallel at a time. Each device's output is printed as its
    own block, then a table; exit 0 only when every device exited 0.

    \b
    Examples:
      fiovpn exec --group prod-eu -- uname -a
      fiovpn exec device1 device2 --timeout 20 -- systemctl is-active aktualizr-lite
      fiovpn exec --all --json -- cat /etc/os-release
    """
    ctx = click.get_current_context()
    cmd = list(ctx.meta.get("fiovpn.exec.command") or [])
    if not cmd:
        raise BadInput("give the command after --: fiovpn exec --group G -- CMD",
                       code="bad_usage")
    fanout.check_limits(parallel, timeout)
    settings = settings_from(config=config, user=user, identity_file=identity_file,
                             known_hosts=known_hosts, factory=factory, api_url=api_url,
                             api_token_file=api_token_file)
    from fiovpn.cli.devices import factory_api
    from fiovpn.services import devices as devices_service

    with factory_api(settings) as api:
        sel = fanout.select(api, names=names, group=group, tag=tag, all_devices=all_devices,
                            list_names=lambda **kw: devices_service.device_names(api, **kw))
    for t in sel.targets:
        record_device_call(settings.journal, action="exec", device=t.name, via="cli",
                           detail={"program": cmd[0]})
    if sel.skipped:
        progress(f"not on the VPN, not run: {', '.join(sel.skipped)}")
    show = not json_mode()
    with live_progress(len(sel.targets), f"{' '.join(cmd)[:40]} on {sel.how}",
                       enabled=show and sys.stderr.isatty()) as advance:
        def done(r: fanout.ExecResult) -> None:
            advance(r.ok)
        results = fanout.run_many(settings, runner(), sel.targets, cmd, parallel=parallel,
                                  timeout=timeout, on_done=done)
    if show:
        for r in results:
            _write_block(r)
    failed = [r for r in results if not r.ok]
    title = (f"{len(results)} device(s), {len(results) - len(failed)} ok, "
             f"{len(failed)} failed")
    return Result([r.to_json() for r in results], exec_table(results, title),
                  1 if failed else 0)
