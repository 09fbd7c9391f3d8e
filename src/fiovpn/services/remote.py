"""Admin commands over SSH: register / unregister / check-registered on the server.

The remote side is ``fiovpn server clients …`` (``--server-command``, shlex-split
so a path or ``python -m fiovpn`` works) run on the server's VPN address
(``--server-ssh``, default ``root@10.42.42.1:5025``). Every input is validated
here before any SSH call, and every argument is quoted for the remote shell.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiovpn.adapters.runner import Completed, Runner
from fiovpn.adapters.ssh import SshClient, SshOptions, SshTarget, runtime_dir, sudoers_line
from fiovpn.core.addresses import parse_ip
from fiovpn.core.names import validate_name
from fiovpn.errors import (
    BadInput,
    Conflict,
    FiovpnError,
    NotFound,
    PermanentError,
    RemoteCommandError,
)
from fiovpn.settings import ClientSettings

if TYPE_CHECKING:
    from fiovpn.core.keys import Key

DEFAULT_SERVER_SSH_PORT = 5025


def ssh_options(settings: ClientSettings, *, control_dir: Path | None = None,
                share: bool = True) -> SshOptions:
    for path, what in ((settings.identity_file, "--identity-file"),
                       (settings.known_hosts, "--known-hosts")):
        if path is not None and not path.exists():
            # ssh itself only warns and goes on (then says "permission denied").
            raise BadInput(f"{what} {path} does not exist", code="bad_ssh_file",
                           hint=f"give the path of an existing file, or leave {what} out "
                                "to use ssh-agent / OpenSSH's defaults")
    return SshOptions(
        identity_file=settings.identity_file,
        known_hosts=settings.known_hosts,
        control_dir=control_dir if control_dir is not None else (
            runtime_dir() if share else None),
        extra=tuple(settings.ssh_options),
        config_file=settings.ssh_config,
    )


def server_command(settings: ClientSettings) -> list[str]:
    try:
        argv = shlex.split(settings.server_command)
    except ValueError as exc:
        raise BadInput(f"invalid --server-command {settings.server_command!r}: {exc}",
                       code="bad_server_command") from None
    if not argv:
        raise BadInput("--server-command is empty", code="bad_server_command")
    return argv


def server_client(settings: ClientSettings, runner: Runner,
                  options: SshOptions | None = None) -> SshClient:
    target = SshTarget.parse(settings.server_ssh, default_user="root",
                             default_port=DEFAULT_SERVER_SSH_PORT, what="--server-ssh")
    return SshClient(runner, target, options or ssh_options(settings))


def _remote_error(result: Completed, target: SshTarget) -> FiovpnError:
    """The server's ``{"error": {...}}`` answer as the same kind of error here."""
    message, code = "", "remote_failed"
    try:
        body = json.loads(result.stdout)
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            message = str(body["error"].get("message", ""))
            code = str(body["error"].get("code", code))
    except ValueError:
        pass
    if not message:
        lines = [ln for ln in (result.stderr or result.stdout).strip().splitlines() if ln]
        message = lines[-1] if lines else f"exit code {result.returncode}"
        if "command not found" in message or "No such file" in message:
            return RemoteCommandError(
                f"the server {target.host} has no fiovpn command: {message}",
                code="no_server_command",
                hint="pass --server-command with the path of fiovpn on the server")
    text = f"server {target.host}: {message}"
    if result.returncode == 2:
        if code in ("not_found", "no_client"):
            return NotFound(text, code=code)
        if code in ("conflict", "ip_taken", "key_taken", "name_taken", "pool_full"):
            return Conflict(text, code=code)
        return BadInput(text, code=code)
    return RemoteCommandError(text, code=code)


def run_server_clients(settings: ClientSettings, runner: Runner, args: list[str],
                       *, options: SshOptions | None = None) -> Any:
    """Run ``<server-command> server clients <args> --json`` on the server; its JSON."""
    client = server_client(settings, runner, options)
    argv = [*server_command(settings), "server", "clients", *args, "--json"]
    try:
        result = client.run(argv, check=False, sudo=True, timeout=60)
    except PermanentError as exc:
        if exc.code != "sudo_password":
            raise
        # The rule for this one call (its key, its name) would not allow the next one:
        # name every `server clients` command instead.
        rule = sudoers_line(client.target.user, [*server_command(settings), "server",
                                                 "clients"]) + " *"
        raise PermanentError(
            f"sudo on {client.target.host} wants a password for `fiovpn server clients`: "
            f"allow it with NOPASSWD in sudoers there: {rule}", code="sudo_password",
            hint="with fiovpn's full path on the server (`command -v fiovpn` there); "
                 "fiovpn never sends a password. Or use --server-ssh root@HOST:PORT"
        ) from None
    if result.returncode != 0:
        raise _remote_error(result, client.target)
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise RemoteCommandError(
            f"server {client.target.host}: `{' '.join(argv[:4])}` did not answer JSON "
            f"({result.stdout.strip()[:80]!r})", code="bad_remote_output",
            hint="is --server-command a fiovpn that has `server clients`?") from None


def _public_key(text: str) -> Key:
    from fiovpn.core.keys import Key  # here: `fiovpn ssh` starts without it

    return Key.parse_public(text)


def _check_ip(ip: str | None) -> str:
    if ip is None or ip == "auto":
        return "auto"
    return str(parse_ip(ip, what="client IP"))


def _check_expires(expires: str) -> str:
    """A DURATION or TIMESTAMP, checked here (the server checks it again, against
    its own clock) so a typo never costs an SSH round trip."""
    from fiovpn.core.timespec import parse_expiry  # here: `fiovpn ssh` starts without it

    parse_expiry(expires, time.time())
    return expires.strip()


def register(settings: ClientSettings, runner: Runner, *, public_key: str,
             ip: str | None = None, name: str | None = None, groups: str | None = None,
             expires: str | None = None,
             options: SshOptions | None = None) -> dict[str, Any]:
    """Add a client to the server's registry; ``{"public_key","ip","name"}`` (and
    ``groups``/``expires`` when given)."""
    key = _public_key(public_key)
    ip_arg = _check_ip(ip)
    args = ["add", "--public-key", str(key), "--ip", ip_arg]
    if name is not None:
        args += ["--name", validate_name(name, what="client name")]
    if groups is not None:
        from fiovpn.core.registry import parse_groups

        args += ["--groups", ",".join(parse_groups(groups, what="--groups"))]
    if expires is not None:
        args += ["--expires", _check_expires(expires)]
    answer = run_server_clients(settings, runner, args, options=options)
    if not isinstance(answer, dict) or "ip" not in answer:
        raise RemoteCommandError(f"unexpected answer from the server: {answer!r}"[:200],
                                 code="bad_remote_output")
    out = {"public_key": str(answer.get("public_key", key)), "ip": answer["ip"],
           "name": answer.get("name")}
    out.update({k: answer[k] for k in ("groups", "expires") if k in answer})
    return out


def unregister(settings: ClientSettings, runner: Runner, *, public_key: str | None = None,
               name: str | None = None, all_matching: bool = False,
               options: SshOptions | None = None) -> Any:
    """Remove a client by key or name (a name several clients share only with
    ``all_matching``); the server's answer: the list of removed clients."""
    if (public_key is None) == (name is None):
        raise BadInput("give exactly one of the public key (--public-key) or the name "
                           "(--name)", code="bad_usage")
    if public_key is not None:
        args = ["remove", "--public-key", str(_public_key(public_key))]
    else:
        assert name is not None
        args = ["remove", "--name", validate_name(name, what="client name")]
        if all_matching:
            args.append("--all")
    return run_server_clients(settings, runner, args, options=options)


def check_registered_remote(settings: ClientSettings, runner: Runner, *, public_key: str,
                            options: SshOptions | None = None) -> dict[str, Any]:
    """Ask the server: ``{"registered","in_registry","on_interface","ip"}``."""
    key = _public_key(public_key)
    answer = run_server_clients(settings, runner, ["check", "--public-key", str(key)],
                                options=options)
    if not isinstance(answer, dict) or "registered" not in answer:
        raise RemoteCommandError(f"unexpected answer from the server: {answer!r}"[:200],
                                 code="bad_remote_output")
    return {"public_key": str(key), **answer}


def list_clients(settings: ClientSettings, runner: Runner,
                 options: SshOptions | None = None) -> Any:
    return run_server_clients(settings, runner, ["list"], options=options)
