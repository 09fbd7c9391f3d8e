"""Engineer / admin machine commands: ``client init``, ``connect``, ``disconnect``,
``status``, ``verify``, ``doctor``, ``register``, ``unregister``, ``check-registered``,
``ssh``, and ``devices enable-d2d`` / ``disable-d2d``.

Every command takes ``--config P`` (the wg-quick client config) and ``--json``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from fiovpn.adapters.runner import SubprocessRunner
from fiovpn.cli.options import api_options
from fiovpn.cli.output import Result, command, json_mode, progress, warn
from fiovpn.core.d2d import HOOK_NAME
from fiovpn.core.timespec import check_timeout
from fiovpn.errors import BadInput
from fiovpn.services import client as service
from fiovpn.services import device_access, remote
from fiovpn.services.journal import record_device_call
from fiovpn.settings import ClientSettings, load_client

F = TypeVar("F", bound=Callable[..., Any])

PATH = click.Path(dir_okay=False, path_type=Path)


def register(cli: click.Group) -> None:
    for cmd in (client, connect_cmd, disconnect_cmd, status_cmd, verify_cmd, doctor_cmd,
                register_cmd, unregister_cmd, check_registered_cmd, ssh_cmd):
        cli.add_command(cmd)
    attach_device_commands(cli)


def attach_device_commands(cli: click.Group) -> None:
    """Add enable-d2d / disable-d2d / d2d-status to the ``devices`` group (made by cli/devices.py);
    without one yet, make a group to hold them."""
    group = cli.commands.get("devices")
    if not isinstance(group, click.Group):
        group = click.Group("devices", help="The factory's devices.")
        cli.add_command(group)
    group.add_command(enable_d2d_cmd)
    group.add_command(disable_d2d_cmd)
    group.add_command(d2d_status_cmd)


# --- shared options -----------------------------------------------------------------------


def config_option(fn: F) -> F:
    return click.option(
        "--config", "config", type=PATH, default=None,
        help="The wg-quick client config (default ~/.config/wireguard/foundries.conf); "
             "the interface is named after the file.")(fn)


def ssh_key_options(fn: F) -> F:
    fn = click.option("--known-hosts", "known_hosts", type=PATH, default=None,
                      help="known_hosts file to check host keys against "
                           "(default: OpenSSH's own).")(fn)
    fn = click.option("--identity-file", "identity_file", type=PATH, default=None,
                      help="SSH private key to use (default: ssh-agent / OpenSSH's "
                           "defaults).")(fn)
    return fn


def server_ssh_options(fn: F) -> F:
    fn = click.option("--server-command", "server_command", default=None,
                      help="The fiovpn command on the server (env FIOVPN_SERVER_COMMAND; "
                           "default fiovpn), e.g. '/opt/fiovpn/bin/fiovpn'.")(fn)
    fn = click.option("--server-ssh", "server_ssh", default=None,
                      help="user@host:port of the server's sshd on its VPN address "
                           "(env FIOVPN_SERVER_SSH; default root@10.42.42.1:5025).")(fn)
    return ssh_key_options(fn)


def device_ssh_options(fn: F) -> F:
    fn = click.option("--user", default=None,
                      help="User on the device (env FIOVPN_DEVICE_USER; default fio).")(fn)
    return ssh_key_options(api_options(fn))


def settings_from(**flags: Any) -> ClientSettings:
    return load_client(flags)


def runner() -> SubprocessRunner:
    return SubprocessRunner()


# --- client init --------------------------------------------------------------------------


@click.group()
def client() -> None:
    """This machine's VPN client config."""


@client.command("init")
@command
@config_option
@click.option("--address", default=None,
              help="Your VPN IP, as the admin who registered you said (e.g. 10.42.42.200).")
@click.option("--server-endpoint", "server_endpoint", default=None,
              help="HOST:PORT of the WireGuard server (default: from the factory).")
@click.option("--server-public-key", "server_public_key", default=None,
              help="The server's public key (default: from the factory).")
@click.option("--private-key", "private_key", type=click.Path(path_type=Path), default=None,
              help="The key file of `fiovpn keys generate --private-key PATH` "
                   "(default ~/.config/wireguard/foundries.key, used when it exists).")
@api_options
@click.option("--force", is_flag=True, help="Start over with a new key.")
def init_cmd(config: Path | None, address: str | None, server_endpoint: str | None,
             server_public_key: str | None, private_key: Path | None, factory: str | None,
             api_url: str | None, api_token_file: Path | None, force: bool) -> Result:
    """Create the client config (or change only what is given) and print the public key.

    A new config uses the key of `fiovpn keys generate` when it exists, else a new
    key; the server's endpoint and key come from the factory's wireguard-server
    file unless given. An existing key is never replaced without --force.
    """
    settings = settings_from(config=config, factory=factory, api_url=api_url,
                             api_token_file=api_token_file)
    if private_key is not None and not private_key.exists():
        raise BadInput(f"--private-key {private_key} does not exist; create it with "
                       f"`fiovpn keys generate --private-key {private_key}`", code="no_key")
    res = service.init_client(settings, address=address, server_endpoint=server_endpoint,
                              server_public_key=server_public_key, force=force,
                              key_path=private_key)
    if res.created:
        head = f"Wrote {res.config} (mode 0600)."
    elif res.changed:
        head = f"Updated {', '.join(res.changed)} in {res.config}; the key is unchanged."
    else:
        head = f"{res.config} already exists; nothing changed (--force starts over)."
    human = (f"{head}\nPublic key: [bold]{res.public_key}[/]\n"
             f"Address: {res.address or '(not set yet)'}\nNext: {res.next_step}")
    for warning in res.warnings:
        warn(warning)
    return Result(res.to_json(), human)


# --- tunnel -------------------------------------------------------------------------------


@click.command("connect")
@command
@config_option
def connect_cmd(config: Path | None) -> Result:
    """Bring the tunnel up (wg-quick, or NetworkManager when it runs). Idempotent."""
    res = service.connect(settings_from(config=config), runner())
    return Result(res.to_json(), res.message)


@click.command("disconnect")
@command
@config_option
def disconnect_cmd(config: Path | None) -> Result:
    """Take the tunnel down. Idempotent."""
    res = service.disconnect(settings_from(config=config), runner())
    return Result(res.to_json(), res.message)


@click.command("status")
@command
@config_option
def status_cmd(config: Path | None) -> Result:
    """Interface, address, server peer, handshake age and transfer."""
    data = service.status(settings_from(config=config), runner())
    lines = [f"interface: {data['interface']} "
             f"({'up' if data['connected'] else 'down'}), config {data['config']}",
             f"address:   {data['address'] or '(not set)'}",
             f"public key: {data['public_key']}"]
    peer = data["peer"]
    if peer:
        age = peer["handshake_age_s"]
        lines += [f"server:    {peer['public_key']} at {peer['endpoint'] or '?'}",
                  f"handshake: {'never' if age is None else f'{age} s ago'}",
                  f"transfer:  {peer['rx']} B received, {peer['tx']} B sent"]
    return Result(data, "\n".join(lines))


@click.command("verify")
@command
@config_option
def verify_cmd(config: Path | None) -> Result:
    """Is the tunnel up, is the handshake recent, does the server answer?"""
    res = service.verify(settings_from(config=config), runner())
    age = res.handshake_age_s
    mark = {True: "✓", False: "✗"}
    human = "\n".join([
        f"{mark[res.connected]} connected ({res.interface})",
        f"{mark[age is not None]} handshake: {'never' if age is None else f'{age} s ago'}",
        f"{mark[res.server_reachable]} server {res.server_address} "
        f"{'reachable' if res.server_reachable else 'not reachable'}",
    ])
    if not res.connected:
        human += "\nNext: run `fiovpn connect`"
    elif not res.ok:
        human += "\nNext: run `fiovpn doctor`"
    return Result(res.to_json(), human, 0 if res.ok else 1)


@click.command("doctor")
@command
@config_option
@click.option("--device", default=None,
              help="Also check this device (name or VPN IP): reachable, device-to-device.")
@click.option("--user", default=None, help="User on the device (for --device).")
@ssh_key_options
@api_options
def doctor_cmd(config: Path | None, device: str | None, user: str | None,
               identity_file: Path | None, known_hosts: Path | None, factory: str | None,
               api_url: str | None, api_token_file: Path | None) -> Result:
    """Walk the decision tree: config, key, connected, handshake, server, registered."""
    settings = settings_from(config=config, user=user, identity_file=identity_file,
                             known_hosts=known_hosts, factory=factory, api_url=api_url,
                             api_token_file=api_token_file)
    d = service.doctor(settings, runner(), device=device)
    lines = []
    for c in d.checks:
        sym = "✓" if c.ok else ("✗" if c.ok is False else "-")
        lines.append(f"{sym} {c.name}: {c.detail}")
        if c.next_step:
            lines.append(f"    next: {c.next_step}")
    return Result([c.to_json() for c in d.checks], "\n".join(lines), 0 if d.ok else 1)


# --- admin over SSH -----------------------------------------------------------------------


@click.command("register")
@command
@config_option
@click.option("--public-key", "public_key", required=True, help="The client's public key.")
@click.option("--ip", default="auto", show_default=True,
              help="'auto' or an address of the client pool.")
@click.option("--name", default=None, help="A label, e.g. the engineer's name.")
@click.option("--groups", default=None,
              help="G1,G2: reach only devices of these factory device groups.")
@click.option("--expires", default=None,
              help="DURATION (30d) or YYYY-MM-DDTHH:MM:SSZ: off the VPN from then on.")
@server_ssh_options
def register_cmd(config: Path | None, public_key: str, ip: str, name: str | None,
                 groups: str | None, expires: str | None,
                 identity_file: Path | None, known_hosts: Path | None,
                 server_ssh: str | None, server_command: str | None) -> Result:
    """Register a client's public key on the server (admin, over SSH).

    Runs `fiovpn server clients add` on the server through the VPN (--server-ssh,
    default root@10.42.42.1:5025): you must be connected (`fiovpn verify`) and your
    SSH key allowed on the server. Prints the IP to hand back to the engineer, who
    runs `fiovpn client init --address IP`. On the server itself (first admin), use
    `fiovpn server clients add` instead.

    \b
    Example:
      fiovpn register --public-key KEY --name alice
      fiovpn register --public-key KEY --name bob --groups lab --expires 30d
    """
    settings = settings_from(config=config, identity_file=identity_file,
                             known_hosts=known_hosts, server_ssh=server_ssh,
                             server_command=server_command)
    data = remote.register(settings, runner(), public_key=public_key, ip=ip, name=name,
                           groups=groups, expires=expires)
    human = (f"Registered {data['public_key']} as {data['name'] or '(no name)'} with IP "
             f"{data['ip']}.\nTell the engineer to run: "
             f"fiovpn client init --address {data['ip']} && fiovpn connect")
    return Result(data, human)


@click.command("unregister")
@command
@config_option
@click.option("--public-key", "public_key", default=None, help="The client's public key.")
@click.option("--name", default=None,
              help="The client's name (refused when several share it, unless --all).")
@click.option("--all", "all_matching", is_flag=True,
              help="With --name: remove every client of that name.")
@server_ssh_options
def unregister_cmd(config: Path | None, public_key: str | None, name: str | None,
                   all_matching: bool, identity_file: Path | None, known_hosts: Path | None,
                   server_ssh: str | None, server_command: str | None) -> Result:
    """Remove a client from the server (admin, over SSH); its tunnel stops at once.

    \b
    Example:
      fiovpn unregister --name alice
    """
    settings = settings_from(config=config, identity_file=identity_file,
                             known_hosts=known_hosts, server_ssh=server_ssh,
                             server_command=server_command)
    data = remote.unregister(settings, runner(), public_key=public_key, name=name,
                             all_matching=all_matching)
    return Result(data, f"Removed {public_key or name} from the server's clients.")


@click.command("check-registered")
@command
@config_option
@click.option("--public-key", "public_key", default=None,
              help="Ask the server's registry about this key (admin). Without it: check "
                   "this machine's key by the server's answer (no admin rights needed).")
@click.option("--timeout", default=6.0, show_default=True,
              help="Seconds to wait for the server's answer to a fresh handshake (local "
                   "check; WireGuard retries a handshake every 5 s).")
@server_ssh_options
def check_registered_cmd(config: Path | None, public_key: str | None, timeout: float,
                         identity_file: Path | None, known_hosts: Path | None,
                         server_ssh: str | None, server_command: str | None) -> Result:
    """Is a key registered on the server?

    Without --public-key (engineer): brings the tunnel up if needed, sends traffic to
    the server now and reads whether it answers, which it does only for a key it holds
    (an earlier handshake is no proof: the key may have been removed since; a session
    that gets no answer is replaced by a fresh handshake). No admin rights.
    With --public-key (admin, on the VPN): asks the server's registry over SSH.
    Exit code 0 when registered, 1 when not.
    """
    settings = settings_from(config=config, identity_file=identity_file,
                             known_hosts=known_hosts, server_ssh=server_ssh,
                             server_command=server_command)
    if public_key is not None:
        data = remote.check_registered_remote(settings, runner(), public_key=public_key)
        human = (f"{data['public_key']}: "
                 + ("registered" if data["registered"] else "NOT registered")
                 + f" (in registry: {data.get('in_registry')}, on interface: "
                 f"{data.get('on_interface')}, ip: {data.get('ip')})")
        if not data["registered"]:
            human += ("\nNext: the server daemon applies the registry within seconds; "
                      "if it stays so, check `fiovpn server status` on the server"
                      if data.get("in_registry") else
                      f"\nNext: fiovpn register --public-key {data['public_key']} "
                      "--name NAME")
    else:
        check_timeout(timeout)
        progress("checking whether the server answers this key")
        data = service.check_registered_local(settings, runner(), timeout=timeout)
        human = data["message"] + (f"\nNext: {data['next_step']}" if data["next_step"] else "")
    return Result(data, human, 0 if data["registered"] else 1)


# --- devices ------------------------------------------------------------------------------


def split_ssh_command(args: tuple[str, ...]) -> list[str]:
    """The remote command after DEVICE. Parsing stops at DEVICE (the command's own
    options belong to it), so ``fiovpn ssh DEVICE --json -- CMD`` leaves ``--json``
    here: a run of ``--json`` right after DEVICE, ended by ``--`` or by the end, is
    fiovpn's flag, never sent to the device."""
    cmd = list(args)
    n = 0
    while n < len(cmd) and cmd[n] == "--json":
        n += 1
    if n and (n == len(cmd) or cmd[n] == "--"):
        click.get_current_context().meta["fiovpn.json"] = True
        cmd = cmd[n:]
    if cmd and cmd[0] == "--":
        return cmd[1:]
    if cmd and cmd[0].startswith("-") and "--" in cmd:
        # `fiovpn ssh DEVICE --user root -- id`: options meant for fiovpn, not a command.
        opts = " ".join(cmd[:cmd.index("--")])
        raise BadInput(f"options go before DEVICE: fiovpn ssh {opts} DEVICE -- CMD",
                       code="bad_usage")
    return cmd


@click.command("ssh", context_settings={"ignore_unknown_options": True,
                                        "allow_interspersed_args": False})
@command
@config_option
@device_ssh_options
@click.option("--timeout", type=float, default=None,
              help="Stop after this many seconds (exit 1). Default: no limit, as ssh.")
@click.argument("device")
@click.argument("remote_command", nargs=-1, type=click.UNPROCESSED)
def ssh_cmd(config: Path | None, user: str | None, identity_file: Path | None,
            known_hosts: Path | None, factory: str | None, api_url: str | None,
            api_token_file: Path | None, timeout: float | None, device: str,
            remote_command: tuple[str, ...]) -> Result:
    """SSH to DEVICE (name or VPN IP) as OpenSSH does: `fiovpn ssh DEVICE -- CMD ...`
    runs CMD with your stdin, streams its output (bytes, unchanged) and exits with its
    exit code (255 included). Without CMD: a login shell, on a terminal when you are on
    one. Key authentication only; host keys are checked. A name's VPN IP, once the
    factory listed it, is remembered for 5 minutes (settings device-cache,
    device-cache-ttl; 0: always ask), so a repeated call makes no API call.

    CMD's words reach the device exactly as given (each quoted; no remote shell
    expands them): for pipes or variables run a shell, `-- sh -c 'A | B'`.
    With --json, CMD gets no stdin and its output comes back in one JSON object
    (bytes that are not UTF-8 as \\xNN escapes, `stdout_escaped` says so).

    \b
    Examples:
      fiovpn ssh device1                    (a login shell)
      fiovpn ssh device1 -- uname -a
      tar czf - dir | fiovpn ssh device1 -- tar xzf - -C /tmp
      fiovpn ssh device1 -- sh -c 'journalctl -b | tail'
      fiovpn ssh --timeout 30 device1 -- fw-update --check
      fiovpn ssh --json 10.42.42.2 -- systemctl is-active aktualizr-lite
    """
    settings = settings_from(config=config, user=user, identity_file=identity_file,
                             known_hosts=known_hosts, factory=factory, api_url=api_url,
                             api_token_file=api_token_file)
    cmd = split_ssh_command(remote_command)
    check_timeout(timeout)
    if json_mode():
        if not cmd:
            raise BadInput("--json needs a command: fiovpn ssh --json DEVICE -- CMD",
                           code="bad_usage")
        # the program only: arguments may hold what does not belong in a log
        record_device_call(settings.journal, action="ssh", device=device, via="cli",
                           detail={"program": cmd[0]})
        res = device_access.run_on_device(settings, runner(), device, cmd, timeout=timeout,
                                          cached=True)
        return Result(res.to_json(), None, res.exit_code)
    # the same call as the fast path's (fiovpn.entry)
    code = device_access.ssh_command(settings, runner(), device, cmd, timeout=timeout)
    return Result({"exit_code": code}, None, code)


def _d2d(enable: bool, name: str, **flags: Any) -> Result:
    settings = settings_from(**flags)
    action = "enable" if enable else "disable"
    record_device_call(settings.journal, action=f"{action}-d2d", device=name, via="cli")
    progress(f"{action} device-to-device on {name} over SSH")
    data = (device_access.enable_d2d if enable else device_access.disable_d2d)(
        settings, runner(), name)
    state = "on" if enable else "off"
    head = (f"device-to-device {state} for {data['name']} ({data['vpn_ip']}): "
            + (f"changed ({', '.join(data['changed_parts'])})" if data["changed"]
               else "already so, nothing changed")
            + f"; server peer allowed-ips {', '.join(data['allowed_ips'])}")
    if enable:
        head += (f"\nIt lasts: the dispatcher hook {HOOK_NAME} re-applies it each time "
                 "the VPN connection comes up."
                 "\nThe other device needs it too, and the server --allow-device-to-device."
                 f"\nNote: {data['warning']}")
    return Result(data, head)


@click.command("enable-d2d")
@command
@click.argument("name")
@config_option
@device_ssh_options
def enable_d2d_cmd(name: str, **flags: Any) -> Result:
    """Let device NAME reach other devices, lastingly: over SSH, install the
    NetworkManager dispatcher hook 90-fiovpn-d2d (it widens the server peer to the VPN
    subnet whenever factory-vpn0 comes up: after reboots and factory VPN config
    changes), widen factory-vpn0.nmconnection, and widen the live interface with
    `wg set` (the SSH session is not cut). Idempotent."""
    return _d2d(True, name, **flags)


@click.command("disable-d2d")
@command
@click.argument("name")
@config_option
@device_ssh_options
def disable_d2d_cmd(name: str, **flags: Any) -> Result:
    """Put device NAME back to reaching only the server: remove the hook, restore the
    factory handler's route in the keyfile and on the live interface. Idempotent."""
    return _d2d(False, name, **flags)


@click.command("d2d-status")
@command
@click.argument("name")
@config_option
@device_ssh_options
def d2d_status_cmd(name: str, **flags: Any) -> Result:
    """Device NAME's true device-to-device state, read from the device over SSH: its
    live `wg show factory-vpn0 allowed-ips` and whether the hook that keeps it is
    installed. JSON: {"name","d2d","allowed_ips","persistent"}."""
    settings = settings_from(**flags)
    status = device_access.d2d_status(settings, runner(), name)
    return Result(status.to_json(), status.summary())
