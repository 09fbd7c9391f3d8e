"""Options several commands share, defined once so their help never drifts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def api_options(fn: F) -> F:
    """``--factory``, ``--api-url``, ``--api-token-file`` (flags > env > settings file)."""
    fn = click.option("--api-token-file", "api_token_file",
                      type=click.Path(dir_okay=False, path_type=Path), default=None,
                      help="File (0600) holding the FoundriesFactory API token "
                           "(default: $FIOVPN_API_TOKEN, else fioctl's login).")(fn)
    fn = click.option("--api-url", "api_url", default=None,
                      help="FoundriesFactory API URL (default: $FIOVPN_API_URL, else "
                           "https://api.foundries.io).")(fn)
    fn = click.option("--factory", default=None,
                      help="Factory name (default: $FIOVPN_FACTORY, else fioctl's).")(fn)
    return fn
