"""Where a running daemon says that it runs, so every CLI finds it: see
:mod:`fiovpn.services.run_dir` (kept outside this package, so that ``server
health`` finds the daemon without loading it)."""

from __future__ import annotations

from fiovpn.services.run_dir import (
    Announced,
    RunDir,
    find_daemon,
    netns_id,
    running_daemon,
)

__all__ = ["Announced", "RunDir", "find_daemon", "netns_id", "running_daemon"]
