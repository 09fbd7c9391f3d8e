"""Reaching devices with the tools engineers already use: ``ssh-config``, ``cp``,
``forward`` (and ``exec``). ``fiovpn ssh`` itself lives in cli/client.py.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

import click

from fiovpn.cli.client import config_option, device_ssh_options, runner, settings_from
from fiovpn.cli.output import Result, command, progress
from fiovpn.errors import BadInput, TemporaryError
from fiovpn.services import client_config, ssh_config, transfer

PATH = click.Path(dir_okay=False, path_type=Path)


def register(cli: click.Group) -> None:
    for cmd in (ssh_config_cmd, cp_cmd, forward_cmd):
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
    if timeout is not None and timeout <= 0:
        raise BadInput(f"--timeout must be positive, not {timeout:g}", code="bad_timeout")
    settings = settings_from(config=config, user=user, identity_file=identity_file,
                             known_hosts=known_hosts, factory=factory, api_url=api_url,
                             api_token_file=api_token_file)
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
