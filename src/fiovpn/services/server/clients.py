"""The client registry as the CLI reads it (``list``, ``check``). Changes go
through ``ops.ask`` (``clients.add`` / ``clients.remove``): applied by the
daemon when it runs, so it stays the only writer of live state."""

from __future__ import annotations

from fiovpn.services.registry import ClientRegistry, LiveInterface
from fiovpn.services.server.context import ServerContext


def registry(ctx: ServerContext) -> ClientRegistry:
    """The client registry, checked against cached devices, with the live
    interface to read (never written from here)."""
    live = LiveInterface(ctx.wg, ctx.settings.interface)
    return ClientRegistry(ctx.settings.clients_file, ctx.network, state=ctx.state,
                          server_key=ctx.server_key, live=live)
