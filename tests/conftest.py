"""Shared test setup.

End-to-end tests (marked ``e2e``) need root and the lab's tools; they are
skipped with the reason when those are missing, never silently passed.
"""

from __future__ import annotations

import os
import shutil

import pytest

LAB_TOOLS = ("ip", "wg", "wireguard-go", "nft", "sshd", "ssh", "ping")


def lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the namespace lab needs root"
    missing = [t for t in LAB_TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (see .ci/run)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = lab_unavailable()
    if reason is None:
        return
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))
