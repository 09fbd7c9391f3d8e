"""OpenSSH client, run through the Runner.

- Key authentication only (agent or identity file): batch mode, no password or
  keyboard-interactive prompts. fiovpn never sends a password.
- Host keys are always checked (``StrictHostKeyChecking=yes``), optionally
  against a given known_hosts file.
- Repeated calls to one host share a connection (ControlMaster/ControlPersist,
  sockets in a per-user runtime directory).
- The remote command is an argv joined with ``shlex.join``: the remote shell
  sees every argument as one quoted word and interprets none of them.
- Commands that need root on the far side go through ``sudo -n`` when the
  user is not root; when sudo wants a password fiovpn stops and prints the
  sudoers line that would allow the command.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fiovpn.adapters.runner import Completed, Runner, Stdio
from fiovpn.core.digest import sha256_hex
from fiovpn.errors import BadInput, PermanentError, RemoteCommandError, TemporaryError

SSH_EXIT_ERROR = 255
_HOST_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:[]")
_USER_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_SUDO_PASSWORD = ("a password is required", "a terminal is required", "no tty present")


@dataclass(frozen=True, slots=True)
class SshTarget:
    user: str
    host: str
    port: int = 22

    @classmethod
    def parse(cls, spec: str, *, default_user: str = "root", default_port: int = 22,
              what: str = "SSH target") -> SshTarget:
        """``[user@]host[:port]``; IPv6 hosts in brackets (``[fd00::1]:22``)."""
        spec = spec.strip()
        user, at, rest = spec.rpartition("@")
        if not at:
            user, rest = default_user, spec
        port_s = ""
        if rest.startswith("["):
            host, _, tail = rest[1:].partition("]")
            if tail.startswith(":"):
                port_s = tail[1:]
            elif tail:
                raise BadInput(f"invalid {what} {spec!r}", code="bad_ssh_target")
        elif rest.count(":") == 1:
            host, _, port_s = rest.partition(":")
        else:
            host = rest
        if not user or not set(user) <= _USER_CHARS or user.startswith("-"):
            raise BadInput(f"invalid user in {what} {spec!r}", code="bad_ssh_target")
        if not host or not set(host) <= _HOST_CHARS or host.startswith("-"):
            raise BadInput(f"invalid host in {what} {spec!r}: expected user@host:port",
                           code="bad_ssh_target")
        if port_s and (not port_s.isdigit() or not 0 < int(port_s) < 65536):
            raise BadInput(f"invalid port in {what} {spec!r}: expected 1-65535",
                           code="bad_ssh_target")
        return cls(user, host, int(port_s) if port_s else default_port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"


def parse_ha_peer(text: str) -> SshTarget:
    """``USER@HOST[:PORT]`` of the other HA server (user default root, port 22)."""
    try:
        return SshTarget.parse(text, default_user="root", what="--ha-peer")
    except BadInput as exc:
        raise BadInput(f"{exc.message} (--ha-peer is USER@HOST[:PORT] of the other server)",
                       code="bad_ha_peer") from None


def _netns_id() -> str:
    """The network namespace this process runs in: one host address can mean a
    different machine in another namespace, so shared connections never cross one."""
    try:
        return f"{os.stat('/proc/self/ns/net').st_ino:x}"
    except OSError:
        return "host"


# A Unix socket path holds at most 107 bytes; ssh adds "/" + 8 (trust id) + "-" + 40 (%C)
# + a 17-byte temp suffix.
MAX_CONTROL_DIR = 107 - 1 - 9 - 40 - 17


def netns_runtime_dirs(netns_inode: int) -> list[Path]:
    """Where ``runtime_dir()`` run by this user inside the network namespace with that
    inode puts its sockets (the ``$XDG_RUNTIME_DIR`` and the temp-dir places): what a
    lab removes with the namespace."""
    name = f"ns-{netns_inode:x}"
    tops = [Path(tempfile.gettempdir()) / f"fiovpn-{os.getuid()}",
            Path("/tmp") / f"fiovpn-{os.getuid()}"]
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        tops.append(Path(base) / "fiovpn")
    return [top / name for top in dict.fromkeys(tops)]


def runtime_dir() -> Path:
    """A private per-user directory for control sockets (``$XDG_RUNTIME_DIR/fiovpn``,
    else ``/tmp/fiovpn-<uid>``), created 0700, one subdirectory per network namespace.

    A runtime dir too long for a socket path falls back to ``/tmp``."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    fallback = Path("/tmp") / f"fiovpn-{os.getuid()}"
    top = Path(base) / "fiovpn" if base else Path(tempfile.gettempdir()) / f"fiovpn-{os.getuid()}"
    if len(str(top / f"ns-{_netns_id()}")) > MAX_CONTROL_DIR:
        top = fallback
    path = top / f"ns-{_netns_id()}"
    for d in (top, path):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = d.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise PermanentError(f"{d} must be owned by you with mode 0700 "
                                 "(it holds SSH control sockets)", code="unsafe_runtime_dir")
    return path


@dataclass(frozen=True)
class SshOptions:
    identity_file: Path | None = None
    known_hosts: Path | None = None
    control_dir: Path | None = None  # None: no connection sharing
    control_persist: int = 60
    connect_timeout: int = 10
    extra: tuple[str, ...] = ()  # extra `-o K=V` options
    config_file: Path | None = None  # `ssh -F FILE`; None: ssh's own ~/.ssh/config

    def trust_id(self) -> str:
        """8 hex digits naming the options that decide whom ssh trusts."""
        parts = (self.identity_file, self.known_hosts, self.config_file, *self.extra)
        return sha256_hex(repr(parts), 8)

    def __post_init__(self) -> None:
        for opt in self.extra:
            # ssh reads `-o` like its config file: "Key=Value" or "Key Value".
            parts = re.split(r"\s*=\s*|\s+", opt.strip(), maxsplit=1)
            key = parts[0].lower()
            value = parts[1].strip().lower() if len(parts) > 1 else ""
            if key == "stricthostkeychecking" and value in ("no", "off", "accept-new"):
                raise BadInput("StrictHostKeyChecking cannot be turned off: fiovpn always "
                               "checks host keys; add the host to a known_hosts file",
                               code="bad_ssh_option")
            # Options fiovpn sets itself may only be repeated with the same safe value.
            fixed = {"passwordauthentication": "no", "kbdinteractiveauthentication": "no",
                     "batchmode": "yes", "stricthostkeychecking": "yes"}
            if key in fixed and value != fixed[key]:
                raise BadInput(f"SSH option {opt!r} is not allowed: fiovpn uses keys only, "
                               "never a password", code="bad_ssh_option")
            if key in ("proxycommand", "localcommand", "permitlocalcommand") or not key:
                raise BadInput(f"SSH option {opt!r} is not allowed", code="bad_ssh_option")


@dataclass
class SshClient:
    runner: Runner
    target: SshTarget
    options: SshOptions = field(default_factory=SshOptions)

    def option_args(self) -> list[str]:
        """The ``-o`` options (ssh and scp take them alike): keys only, host keys checked,
        the identity, connection sharing, the extra options."""
        o = self.options
        argv = ["-o", "BatchMode=yes",
                "-o", "PasswordAuthentication=no",
                "-o", "KbdInteractiveAuthentication=no",
                "-o", "StrictHostKeyChecking=yes",
                "-o", f"ConnectTimeout={o.connect_timeout}",
                "-o", "ServerAliveInterval=5",
                "-o", "ServerAliveCountMax=3"]
        if o.known_hosts is not None:
            argv += ["-o", f"UserKnownHostsFile={o.known_hosts}"]
        if o.identity_file is not None:
            argv += ["-i", str(o.identity_file), "-o", "IdentitiesOnly=yes"]
        if o.control_dir is not None and len(str(o.control_dir)) <= MAX_CONTROL_DIR:
            # %C covers host, port and user only: a connection opened under other
            # trust options (known_hosts, identity, ssh config) must not be reused.
            argv += ["-o", "ControlMaster=auto",
                     "-o", f"ControlPath={o.control_dir}/{o.trust_id()}-%C",
                     "-o", f"ControlPersist={o.control_persist}"]
        for opt in o.extra:
            argv += ["-o", opt]
        return argv

    def base_argv(self, *, tty: bool = False) -> list[str]:
        o = self.options
        return ["ssh", *(["-F", str(o.config_file)] if o.config_file is not None else []),
                "-p", str(self.target.port), "-l", self.target.user, *self.option_args(),
                "-t" if tty else "-T"]

    def needs_sudo(self) -> bool:
        return self.target.user != "root"

    def remote_argv(self, command: Sequence[str], *, sudo: bool = False) -> list[str]:
        cmd = list(command)
        if sudo and self.needs_sudo():
            cmd = ["sudo", "-n", "--", *cmd]
        return cmd

    def argv(self, command: Sequence[str], *, sudo: bool = False, tty: bool = False) -> list[str]:
        """The full local argv: ssh options, ``--``, host, then the remote command as one
        shell-quoted string (so the remote shell interprets none of its arguments)."""
        if not command:
            raise BadInput("no remote command given", code="bad_command")
        remote = shlex.join(self.remote_argv(command, sudo=sudo))
        return [*self.base_argv(tty=tty), "--", self.target.host, remote]

    def run(self, command: Sequence[str], *, input: str | None = None, check: bool = True,
            sudo: bool = False, timeout: float = 60.0) -> Completed:
        """Run ``command`` on the host. Connection problems raise ``TemporaryError`` or
        ``PermanentError`` with the next step; a failing remote command raises
        ``RemoteCommandError`` when ``check`` (its exit code is in ``.result``)."""
        result = self.runner.run(self.argv(command, sudo=sudo), input=input, check=False,
                                 timeout=timeout)
        self.raise_for_connection(result)
        if sudo and self.needs_sudo() and result.returncode != 0:
            err = result.stderr.lower()
            if "sudo:" in err and any(s in err for s in _SUDO_PASSWORD):
                raise PermanentError(
                    "sudo wants a password: allow this command with NOPASSWD in sudoers "
                    f"on {self.target.host}: {sudoers_line(self.target.user, command)}",
                    code="sudo_password")
        if check and result.returncode != 0:
            raise RemoteError(self.target, command, result)
        return result

    def stream(self, command: Sequence[str], *, tty: bool = False,
               timeout: float | None = None, stdin: Stdio = None, stdout: Stdio = None,
               stderr: Stdio = None, options: Sequence[str] = ()) -> int:
        """Run ``command`` (a login shell when empty) the way OpenSSH does: stdin, stdout
        and stderr are the given ones (ours when ``None``), bytes untouched and unbuffered;
        the remote exit code is returned, 255 included.

        ssh's own messages go to a log file (``ssh -E``), not to the remote command's
        stderr: a failure to connect (exit 255 with ssh saying why) is raised as a clear
        error, while a remote command that exits 255 is just its exit code."""
        argv = self.base_argv(tty=tty)
        fd, log_name = tempfile.mkstemp(prefix="fiovpn-ssh-", suffix=".log")
        os.close(fd)
        log = Path(log_name)
        try:
            argv += [*options, "-E", str(log), "--", self.target.host]
            if command:
                argv.append(shlex.join(self.remote_argv(command)))
            code = self.runner.call(argv, stdin=stdin, stdout=stdout, stderr=stderr,
                                    timeout=timeout)
            said = _ssh_said(log.read_text(errors="replace"))
        finally:
            log.unlink(missing_ok=True)
        if code == SSH_EXIT_ERROR and said:
            self.raise_for_connection(Completed(tuple(argv), code, "", said))
        if said and code != 0:
            # What ssh would have printed on our stderr (a warning, say).
            out = stderr if stderr is not None and hasattr(stderr, "write") else None
            if out is None:
                sys.stderr.write(said + "\n")
                sys.stderr.flush()
            else:
                out.write((said + "\n").encode())
        return code

    def capture(self, command: Sequence[str], *, timeout: float | None = None,
                stdin: Stdio = subprocess.DEVNULL) -> CapturedBytes:
        """``stream`` into temporary files: the exit code and the output as bytes."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            code = self.stream(command, timeout=timeout, stdin=stdin, stdout=out, stderr=err)
            out.seek(0)
            err.seek(0)
            return CapturedBytes(code, out.read(), err.read())

    def raise_for_connection(self, result: Completed) -> None:
        """SSH's own failures (exit 255) as clear errors."""
        if result.returncode != SSH_EXIT_ERROR:
            return
        err = result.stderr.strip()
        low = err.lower()
        where = str(self.target)
        if "host key verification failed" in low or "remote host identification" in low:
            known = self.options.known_hosts or "~/.ssh/known_hosts"
            raise PermanentError(
                f"SSH to {where}: host key verification failed",
                code="ssh_host_key",
                hint=f"add the host's key to {known} (check its fingerprint first); "
                     "fiovpn never skips host key checks")
        if "permission denied" in low:
            raise PermanentError(
                f"SSH to {where}: permission denied (key authentication only)",
                code="ssh_auth",
                hint="load your key in ssh-agent or pass --identity-file, and make sure the "
                     "public key is in the remote user's authorized_keys")
        if any(s in low for s in ("connection refused", "timed out", "no route to host",
                                  "network is unreachable", "connection closed",
                                  "could not resolve", "connection reset")):
            raise TemporaryError(
                f"SSH to {where}: cannot connect ({_last_line(err)})", code="ssh_unreachable",
                hint="are you connected to the VPN? try `fiovpn verify`")
        raise TemporaryError(f"SSH to {where} failed: {_last_line(err) or 'exit code 255'}",
                             code="ssh_failed")

    def close(self) -> None:
        """Stop the shared master connection, if any."""
        if self.options.control_dir is None:
            return
        self.runner.run([*self.base_argv(), "-O", "exit", "--", self.target.host],
                        check=False, timeout=10)


@dataclass(frozen=True, slots=True)
class CapturedBytes:
    returncode: int
    stdout: bytes
    stderr: bytes


# What ssh logs on a normal end: not a reason to think it failed.
_SSH_NOISE = ("shared connection to ", "connection to ", "warning: permanently added")


def _ssh_said(log: str) -> str:
    """ssh's own messages from its ``-E`` log, without the lines of a normal session end."""
    lines = [ln.rstrip() for ln in log.splitlines() if ln.strip()]
    return "\n".join(ln for ln in lines
                     if not (ln.lower().startswith(_SSH_NOISE) and ln.endswith(("closed.",
                                                                                "hosts."))))


class RemoteError(RemoteCommandError):
    """The remote command ran and failed; ``result`` holds its exit code and output."""

    code = "remote_failed"

    def __init__(self, target: SshTarget, command: Sequence[str], result: Completed) -> None:
        detail = _last_line(result.stderr) or _last_line(result.stdout) or (
            f"exit code {result.returncode}")
        super().__init__(f"`{shlex.join(command)[:80]}` on {target.host} failed: {detail}")
        self.result = result


def sudoers_line(user: str, command: Sequence[str]) -> str:
    """The sudoers rule that lets ``user`` run exactly ``command`` without a password."""
    prog = command[0] if command[0].startswith("/") else f"/usr/bin/{command[0]}"
    args = " ".join(_sudoers_escape(a) for a in command[1:])
    return f"{user} ALL=(root) NOPASSWD: {prog}{' ' + args if args else ''}"


def _sudoers_escape(arg: str) -> str:
    out = arg
    for ch in ("\\", ",", ":", "=", " "):
        out = out.replace(ch, "\\" + ch)
    return out


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""
