"""Where fioctl's settings come from: the environment variables it reads and the
location of its config file. Kept apart from :mod:`fiovpn.adapters.fioctl` (the
file's parser and the OAuth refresh) because the device cache keys every lookup on
them, and ``fiovpn ssh`` by a cached name should not load the rest."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

CONFIG_ENV = "FIOCTL_CONFIG"
TOKEN_ENV = "FIOCTL_TOKEN"  # noqa: S105 (a variable name, not a secret)
FACTORY_ENV = "FIOCTL_FACTORY"


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$FIOCTL_CONFIG``, else ``~/.config/fioctl.yaml``."""
    env = os.environ if env is None else env
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser()
    return Path(env.get("HOME") or Path.home()) / ".config" / "fioctl.yaml"
