"""Before the demo builds anything: the lab's own preflight, said as the demo's."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from fiovpn.lab import preflight


def check(*, euid: Callable[[], int] = os.geteuid,
          which: Callable[[str], str | None] = shutil.which,
          tun: Path = Path("/dev/net/tun")) -> None:
    """Raise a clear error (nothing built yet) when the demo cannot run here."""
    preflight("fiovpn demo", euid=euid, which=which, tun=tun)
