"""The daemon's control socket: how the CLI (and so ``register`` over SSH and the
MCP tools) asks the running daemon to change live state.

Transport: a Unix stream socket ``<state dir>/control.sock``, mode 0600 in the
0700 state directory; the daemon also checks the caller's uid (``SO_PEERCRED``):
root or its own uid only.

Protocol: newline-delimited JSON, one request per line, one response per line::

    -> {"op": "clients.add", "params": {...}, "requester": {...}}
    <- {"ok": true, "result": {...}}
    <- {"ok": false, "error": {"code", "message", "hint", "exit_code", "kind"}}

``requester`` is what the caller says about itself (``user``, ``sudo_user``,
``ssh_client``, ``command``); the daemon adds what the kernel says (``uid``,
``pid``) and logs both. Operations live in ``ops.py`` (one table, used by the
daemon and, with no daemon running, by the CLI itself).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import pwd
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fiovpn.errors import (
    BadInput,
    Conflict,
    FiovpnError,
    NotFound,
    PermanentError,
    TemporaryError,
)

log = logging.getLogger("fiovpn.server")

SOCKET_NAME = "control.sock"
REQUEST_TIMEOUT = 30.0  # a registry edit + local apply takes well under a second
MAX_LINE = 1 << 20
_SUN_PATH_MAX = 107


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


# --------------------------------------------------------------------------- requester


@dataclass(frozen=True)
class Requester:
    """Who asked for a change. ``uid``/``pid`` come from the kernel (the socket's
    peer credentials) when the request came over the socket; the rest is what the
    caller's environment says (``SUDO_USER``, ``SSH_CLIENT``), reported as such."""

    uid: int | None = None
    pid: int | None = None
    user: str | None = None
    sudo_user: str | None = None
    ssh_client: str | None = None
    command: str | None = None

    @classmethod
    def of_this_process(cls, command: str | None = None,
                        env: Mapping[str, str] | None = None) -> Requester:
        env = os.environ if env is None else env
        ssh = (env.get("SSH_CLIENT") or env.get("SSH_CONNECTION") or "").split()
        return cls(uid=os.getuid(), pid=os.getpid(), user=_user_name(os.getuid()),
                   sudo_user=env.get("SUDO_USER") or None,
                   ssh_client=ssh[0] if ssh else None, command=command)

    def to_json(self) -> dict[str, Any]:
        return {"user": self.user, "sudo_user": self.sudo_user,
                "ssh_client": self.ssh_client, "command": self.command}

    @classmethod
    def from_wire(cls, data: Any, *, uid: int | None, pid: int | None) -> Requester:
        said = data if isinstance(data, dict) else {}

        def text(name: str) -> str | None:
            value = said.get(name)
            return str(value)[:128] if isinstance(value, str) and value else None

        return cls(uid=uid, pid=pid, user=_user_name(uid) if uid is not None else None,
                   sudo_user=text("sudo_user"), ssh_client=text("ssh_client"),
                   command=text("command"))

    def describe(self) -> str:
        """One short phrase for the log: ``uid 0 (root) pid 42, sudo from alice,
        ssh from 10.42.42.200``."""
        parts = []
        if self.uid is not None:
            parts.append(f"uid {self.uid}" + (f" ({self.user})" if self.user else "")
                         + (f" pid {self.pid}" if self.pid is not None else ""))
        if self.sudo_user:
            parts.append(f"sudo from {self.sudo_user}")
        if self.ssh_client:
            parts.append(f"ssh from {self.ssh_client}")
        return ", ".join(parts) or "unknown"

    def cause(self) -> str:
        """Why a change happens, for one log line per change."""
        what = f"`{self.command}`" if self.command else "a request"
        return f"{what} asked by {self.describe()}"


def _user_name(uid: int | None) -> str | None:
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


# --------------------------------------------------------------------------- errors


def error_to_json(exc: FiovpnError) -> dict[str, Any]:
    kind = ("conflict" if isinstance(exc, Conflict) else
            "not_found" if isinstance(exc, NotFound) else
            "bad_input" if isinstance(exc, BadInput) else
            "temporary" if isinstance(exc, TemporaryError) else "permanent")
    return {"code": exc.code, "message": exc.message, "hint": exc.hint,
            "exit_code": exc.exit_code, "kind": kind}


def error_from_json(data: Any) -> FiovpnError:
    if not isinstance(data, dict):
        return PermanentError(f"the daemon answered an error it did not describe: {data!r}"
                              [:200], code="bad_control_answer")
    message = str(data.get("message") or "the daemon refused the request")
    code = str(data.get("code") or "error")
    hint = data.get("hint") if isinstance(data.get("hint"), str) else None
    classes: dict[str, type[FiovpnError]] = {
        "conflict": Conflict, "not_found": NotFound, "bad_input": BadInput,
        "temporary": TemporaryError}
    cls = classes.get(str(data.get("kind")), PermanentError)
    return cls(message, code=code, hint=hint)


# --------------------------------------------------------------------------- client


class NoDaemon(Exception):
    """Nobody listens on the control socket."""


@dataclass
class ControlClient:
    """Ask the daemon listening in ``state_dir``: ``request(op, params)`` returns
    its ``result`` or raises the error it answered (same code and exit code)."""

    state_dir: Path
    timeout: float = REQUEST_TIMEOUT

    @property
    def path(self) -> Path:
        return socket_path(self.state_dir)

    def request(self, op: str, params: Mapping[str, Any] | None = None, *,
                requester: Requester | None = None) -> dict[str, Any]:
        requester = requester or Requester.of_this_process()
        line = json.dumps({"op": op, "params": dict(params or {}),
                           "requester": requester.to_json()}) + "\n"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.path))
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise NoDaemon(str(exc)) from None
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
                    raise NoDaemon(str(exc)) from None
                raise PermanentError(f"cannot reach the daemon's control socket {self.path}: "
                                     f"{exc.strerror or exc}", code="control_failed",
                                     hint="run this as root (the socket is root only)"
                                     ) from None
            try:
                sock.sendall(line.encode())
                answer = _read_line(sock)
            except TimeoutError:
                raise TemporaryError(
                    f"the daemon did not answer within {self.timeout:.0f} s on {self.path}",
                    code="daemon_timeout",
                    hint="the change may still be applied: check with `fiovpn server "
                         "clients list` and `fiovpn server status`") from None
            except OSError as exc:
                raise TemporaryError(f"the daemon closed its control socket: {exc}",
                                     code="daemon_gone",
                                     hint="check the daemon's log; then retry") from None
        finally:
            sock.close()
        if answer is None:
            raise TemporaryError("the daemon closed its control socket without answering",
                                 code="daemon_gone", hint="check the daemon's log; then retry")
        try:
            data = json.loads(answer)
        except ValueError:
            raise PermanentError(f"the daemon answered something that is not JSON: "
                                 f"{answer[:80]!r}", code="bad_control_answer") from None
        if not isinstance(data, dict):
            raise PermanentError("the daemon's answer is not a JSON object",
                                 code="bad_control_answer")
        if not data.get("ok"):
            raise error_from_json(data.get("error"))
        result = data.get("result")
        return result if isinstance(result, dict) else {"value": result}


def _read_line(sock: socket.socket) -> str | None:
    buf = b""
    while b"\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None if not buf else buf.decode(errors="replace")
        buf += chunk
        if len(buf) > MAX_LINE:
            raise PermanentError("the control message is too long", code="bad_control_answer")
    return buf.split(b"\n", 1)[0].decode(errors="replace")


# --------------------------------------------------------------------------- server


@dataclass(frozen=True)
class Request:
    op: str
    params: dict[str, Any]
    requester: Requester


Dispatch = Callable[[Request], dict[str, Any]]


@dataclass
class ControlServer:
    """Listens on ``<state dir>/control.sock`` and answers each request line with
    ``dispatch(request)``; every connection gets its own thread, so one slow
    request (a registry lock held by someone else) never blocks the others."""

    state_dir: Path
    dispatch: Dispatch
    _sock: socket.socket | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _closing: bool = False

    @property
    def path(self) -> Path:
        return socket_path(self.state_dir)

    def start(self) -> None:
        path = self.path
        if len(str(path).encode()) > _SUN_PATH_MAX:
            raise PermanentError(f"the state directory path is too long for a Unix socket "
                                 f"({path})", code="state_dir_failed",
                                 hint="use a shorter --state-dir")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(self.state_dir, 0o700)
        # We hold the daemon lock: a socket file left here is a dead daemon's.
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(path))
        except OSError as exc:
            sock.close()
            raise PermanentError(f"cannot create the control socket {path}: "
                                 f"{exc.strerror or exc}", code="state_dir_failed") from None
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(64)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept, name="fiovpn-control",
                                        daemon=True)
        self._thread.start()
        log.info("control socket %s listening (root only)", path)

    def close(self) -> None:
        self._closing = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _accept(self) -> None:
        while not self._closing and self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                if self._closing:
                    return
                continue
            threading.Thread(target=self._serve, args=(conn,), name="fiovpn-control-conn",
                             daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            uid, pid = _peer_credentials(conn)
            allowed = uid is not None and uid in (0, os.getuid())
            conn.settimeout(REQUEST_TIMEOUT)
            buf = b""
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                if len(buf) > MAX_LINE:
                    return
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    answer = (self._answer(line, uid, pid) if allowed else _refuse(uid))
                    try:
                        conn.sendall((json.dumps(answer) + "\n").encode())
                    except OSError:
                        return

    def _answer(self, line: bytes, uid: int | None, pid: int | None) -> dict[str, Any]:
        try:
            data = json.loads(line)
            if not isinstance(data, dict) or not isinstance(data.get("op"), str):
                raise BadInput("a control request is a JSON object with an \"op\"",
                               code="bad_request")
            params = data.get("params") or {}
            if not isinstance(params, dict):
                raise BadInput("\"params\" must be a JSON object", code="bad_request")
            request = Request(data["op"], params,
                              Requester.from_wire(data.get("requester"), uid=uid, pid=pid))
            return {"ok": True, "result": self.dispatch(request)}
        except ValueError:
            return {"ok": False, "error": error_to_json(
                BadInput("the control request is not JSON", code="bad_request"))}
        except FiovpnError as exc:
            return {"ok": False, "error": error_to_json(exc)}
        except Exception as exc:  # the daemon must outlive a bad request
            log.exception("control request failed")
            return {"ok": False, "error": error_to_json(
                PermanentError(f"the daemon failed on this request: {exc}",
                               code="daemon_error"))}


def _refuse(uid: int | None) -> dict[str, Any]:
    return {"ok": False, "error": error_to_json(PermanentError(
        f"uid {uid} may not change the server: the control socket is root only",
        code="forbidden", hint="run the command as root (sudo)"))}


def _peer_credentials(conn: socket.socket) -> tuple[int | None, int | None]:
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None, None
    pid, uid, _gid = struct.unpack("3i", raw)
    return uid, pid
