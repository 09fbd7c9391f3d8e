"""Daemon start-up: the WireGuard interface, and the factory's
``wireguard-server`` file checked against this server's key and address."""

from __future__ import annotations

import logging

from fiovpn.adapters.factory_api import current_file
from fiovpn.core.factory_files import (
    WIREGUARD_SERVER_FILE,
    ServerConfigFile,
)
from fiovpn.core.keys import Key, public_key
from fiovpn.errors import BadInput, FiovpnError, PermanentError
from fiovpn.services.server.context import ServerContext

log = logging.getLogger("fiovpn.server")


def ensure_interface(ctx: ServerContext, private_key: Key) -> str:
    """Create the interface if missing and (re)apply key, port and address.
    Existing peers are untouched. Returns how: existing | kernel | wireguard-go."""
    s = ctx.settings
    how = "existing"
    if not ctx.wg.interface_exists(s.interface):
        how = ctx.wg.create_interface(s.interface)
        log.info("created WireGuard interface %s (%s)", s.interface, how)
    ctx.wg.configure(s.interface, private_key=private_key, port=s.port,
                     address=ctx.network.server, prefix=ctx.network.subnet.prefixlen)
    # Forwarding is switched on by the reconcile, once the policy table is in place.
    return how


def check_server_file(ctx: ServerContext, private_key: Key) -> ServerConfigFile | None:
    """The factory's ``wireguard-server`` file, its pubkey checked against our key.

    Raises ``PermanentError`` on a mismatch (devices would never handshake);
    returns None (with a warning) when the API cannot be read right now.
    """
    if ctx.api is None:
        return None
    try:
        entries = ctx.api.factory_config()
    except FiovpnError as exc:
        log.warning("cannot read the factory's %s file now (%s): continuing with the "
                    "last good state", WIREGUARD_SERVER_FILE, exc)
        return None
    cfile = current_file(entries, WIREGUARD_SERVER_FILE)
    if cfile is None:
        log.warning("the factory has no %s file: devices will not find this server; run "
                    "`fiovpn server enable --endpoint HOST`", WIREGUARD_SERVER_FILE)
        return None
    try:
        server = ServerConfigFile.parse(cfile.value)
    except BadInput as exc:
        raise PermanentError(
            f"the factory's {WIREGUARD_SERVER_FILE} file is malformed ({exc.message}): "
            "devices cannot use it", code="server_file_malformed",
            hint="rewrite it with `fiovpn server enable --endpoint HOST`") from None
    mine = public_key(private_key)
    if server.pubkey != mine:
        raise PermanentError(
            f"the factory's {WIREGUARD_SERVER_FILE} file announces public key "
            f"{server.pubkey}, but {ctx.settings.private_key} belongs to {mine}: devices "
            "would never connect", code="server_key_mismatch",
            hint="run `fiovpn server enable --endpoint HOST` to publish this key, or point "
                 "--private-key at the key the factory knows")
    if server.server_address != ctx.network.server:
        raise PermanentError(
            f"the factory's {WIREGUARD_SERVER_FILE} file announces server address "
            f"{server.server_address}, but this daemon uses {ctx.network.server}: devices "
            "would route to an address nobody answers", code="server_address_mismatch",
            hint="run `fiovpn server enable --endpoint HOST` to publish this address, or "
                 f"set address = \"{server.server_address}\" in the settings file")
    if not server.enabled:
        log.warning("the factory's %s file says enabled=0: devices keep their VPN off "
                    "until `fiovpn server enable`", WIREGUARD_SERVER_FILE)
    return server
