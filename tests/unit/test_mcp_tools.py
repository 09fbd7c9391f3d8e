"""The MCP tools, in process through the SDK's ``Client``, over fakes of fiovpn's services."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from mcp import Client
from mcp.types import CallToolResult

from fiovpn.adapters.factory_api import ConfigEntry, ConfigFile, Device, WireguardIp
from fiovpn.core.factory_files import VPN_HANDLER
from fiovpn.core.keys import KeyPair
from fiovpn.errors import AuthError
from fiovpn.mcpserver import TOOL_NAMES, Services, build_server
from fiovpn.settings import ClientSettings

T = TypeVar("T")

SERVER_KEY = KeyPair.generate()
SECRET_WORDS = re.compile(r"pass(word|wd)?|secret|token|private|credential", re.I)


def run(fn: Callable[[Client], Awaitable[T]], services: Services) -> T:
    async def main() -> T:
        async with Client(build_server(services)) as client:
            return await fn(client)
    return anyio.run(main)


def call(services: Services, tool: str, args: Mapping[str, Any] | None = None) -> CallToolResult:
    async def go(client: Client) -> CallToolResult:
        return await client.call_tool(tool, dict(args or {}))
    return run(go, services)


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    assert result.is_error
    return " ".join(getattr(c, "text", "") for c in result.content)


@dataclasses.dataclass
class FakeFactory:
    """A fake of fiovpn's own FactoryApi (not of HTTP)."""

    factory: str = "acme"
    config: list[ConfigEntry] = dataclasses.field(default_factory=list)
    devices: list[Device] = dataclasses.field(default_factory=list)
    ips: list[WireguardIp] = dataclasses.field(default_factory=list)
    device_configs: dict[str, list[ConfigEntry]] = dataclasses.field(default_factory=dict)
    patches: list[tuple[str, str, list[ConfigFile]]] = dataclasses.field(default_factory=list)
    closed: bool = False
    fail: Exception | None = None

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    def wireguard_ips(self) -> list[WireguardIp]:
        self._check()
        return list(self.ips)

    def factory_config(self) -> list[ConfigEntry]:
        self._check()
        return list(self.config)

    def patch_factory_config(self, reason: str, files: list[ConfigFile]) -> None:
        self.patches.append(("factory", reason, files))

    def device_config(self, device: str) -> list[ConfigEntry]:
        self._check()
        return list(self.device_configs.get(device, []))

    def patch_device_config(self, device: str, reason: str, files: list[ConfigFile]) -> None:
        self._check()
        self.patches.append((device, reason, files))
        entry = ConfigEntry("now", reason, tuple(files))
        self.device_configs[device] = [entry, *self.device_configs.get(device, [])]

    def list_devices(self) -> list[Device]:
        self._check()
        return list(self.devices)

    def get_device(self, device: str) -> Device:
        self._check()
        for d in self.devices:
            if d.name == device:
                return d
        from fiovpn.errors import ApiNotFound
        raise ApiNotFound(f"device {device} not found in factory {self.factory}")

    def close(self) -> None:
        self.closed = True


def server_file(enabled: bool = True) -> ConfigEntry:
    value = (f"endpoint=vpn.example.com:5555\nserver_address=10.42.42.1\n"
             f"pubkey={SERVER_KEY.public}")
    if not enabled:
        value += "\nenabled=0"
    return ConfigEntry("2026-01-01T00:00:00", "enable",
                       (ConfigFile("wireguard-server", value, True, (VPN_HANDLER,)),))


@dataclasses.dataclass
class World:
    """The fakes behind one ``Services`` bundle, and what the tools asked of them."""

    tmp: Path
    api: FakeFactory
    settings_flags: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def services(self) -> Services:
        def load_settings(flags: Mapping[str, Any]) -> ClientSettings:
            self.settings_flags.append(dict(flags))
            config = Path(flags.get("config") or self.tmp / "wg" / "foundries.conf")
            return ClientSettings(config=config, factory=flags.get("factory", "acme"),
                                  known_hosts=self.tmp / "known_hosts")

        return Services(
            load_settings=load_settings,
            factory=lambda _settings: self.api,
            key_path=lambda: self.tmp / "wg" / "foundries.key",
            server_markers=(self.tmp / "etc" / "server.toml",),
        )


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp=tmp_path, api=FakeFactory(config=[server_file()]))


# --- schema --------------------------------------------------------------------------

REQUIRED = {
    "connect_foundries_vpn": set(),
    "disconnect_foundries_vpn": set(),
    "foundries_vpn_status": set(),
    "verify_foundries_vpn_connection": set(),
    "check_client_peer_registered": set(),
    "register_foundries_vpn_client": {"public_key"},
    "unregister_foundries_vpn_client": set(),
    "list_foundries_devices": set(),
    "enable_foundries_vpn_device": {"device"},
    "disable_foundries_vpn_device": {"device"},
    "enable_foundries_device_to_device": {"device"},
    "ssh_to_device": {"device", "command"},
    "get_foundries_vpn_server_config": set(),
    "setup_foundries_vpn": set(),
}


def _property_names(schema: Any) -> list[str]:
    """Every property name anywhere in a JSON schema (nested objects and $defs too)."""
    names: list[str] = []
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "properties" and isinstance(value, dict):
                names.extend(value)
            names.extend(_property_names(value))
    elif isinstance(schema, list):
        for item in schema:
            names.extend(_property_names(item))
    return names


def test_every_tool_is_listed_with_its_required_parameters(world: World) -> None:
    async def go(client: Client) -> Any:
        return (await client.list_tools()).tools
    tools = {t.name: t for t in run(go, world.services())}
    assert set(tools) == set(TOOL_NAMES) == set(REQUIRED)
    for name, tool in tools.items():
        assert set(tool.input_schema.get("required", [])) == REQUIRED[name], name
        assert tool.description and len(tool.description) > 40, name
        assert tool.output_schema is not None, f"{name} has no structured output"
        for prop, spec in tool.input_schema.get("properties", {}).items():
            assert spec.get("description"), f"{name}.{prop} has no description"
        hints = tool.annotations
        assert hints is not None, name
        assert hints.read_only_hint is not None, name
        assert hints.destructive_hint is not None, name
        assert hints.idempotent_hint is not None, name


def test_no_tool_takes_a_password_token_or_secret(world: World) -> None:
    async def go(client: Client) -> Any:
        return (await client.list_tools()).tools
    for tool in run(go, world.services()):
        for prop in _property_names(tool.input_schema):
            assert not SECRET_WORDS.search(prop), f"{tool.name} takes {prop!r}"


def test_read_only_tools_are_marked_read_only(world: World) -> None:
    async def go(client: Client) -> Any:
        return (await client.list_tools()).tools
    hints = {t.name: t.annotations for t in run(go, world.services())}
    for name in ("foundries_vpn_status", "verify_foundries_vpn_connection",
                 "check_client_peer_registered", "list_foundries_devices",
                 "get_foundries_vpn_server_config", "setup_foundries_vpn"):
        assert hints[name] is not None and hints[name].read_only_hint is True, name
    for name in ("disconnect_foundries_vpn", "unregister_foundries_vpn_client",
                 "disable_foundries_vpn_device", "ssh_to_device"):
        assert hints[name] is not None and hints[name].destructive_hint is True, name
        assert hints[name].read_only_hint is False, name


def test_choices_are_enums(world: World) -> None:
    async def go(client: Client) -> Any:
        return (await client.list_tools()).tools
    tools = {t.name: t for t in run(go, world.services())}
    role = tools["setup_foundries_vpn"].input_schema["properties"]["role"]
    assert role["enum"] == ["auto", "first_admin", "engineer"]
    vpn = tools["list_foundries_devices"].input_schema["properties"]["vpn"]
    assert vpn["enum"] == ["all", "enabled", "disabled"]


# --- resources ------------------------------------------------------------------------

def test_help_pages_are_resources(world: World) -> None:
    async def go(client: Client) -> tuple[Any, Any, Any]:
        listed = (await client.list_resources()).resources
        setup = await client.read_resource("fiovpn://docs/setup")
        trouble = await client.read_resource("fiovpn://docs/troubleshooting")
        return listed, setup, trouble
    listed, setup, trouble = run(go, world.services())
    assert {str(r.uri) for r in listed} >= {"fiovpn://docs/setup",
                                            "fiovpn://docs/troubleshooting"}
    setup_text = setup.contents[0].text
    assert "First admin" in setup_text and "fiovpn server clients add" in setup_text
    assert "fiovpn register --public-key" in setup_text
    assert "check-registered" in trouble.contents[0].text


# --- get_foundries_vpn_server_config ----------------------------------------------------

def test_server_config_is_parsed(world: World) -> None:
    data = ok(call(world.services(), "get_foundries_vpn_server_config"))
    assert data == {
        "factory": "acme", "endpoint": "vpn.example.com:5555",
        "endpoint_host": "vpn.example.com", "endpoint_port": 5555,
        "server_address": "10.42.42.1", "pubkey": str(SERVER_KEY.public), "enabled": True,
    }
    assert world.api.closed


def test_server_config_disabled_and_factory_parameter(world: World) -> None:
    world.api.config = [server_file(enabled=False), server_file()]
    data = ok(call(world.services(), "get_foundries_vpn_server_config", {"factory": "other"}))
    assert data["enabled"] is False
    assert world.settings_flags[-1] == {"factory": "other"}


def test_server_config_missing_says_how_to_enable(world: World) -> None:
    world.api.config = []
    text = error_text(call(world.services(), "get_foundries_vpn_server_config"))
    assert "fiovpn server enable" in text


def test_api_auth_error_says_where_the_token_comes_from(world: World) -> None:
    world.api.fail = AuthError("the FoundriesFactory API refused the token (401)")
    text = error_text(call(world.services(), "get_foundries_vpn_server_config"))
    assert "401" in text and "[auth]" in text and "FIOVPN_API_TOKEN" in text


def test_bad_factory_name_is_refused_by_the_settings_loader(world: World,
                                                            tmp_path: Path) -> None:
    from fiovpn.settings import load_client
    services = dataclasses.replace(
        world.services(),
        load_settings=lambda flags: load_client(flags, env={"HOME": str(tmp_path)}))
    text = error_text(call(services, "get_foundries_vpn_server_config", {"factory": "a;rm"}))
    assert "invalid factory name" in text and "[bad_name]" in text
