"""The WireGuard server, one concept per module:

- ``context``: ``ServerContext``, what a reconcile needs (settings, adapters, memos);
- ``report``: ``ReconcileReport``, what one reconcile saw and did;
- ``reconcile``: ``reconcile_once`` and ``apply_local`` (the only code that writes
  the interface, the firewall table and the hosts block);
- ``hostsfile``: the factory's block in the hosts file;
- ``status``: the ``status.json`` document and ``server status``;
- ``interface``: daemon start-up (interface, factory server file check);
- ``daemon``: the loop around ``reconcile_once``;
- ``control``: the daemon's control socket (newline-delimited JSON, root only);
- ``announce``: where a running daemon says so (``run-dir``), so every CLI finds it;
- ``ops``: the operations callers ask for (``ask``), run by the daemon when it
  runs, else by the caller with the daemon's recorded settings;
- ``debounce``: a registry read that looks cut short waits to be seen twice;
- ``clients``: the client registry as the CLI reads it;
- ``setup``: ``enable``/``disable``, the settings file and the systemd unit.

The names below are re-exported for callers that import the package.
"""

from fiovpn.services.server.clients import registry
from fiovpn.services.server.context import ServerContext, build_api
from fiovpn.services.server.control import ControlClient, ControlServer, Request, Requester
from fiovpn.services.server.daemon import BACKOFF_START, FILE_POLL, Daemon
from fiovpn.services.server.interface import check_server_file, ensure_interface
from fiovpn.services.server.ops import (
    OPS,
    Op,
    ask,
    dispatch,
    effective_settings,
    live_settings,
)
from fiovpn.services.server.reconcile import apply_local, reconcile_once
from fiovpn.services.server.report import ReconcileReport
from fiovpn.services.server.setup import (
    TOKEN_ENV,
    config_path_for,
    disable,
    enable,
    fiovpn_command,
    render_server_toml,
    render_unit,
    set_setting,
    unit_path,
)
from fiovpn.services.server.status import status, status_document

__all__ = [
    "BACKOFF_START",
    "FILE_POLL",
    "OPS",
    "TOKEN_ENV",
    "ControlClient",
    "ControlServer",
    "Daemon",
    "Op",
    "ReconcileReport",
    "Request",
    "Requester",
    "ServerContext",
    "apply_local",
    "ask",
    "build_api",
    "check_server_file",
    "config_path_for",
    "disable",
    "dispatch",
    "effective_settings",
    "enable",
    "ensure_interface",
    "fiovpn_command",
    "live_settings",
    "reconcile_once",
    "registry",
    "render_server_toml",
    "render_unit",
    "set_setting",
    "status",
    "status_document",
    "unit_path",
]
