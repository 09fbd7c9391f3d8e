"""Output and errors shared by every command.

A command function returns a ``Result``: ``data`` is what ``--json`` prints on
stdout; ``human`` is what a person sees (a string or any rich renderable).
Errors become one clear line on stderr (and ``{"error": {...}}`` on stdout
with ``--json``) and the exit code of their class: 2 bad input, 1 failure.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec

import click
from rich.console import Console, RenderableType
from rich.markup import escape

from fiovpn.errors import FiovpnError, from_os_error

P = ParamSpec("P")

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)


@dataclass
class Result:
    data: Any
    human: RenderableType | None = None
    exit_code: int = 0


def json_mode() -> bool:
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if ctx.meta.get("fiovpn.json"):
            return True
        ctx = ctx.parent
    return False


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta["fiovpn.json"] = True
    return value


json_option = click.option(
    "--json", "json_flag", is_flag=True, expose_value=False, is_eager=True,
    callback=_set_json, help="Print machine-readable JSON on stdout.",
)


def emit_error(exc: FiovpnError) -> None:
    message = str(exc)
    if json_mode():
        click.echo(json.dumps({"error": {"code": exc.code, "message": message}}))
    # the message is text, not markup: "ADDRESS[/PREFIX]" must print as it is
    stderr.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)


def emit(result: Result) -> None:
    if json_mode():
        click.echo(json.dumps(result.data, indent=2, default=str))
    elif result.human is not None:
        stdout.print(result.human, highlight=False)


def command(fn: Callable[P, Result]) -> Callable[P, None]:
    """Wrap a command: adds ``--json``, prints the ``Result``, maps errors to exit codes.

    Use under ``@group.command()`` and above the ``@click.option``s.
    """

    @json_option
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            result = fn(*args, **kwargs)
        except FiovpnError as exc:
            emit_error(exc)
            sys.exit(exc.exit_code)
        except OSError as exc:
            # A file or device the services did not expect to fail: one clear line,
            # never a traceback.
            emit_error(from_os_error(exc))
            sys.exit(1)
        except KeyboardInterrupt:
            stderr.print("interrupted")
            sys.exit(130)
        emit(result)
        if result.exit_code:
            sys.exit(result.exit_code)

    return wrapper


def progress(message: str) -> None:
    """A progress line on stderr (never pollutes ``--json`` stdout)."""
    stderr.print(f"[dim]…[/] {message}", highlight=False)


def warn(message: str) -> None:
    """A warning on stderr: the command still succeeds (never pollutes ``--json``)."""
    stderr.print(f"[bold yellow]warning:[/] {message}", markup=True, highlight=False)
