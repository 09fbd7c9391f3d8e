"""Running programs: one small interface so tests can inject a fake.

Commands are argument lists, never shell strings. Secrets go through ``input``
(stdin), never through argv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from fiovpn.errors import MissingTool, PermanentError, TemporaryError

# program -> the Debian package that installs it (for "run `apt-get install ...`" hints)
DEBIAN_PACKAGES: dict[str, str] = {
    "ip": "iproute2",
    "ss": "iproute2",
    "wg": "wireguard-tools",
    "wg-quick": "wireguard-tools",
    "wireguard-go": "wireguard-go",
    "nft": "nftables",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "ping": "iputils-ping",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "setsid": "util-linux",
    "hostname": "hostname",
    "nmcli": "network-manager",
    "keepalived": "keepalived",
}


def install_command(programs: list[str]) -> str:
    """``apt-get install -y PKG...`` for these programs (unknown ones by their own name)."""
    return "apt-get install -y " + " ".join(sorted({DEBIAN_PACKAGES.get(p, p) for p in programs}))


@dataclass(frozen=True, slots=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class CommandFailed(PermanentError):
    code = "command_failed"

    def __init__(self, result: Completed) -> None:
        err = (result.stderr or result.stdout).strip().splitlines()
        detail = err[-1] if err else f"exit code {result.returncode}"
        super().__init__(f"`{' '.join(result.argv[:3])}` failed: {detail}")
        self.result = result


# What ``Runner.call`` connects a child's stdin/stdout/stderr to: ``None`` inherits
# ours, a file object or descriptor is used as is (``subprocess.DEVNULL`` works).
Stdio = IO[Any] | int | None


class Runner(Protocol):
    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True,
            timeout: float = 60.0) -> Completed: ...

    def call(self, argv: Sequence[str], *, stdin: Stdio = None, stdout: Stdio = None,
             stderr: Stdio = None, timeout: float | None = None) -> int:
        """Run with the given stdio (bytes, nothing decoded or buffered here); the exit
        code. ``timeout``: the child is stopped and ``TemporaryError`` raised."""
        ...


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingTool(f"`{name}` is not installed: run `{install_command([name])}`",
                          code="missing_tool")
    return path


class SubprocessRunner:
    """Runs programs for real: in this namespace, inside network namespace ``netns``,
    or behind any enter ``prefix`` (the lab's ``ip netns exec`` + ``nsenter``).

    ``env`` replaces the environment (per-call ``env`` is merged on top);
    ``new_session`` puts each command in its own session, so what it leaves running
    (wg-quick's daemonized wireguard-go) does not die with the caller's terminal.
    """

    def __init__(self, netns: str | None = None, *, prefix: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, new_session: bool = False) -> None:
        self.netns = netns
        self.prefix = tuple(prefix) or (("ip", "netns", "exec", netns) if netns else ())
        self.env = dict(env) if env is not None else None
        self.new_session = new_session

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True,
            timeout: float = 60.0, env: Mapping[str, str] | None = None) -> Completed:
        full = [*self.prefix, *argv]
        require_tool(full[0])
        merged = None
        if self.env is not None or env:
            merged = {**(os.environ if self.env is None else self.env), **(env or {})}
        try:
            proc = subprocess.run(full, input=input, capture_output=True, text=True,
                                  timeout=timeout, check=False, env=merged,
                                  stdin=None if input is not None else subprocess.DEVNULL,
                                  start_new_session=self.new_session)
        except subprocess.TimeoutExpired:
            raise TemporaryError(f"`{' '.join(argv[:4])}` did not finish within {timeout:g}s",
                                 code="timeout") from None
        result = Completed(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def call(self, argv: Sequence[str], *, stdin: Stdio = None, stdout: Stdio = None,
             stderr: Stdio = None, timeout: float | None = None,
             env: Mapping[str, str] | None = None) -> int:
        full = [*self.prefix, *argv]
        require_tool(full[0])
        merged = None
        if self.env is not None or env:
            merged = {**(os.environ if self.env is None else self.env), **(env or {})}
        proc = subprocess.Popen(full, stdin=stdin, stdout=stdout, stderr=stderr, env=merged,
                                start_new_session=self.new_session)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(proc)
            raise TemporaryError(f"`{' '.join(argv[:4])}` did not finish within {timeout:g}s",
                                 code="timeout") from None
        except BaseException:  # Ctrl-C: the child goes with us
            stop(proc)
            raise


def stop(proc: subprocess.Popen[Any], grace: float = 2.0) -> None:
    """TERM, then KILL after ``grace`` seconds; always reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


Handler = Callable[[Sequence[str], str | None], Completed | tuple[int, str] | str]


@dataclass
class FakeRunner:
    """A scripted runner for unit tests: records every call; answers by the
    first handler whose prefix matches the argv."""

    handlers: list[tuple[tuple[str, ...], Handler]] = field(default_factory=list)
    calls: list[tuple[tuple[str, ...], str | None]] = field(default_factory=list)

    def on(self, *prefix: str, reply: Handler) -> None:
        self.handlers.append((prefix, reply))

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True,
            timeout: float = 60.0) -> Completed:
        args = tuple(argv)
        self.calls.append((args, input))
        for prefix, handler in self.handlers:
            if args[: len(prefix)] == prefix:
                out = handler(args, input)
                if isinstance(out, Completed):
                    result = out
                elif isinstance(out, tuple):
                    result = Completed(args, out[0], out[1], "" if out[0] == 0 else out[1])
                else:
                    result = Completed(args, 0, out, "")
                if check and not result.ok:
                    raise CommandFailed(result)
                return result
        result = Completed(args, 0, "", "")
        return result

    def call(self, argv: Sequence[str], *, stdin: Stdio = None, stdout: Stdio = None,
             stderr: Stdio = None, timeout: float | None = None) -> int:
        """Like ``run``: the handler's stdout/stderr are written (UTF-8) to file objects
        given as ``stdout``/``stderr``; what ``stdin`` holds is recorded as the input."""
        data = stdin.read() if stdin is not None and hasattr(stdin, "read") else None
        text = data.decode() if isinstance(data, bytes) else data
        result = self.run(argv, input=text, check=False,
                          timeout=60.0 if timeout is None else timeout)
        for stream, value in ((stdout, result.stdout), (stderr, result.stderr)):
            if stream is not None and hasattr(stream, "write") and value:
                stream.write(value.encode())
        return result.returncode


def pid_alive(pid: object) -> bool:
    """Whether a process with this pid exists (one owned by another user counts)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
