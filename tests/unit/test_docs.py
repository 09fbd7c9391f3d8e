"""The help pages served to AI assistants (MCP resources) match what fiovpn says."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "fiovpn"


def error_codes_in_source() -> set[str]:
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        found |= set(re.findall(r'code\s*=\s*"([a-z_]+)"', path.read_text()))
    return found


def documented_codes() -> set[str]:
    page = resources.files("fiovpn").joinpath("docs", "troubleshooting.md").read_text()
    section = page[page.index("## Error codes"):]
    return set(re.findall(r"`([a-z_]+)`", section))


def test_every_documented_error_code_is_one_fiovpn_raises() -> None:
    assert documented_codes() <= error_codes_in_source()


def test_the_codes_users_meet_most_are_documented() -> None:
    common = {"bad_ip", "bad_key", "bad_name", "no_config", "unknown_device",
              "ssh_unreachable", "ssh_host_key", "ssh_auth", "connect_failed",
              "not_vpn_ip", "remote_failed"}
    assert common <= documented_codes()
