"""Placeholder: commands of this noun are being built (see the open issues)."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    """Add this module's commands to the root group."""
