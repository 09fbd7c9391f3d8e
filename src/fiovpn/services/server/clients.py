"""Registry edits from the CLI: the client registry, with every change applied
to the live interface at once."""

from __future__ import annotations

from fiovpn.services.registry import ClientRegistry, LiveInterface
from fiovpn.services.server.context import ServerContext
from fiovpn.services.server.reconcile import apply_local


def registry(ctx: ServerContext, *, apply_now: bool = False) -> ClientRegistry:
    """The client registry, checked against cached devices; with ``apply_now``
    every change reaches the live interface at once (when it exists)."""
    live = LiveInterface(ctx.wg, ctx.settings.interface)
    on_change = (lambda: apply_local(ctx)) if apply_now else None
    return ClientRegistry(ctx.settings.clients_file, ctx.network, state=ctx.state,
                          server_key=ctx.server_key, live=live, on_change=on_change)
