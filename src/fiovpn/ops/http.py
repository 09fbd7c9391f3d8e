"""The daemon's HTTP listener: uvicorn serving :func:`~fiovpn.ops.app.build_app`
in a thread of the daemon, on a socket bound before the thread starts (a
taken port or a wrong address is one clear error at daemon start)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

import uvicorn
from starlette.applications import Starlette

from fiovpn.core.listen import Listen
from fiovpn.errors import PermanentError

log = logging.getLogger("fiovpn.server")


class HttpServer:
    """``start()`` binds and serves; ``stop()`` ends it (both idempotent)."""

    def __init__(self, app: Starlette, listen: Listen) -> None:
        self.listen = listen
        self.config = uvicorn.Config(app, log_level="warning", access_log=False,
                                     lifespan="off", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(self.config)
        self.thread: threading.Thread | None = None
        self.sock: socket.socket | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.bind()
        self.serve(timeout)

    def bind(self) -> None:
        """Take the address and port now (the daemon does this before its first
        pass, so a taken port stops it at once); nothing is answered yet."""
        if self.sock is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((str(self.listen.address), self.listen.port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise PermanentError(
                f"cannot serve HTTP on {self.listen}: {exc.strerror or exc}",
                code="http_listen_failed",
                hint="use the server's VPN address and a free port in --http "
                     "(or `http` in the settings)") from None
        self.sock = sock

    def serve(self, timeout: float = 10.0) -> None:
        """Answer requests from now on (the daemon: once its firewall is in place)."""
        if self.thread is not None:
            return
        self.bind()
        self.thread = threading.Thread(target=self._run, name="fiovpn-http", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise PermanentError(f"the HTTP server on {self.listen} did not start",
                                     code="http_listen_failed")
            time.sleep(0.02)
        log.info("serving /metrics, the dashboard and /api/status on http://%s/", self.listen)

    def _run(self) -> None:
        assert self.sock is not None
        try:
            asyncio.run(self.server.serve(sockets=[self.sock]))
        except Exception:  # the daemon's reconcile goes on without its web page
            log.exception("the HTTP server on %s stopped", self.listen)

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout)
            self.thread = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
