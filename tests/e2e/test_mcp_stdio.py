"""``fiovpn mcp`` over stdio with the SDK's stdio client.

The lab test runs the MCP server inside an engineer's namespace of the lab
(``ip netns exec NS env -i ... fiovpn mcp``) and walks an engineer's day through
the tools: setup guide, connect, verify, devices, ssh to a device, device to
device. Every probe of the network runs inside a lab namespace.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

from fiovpn.core.keys import KeyPair
from fiovpn.lab import Engineer, Lab
from fiovpn.mcpserver import TOOL_NAMES

T = TypeVar("T")


def fiovpn_path() -> str:
    sibling = Path(sys.executable).parent / "fiovpn"
    found = str(sibling) if sibling.exists() else shutil.which("fiovpn")
    assert found, "the fiovpn command is not installed"
    return found


def with_client(params: StdioServerParameters, fn: Callable[[Client], Awaitable[T]]) -> T:
    async def main() -> T:
        with anyio.fail_after(240):
            async with Client(params, read_timeout_seconds=120) as client:
                return await fn(client)
    return anyio.run(main)


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, [getattr(c, "text", c) for c in result.content]
    assert result.structured_content is not None
    return result.structured_content


# --- without a lab: the stdio server itself (no network involved) ------------------------

def test_stdio_server_lists_tools_and_help_pages(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    params = StdioServerParameters(
        command=fiovpn_path(), args=["mcp"],
        env={"HOME": str(home), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})

    async def go(client: Client) -> tuple[list[str], str, dict[str, Any]]:
        tools = [t.name for t in (await client.list_tools()).tools]
        page = (await client.read_resource("fiovpn://docs/setup")).contents[0]
        guide = ok(await client.call_tool("setup_foundries_vpn", {}))
        return tools, getattr(page, "text", ""), guide

    tools, page, guide = with_client(params, go)
    assert sorted(tools) == sorted(TOOL_NAMES)
    assert "Engineer" in page
    assert guide["stage"] == "no_config" and "fiovpn client init" in guide["next_step"]
    assert not (home / ".config" / "wireguard").exists(), "the guide changed nothing"


# --- in the lab ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab(make_lab: Callable[..., Lab]) -> Lab:
    """Sandbox factory, a server allowing device-to-device with its daemon synced, two
    devices on the VPN, one engineer not yet set up."""
    lab = make_lab(devices=2, engineers=1,
                   server_settings={"allow-device-to-device": True, "interval": 2})
    lab.server.enable()
    lab.server.start_daemon()
    lab.apply_factory_config()
    lab.server.wait_synced()
    return lab


def mcp_in(lab: Lab, eng: Engineer) -> StdioServerParameters:
    """`fiovpn mcp` inside the engineer's namespace with exactly its environment."""
    enter = list(eng.enter)
    env = [f"{k}={v}" for k, v in sorted(eng.env.items())]
    ip = shutil.which(enter[0]) or enter[0]
    return StdioServerParameters(
        command=ip, args=[*enter[1:], "env", "-i", *env, lab.fiovpn_path, "mcp"])


def run_guide_command(eng: Engineer, command: str) -> str:
    """Run a command exactly as the setup guide printed it (fiovpn ...), in the engineer's
    namespace; its stdout."""
    argv = shlex.split(command)
    assert argv[0] == "fiovpn", command
    return eng.fiovpn(*argv[1:], timeout=60).stdout


async def until(fn: Callable[[], Awaitable[T | None]], *, timeout: float, what: str,
                detail: list[str] | None = None) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await fn()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}: "
                                 f"{detail or ''}")
        await anyio.sleep(0.5)


@pytest.mark.e2e
def test_engineer_day_through_mcp_in_the_lab(lab: Lab) -> None:
    eng = lab.engineers[0]
    device1, device2 = lab.devices
    on_server = Path("/etc/fiovpn/server.toml").exists() or Path(
        "/etc/fiovpn/server.key").exists()

    async def day(client: Client) -> None:
        # 1. The guide: nothing set up yet; its first command creates the config.
        guide = ok(await client.call_tool("setup_foundries_vpn", {"role": "engineer"}))
        assert (guide["flow"], guide["stage"]) == ("engineer", "no_config")
        assert guide["facts"]["this_machine_is_server"] is on_server
        init = guide["steps"][0]["command"]
        assert init.startswith("fiovpn client init")
        run_guide_command(eng, init)
        pub = eng.wg_public_key()
        assert pub is not None

        guide = ok(await client.call_tool("setup_foundries_vpn", {"role": "engineer"}))
        assert guide["stage"] == "no_address" and pub in guide["next_step"]

        # The first admin registers this key on the server (nobody is on the VPN yet),
        # then the engineer sets the address it was given.
        added = lab.server.fiovpn_json("server", "clients", "add", "--config",
                                       str(lab.server.config_path), "--public-key", pub,
                                       "--name", eng.name)
        run_guide_command(eng, f"fiovpn client init --config {eng.config_path} "
                               f"--address {added['ip']}")
        guide = ok(await client.call_tool("setup_foundries_vpn", {}))
        assert guide["stage"] == "not_connected" and "fiovpn connect" in guide["next_step"]

        # 2. Connect and verify.
        connected = ok(await client.call_tool("connect_foundries_vpn", {}))
        assert connected["connected"] is True and connected["changed"] is True

        async def verified() -> dict[str, Any] | None:
            v = ok(await client.call_tool("verify_foundries_vpn_connection", {}))
            return v if v["server_reachable"] else None
        verify = await until(verified, timeout=30, what="the server to answer through MCP")
        assert verify["connected"] is True and verify["handshake_age_s"] is not None

        guide = ok(await client.call_tool("setup_foundries_vpn", {}))
        assert guide["flow"] == "ready", guide
        status = ok(await client.call_tool("foundries_vpn_status", {}))
        assert status["public_key"] == pub and status["address"] == added["ip"]

        # 3. Devices from the factory.
        listed = ok(await client.call_tool("list_foundries_devices", {"vpn": "enabled"}))
        rows = {d["name"]: d for d in listed["devices"]}
        assert rows[device1.device_name]["vpn_ip"] == str(device1.vpn_ip)
        assert rows[device2.device_name]["vpn_ip"] == str(device2.vpn_ip)

        # 4. One command on a device, by name, through the tunnel.
        last: list[str] = []

        async def uname() -> dict[str, Any] | None:
            r = await client.call_tool("ssh_to_device", {"device": device1.device_name,
                                                         "command": "uname -a"})
            if r.is_error:
                last[:] = [getattr(c, "text", "") for c in r.content]
                return None
            return ok(r)
        ran = await until(uname, timeout=30, what="ssh to the device through the tunnel",
                          detail=last)
        assert ran["exit_code"] == 0 and ran["stdout"].startswith("Linux")
        assert ran["ip"] == str(device1.vpn_ip) and ran["stdout_truncated"] is False

        # 5. As an admin on the VPN: register another engineer's key over SSH to the
        #    server's VPN address, check it, remove it.
        other = str(KeyPair.generate().public)
        entry = ok(await client.call_tool("register_foundries_vpn_client",
                                          {"public_key": other, "name": "laptop2"}))
        assert entry["public_key"] == other and entry["ip"] != added["ip"]
        check = ok(await client.call_tool("check_client_peer_registered",
                                          {"public_key": other}))
        assert check["method"] == "server" and check["in_registry"] is True
        assert check["ip"] == entry["ip"]
        gone = ok(await client.call_tool("unregister_foundries_vpn_client",
                                         {"name": "laptop2"}))
        assert [e["public_key"] for e in gone["removed"]] == [other]

        # 6. Device to device on both devices.
        for device in (device1, device2):
            d2d = ok(await client.call_tool("enable_foundries_device_to_device",
                                            {"device": device.device_name}))
            assert d2d["device_to_device"] is True and d2d["changed"] is True
            assert "10.42.42.0/24" in d2d["allowed_ips"]

        down = ok(await client.call_tool("disconnect_foundries_vpn", {}))
        assert down["connected"] is False and down["changed"] is True

    with_client(mcp_in(lab, eng), day)

    # Ground truth from inside the lab's namespaces, never from the root namespace.
    assert "10.42.42.0/24" in device1.server_allowed_ips()
    assert lab.ping(device1, str(device2.vpn_ip), timeout=20), "device1 -> device2"
