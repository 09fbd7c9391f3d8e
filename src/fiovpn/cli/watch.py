"""``--watch``: redraw a view in place until Ctrl-C (rich ``Live``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text


def watch(fetch: Callable[[], Any], render: Callable[[Any], RenderableType], *,
          interval: float, console: Console, as_json: bool = False,
          sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], str] | None = None) -> int:
    """Fetch and redraw every ``interval`` seconds until Ctrl-C (then 0).

    With ``as_json`` one compact JSON document a line instead (for scripts)."""
    stamp = clock or (lambda: time.strftime("%H:%M:%S"))
    try:
        if as_json:
            while True:
                click.echo(json.dumps(fetch(), separators=(",", ":"), default=str))
                sleep(interval)
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while True:
                view = render(fetch())
                footer = Text(f"updated {stamp()} · every {interval:g} s · Ctrl-C to stop",
                              style="dim")
                live.update(_stack(view, footer), refresh=True)
                sleep(interval)
    except KeyboardInterrupt:
        return 0


def _stack(*parts: RenderableType) -> RenderableType:
    from rich.console import Group

    return Group(*parts)
