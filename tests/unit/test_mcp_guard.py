"""MCP guardrails through the SDK's in-process client: --read-only serves only
read-only tools, --allow-devices refuses other devices, every device-touching
call (allowed or refused) is a journal line with detail.via = mcp."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from mcp import Client
from tests.unit.test_mcp_tools import (
    FakeDeviceSsh,
    World,
    error_text,
    ok,
    world,  # noqa: F401 - the fixture
    write_config,
)
from tests.unit.test_mcp_tools import fleet as _fleet  # noqa: F401 - the fixture

from fiovpn.mcpserver import build_server
from fiovpn.mcpserver.guard import Guard


@pytest.fixture
def guarded(request: pytest.FixtureRequest) -> World:
    found: World = request.getfixturevalue("_fleet")
    return found


def tools(w: World, guard: Guard) -> list[tuple[str, bool]]:
    async def main() -> list[tuple[str, bool]]:
        async with Client(build_server(w.services(), guard)) as client:
            listed = await client.list_tools()
            return [(t.name, bool(t.annotations and t.annotations.read_only_hint))
                    for t in listed.tools]
    return anyio.run(main)


def call(w: World, guard: Guard, tool: str, args: dict[str, object]) -> object:
    async def main() -> object:
        async with Client(build_server(w.services(), guard)) as client:
            return await client.call_tool(tool, args)
    return anyio.run(main)


def journal() -> list[dict[str, object]]:
    import os

    path = Path(os.environ["FIOVPN_JOURNAL"])
    if not path.exists():
        return []
    return [json.loads(t) for t in path.read_text().splitlines()]


def test_read_only_lists_no_destructive_tool(guarded: World) -> None:
    listed = tools(guarded, Guard(read_only=True))
    names = {n for n, _ in listed}
    assert listed and all(ro for _, ro in listed)
    assert {"foundries_vpn_status", "list_foundries_devices"} <= names
    for destructive in ("ssh_to_device", "disable_foundries_vpn_device",
                        "unregister_foundries_vpn_client", "register_foundries_vpn_client"):
        assert destructive not in names
    assert len(tools(guarded, Guard())) > len(listed)


def test_allow_devices_refuses_other_devices_and_journals_both(guarded: World) -> None:
    write_config(guarded)
    ssh = FakeDeviceSsh(guarded.runner)
    ssh.replies["id"] = (0, "uid=0\n", "")
    guard = Guard(allow_devices="dev-*")
    text = error_text(call(guarded, guard, "ssh_to_device",  # type: ignore[arg-type]
                           {"device": "prod-1", "command": "id"}))
    assert "refused" in text and "prod-1" in text and "dev-*" in text
    assert ssh.commands == []  # nothing ran
    text = error_text(call(guarded, guard, "ssh_to_device",  # type: ignore[arg-type]
                           {"device": "10.42.42.2", "command": "id"}))
    assert "refused" in text  # an IP does not get around the glob
    data = ok(call(guarded, guard, "ssh_to_device",  # type: ignore[arg-type]
                   {"device": "dev-a", "command": "id"}))
    assert data["stdout"] == "uid=0\n"
    lines = journal()
    assert [(ln["action"], ln["target"], ln["detail"]) for ln in lines] == [
        ("ssh_to_device", "prod-1", {"via": "mcp", "allowed": False}),
        ("ssh_to_device", "10.42.42.2", {"via": "mcp", "allowed": False}),
        ("ssh_to_device", "dev-a", {"via": "mcp", "allowed": True})]
    assert all(set(ln) == {"at", "actor", "action", "target", "detail"} for ln in lines)
