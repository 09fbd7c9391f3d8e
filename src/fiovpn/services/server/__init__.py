"""The WireGuard server, one concept per module:

- ``context``: ``ServerContext``, what a reconcile needs (settings, adapters, memos);
- ``report``: ``ReconcileReport``, what one reconcile saw and did;
- ``reconcile``: ``reconcile_once`` and ``apply_local`` (the only code that writes
  the interface, the firewall table and the hosts block);
- ``hostsfile``: the factory's block in the hosts file;
- ``status``: the ``status.json`` document and ``server status``;
- ``interface``: daemon start-up (interface, factory server file check);
- ``daemon``: the loop around ``reconcile_once``;
- ``clients``: registry edits from the CLI, applied at once;
- ``setup``: ``enable``/``disable``, the settings file and the systemd unit.

The names below are re-exported for callers that import the package.
"""

from fiovpn.services.server.clients import registry
from fiovpn.services.server.context import ServerContext, build_api
from fiovpn.services.server.daemon import BACKOFF_START, FILE_POLL, Daemon
from fiovpn.services.server.interface import check_server_file, ensure_interface
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
    "BACKOFF_START", "FILE_POLL", "TOKEN_ENV", "Daemon", "ReconcileReport", "ServerContext",
    "apply_local", "build_api", "check_server_file", "config_path_for", "disable", "enable",
    "ensure_interface", "fiovpn_command", "reconcile_once", "registry", "render_server_toml",
    "render_unit", "set_setting", "status", "status_document", "unit_path",
]
