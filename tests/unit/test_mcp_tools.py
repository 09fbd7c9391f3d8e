"""The MCP tools, in process through the SDK's ``Client``, over fakes of fiovpn's services."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from mcp import Client
from mcp.types import CallToolResult

from fiovpn.adapters.factory_api import ConfigEntry, ConfigFile, Device, WireguardIp
from fiovpn.adapters.runner import FakeRunner
from fiovpn.core import wgquick
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
    runner: FakeRunner = dataclasses.field(default_factory=FakeRunner)
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
            runner=self.runner,
            key_path=lambda: self.tmp / "wg" / "foundries.key",
            server_markers=(self.tmp / "etc" / "server.toml",),
        )


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    # SSH control sockets go to $XDG_RUNTIME_DIR/fiovpn: keep them in the test's dir.
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir(mode=0o700)
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
                 "list_foundries_devices",
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


# --- devices (the real services/devices.py over a fake FactoryApi) ----------------------

DEV_KEYS = {n: KeyPair.generate().public for n in ("dev-a", "dev-b", "dev-c")}


def client_file(value: str) -> list[ConfigEntry]:
    return [ConfigEntry("t", "r", (ConfigFile("wireguard-client", value, True,
                                              (VPN_HANDLER,)),))]


@pytest.fixture
def fleet(world: World) -> World:
    api = world.api
    api.devices = [Device(name=n, uuid=f"u-{n}", status="OK", last_seen="2026-11-25",
                          target_name="lmp-42", device_group="lab") for n in DEV_KEYS]
    api.ips = [WireguardIp("dev-a", ip_address("10.42.42.2"), True, DEV_KEYS["dev-a"]),
               WireguardIp("dev-b", None, False, DEV_KEYS["dev-b"])]
    api.device_configs = {
        "dev-a": client_file(f"address=10.42.42.2\npubkey={DEV_KEYS['dev-a']}"),
        "dev-b": client_file(f"pubkey={DEV_KEYS['dev-b']}"),
        "dev-c": [],
    }
    return world


def test_list_devices_carries_what_the_cli_json_carries(fleet: World) -> None:
    data = ok(call(fleet.services(), "list_foundries_devices"))
    assert data["factory"] == "acme" and data["total"] == 3
    rows = {d["name"]: d for d in data["devices"]}
    assert rows["dev-a"] == {
        "name": "dev-a", "status": "OK", "vpn_ip": "10.42.42.2", "vpn_enabled": True,
        "last_seen": "2026-11-25", "target": "lmp-42", "pubkey": str(DEV_KEYS["dev-a"]),
        "uuid": "u-dev-a", "device_group": "lab"}
    assert rows["dev-b"]["vpn_enabled"] is False and rows["dev-b"]["vpn_ip"] is None


def test_list_devices_filters(fleet: World) -> None:
    enabled = ok(call(fleet.services(), "list_foundries_devices", {"vpn": "enabled"}))
    assert [d["name"] for d in enabled["devices"]] == ["dev-a"] and enabled["total"] == 3
    disabled = ok(call(fleet.services(), "list_foundries_devices",
                       {"vpn": "disabled", "name_contains": "c"}))
    assert [d["name"] for d in disabled["devices"]] == ["dev-c"]
    bad = call(fleet.services(), "list_foundries_devices", {"vpn": "maybe"})
    assert bad.is_error


def test_enable_vpn_device_picks_the_next_free_ip_and_patches(fleet: World) -> None:
    data = ok(call(fleet.services(), "enable_foundries_vpn_device", {"device": "dev-b"}))
    assert data["name"] == "dev-b" and data["vpn_ip"] == "10.42.42.3"
    assert data["vpn_enabled"] is True and data["changed"] is True
    assert "next reconcile" in data["message"]
    [(device, _reason, files)] = fleet.api.patches
    assert device == "dev-b"
    assert files[0].value == f"address=10.42.42.3\npubkey={DEV_KEYS['dev-b']}"


def test_enable_vpn_twice_changes_nothing(fleet: World) -> None:
    data = ok(call(fleet.services(), "enable_foundries_vpn_device", {"device": "dev-a"}))
    assert data["changed"] is False and data["vpn_ip"] == "10.42.42.2"
    assert "already enabled" in data["message"]
    assert fleet.api.patches == []


def test_enable_vpn_without_device_pubkey_is_a_clear_error(fleet: World) -> None:
    text = error_text(call(fleet.services(), "enable_foundries_vpn_device",
                           {"device": "dev-c"}))
    assert "has not published a VPN public key" in text and "[no_pubkey]" in text
    assert fleet.api.patches == []


def test_unknown_device_and_bad_name_change_nothing(fleet: World) -> None:
    text = error_text(call(fleet.services(), "enable_foundries_vpn_device",
                           {"device": "ghost"}))
    assert "not found" in text and "fiovpn devices list" in text
    text = error_text(call(fleet.services(), "disable_foundries_vpn_device",
                           {"device": "a;reboot"}))
    assert "invalid device name" in text and "nothing was changed" in text
    assert fleet.api.patches == []


def test_disable_vpn_device_keeps_the_ip(fleet: World) -> None:
    data = ok(call(fleet.services(), "disable_foundries_vpn_device", {"device": "dev-a"}))
    assert data == {"name": "dev-a", "vpn_ip": "10.42.42.2", "vpn_enabled": False,
                    "changed": True, "message": data["message"]}
    [(_dev, _reason, files)] = fleet.api.patches
    assert files[0].value.endswith("\nenabled=0")


# --- this machine: the real services/client.py over a FakeRunner ------------------------

CLIENT = KeyPair.generate()


def write_config(world: World, *, address: str | None = "10.42.42.200") -> Path:
    path = world.tmp / "wg" / "foundries.conf"
    doc = wgquick.new_client_config(
        private_key=CLIENT.private,
        address=wgquick.parse_interface(address) if address else None,
        server_public_key=SERVER_KEY.public, endpoint="vpn.example.com:5555",
        allowed_ips=ip_network("10.42.42.0/24"), server_address=ip_address("10.42.42.1"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc.render())
    return path


@dataclasses.dataclass
class FakeTunnel:
    """wg / wg-quick / ping as the client services see them, scripted on a FakeRunner."""

    runner: FakeRunner
    up: bool = False
    registered: bool = True  # does the server answer our handshakes?
    handshake: int = 0

    def __post_init__(self) -> None:
        self.runner.on("wg", "show", reply=self._show)
        self.runner.on("wg-quick", "up", reply=self._up)
        self.runner.on("wg-quick", "down", reply=self._down)
        self.runner.on("ping", reply=self._ping)

    def _show(self, _argv: Any, _input: Any) -> tuple[int, str]:
        if not self.up:
            return 1, "Unable to access interface: No such device"
        head = f"{CLIENT.private}\t{CLIENT.public}\t51820\toff"
        peer = (f"{SERVER_KEY.public}\t(none)\tvpn.example.com:5555\t10.42.42.0/24\t"
                f"{self.handshake}\t1000\t2000\t25")
        return 0, f"{head}\n{peer}\n"

    def _up(self, _argv: Any, _input: Any) -> tuple[int, str]:
        self.up = True
        return 0, ""

    def _down(self, _argv: Any, _input: Any) -> tuple[int, str]:
        self.up = False
        return 0, ""

    def _ping(self, _argv: Any, _input: Any) -> tuple[int, str]:
        if self.up and self.registered:
            self.handshake = int(time.time()) - 3
            return 0, "1 received"
        return 1, "0 received"


@pytest.fixture
def tunnel(world: World) -> FakeTunnel:
    return FakeTunnel(world.runner)


def argvs(world: World) -> list[tuple[str, ...]]:
    return [argv for argv, _input in world.runner.calls]


def test_connect_brings_the_tunnel_up_once(world: World, tunnel: FakeTunnel) -> None:
    config = write_config(world)
    data = ok(call(world.services(), "connect_foundries_vpn"))
    assert data["connected"] is True and data["changed"] is True
    assert data["interface"] == "foundries" and data["backend"] == "wg-quick"
    assert ("wg-quick", "up", str(config)) in argvs(world)
    again = ok(call(world.services(), "connect_foundries_vpn"))
    assert again["changed"] is False and "already connected" in again["message"]
    assert argvs(world).count(("wg-quick", "up", str(config))) == 1


def test_connect_with_another_config_names_the_interface_after_it(
        world: World, tunnel: FakeTunnel) -> None:
    other = world.tmp / "vpn" / "lab0.conf"
    other.parent.mkdir()
    other.write_text(write_config(world).read_text())
    data = ok(call(world.services(), "connect_foundries_vpn", {"config": str(other)}))
    assert data["interface"] == "lab0" and data["config"] == str(other)
    assert world.settings_flags[-1] == {"config": str(other)}


def test_connect_without_config_says_run_client_init(world: World, tunnel: FakeTunnel) -> None:
    text = error_text(call(world.services(), "connect_foundries_vpn"))
    assert "does not exist" in text and "fiovpn client init" in text
    assert not tunnel.up


def test_disconnect(world: World, tunnel: FakeTunnel) -> None:
    write_config(world)
    tunnel.up = True
    data = ok(call(world.services(), "disconnect_foundries_vpn"))
    assert data["connected"] is False and data["changed"] is True and not tunnel.up
    again = ok(call(world.services(), "disconnect_foundries_vpn"))
    assert again["changed"] is False and "already disconnected" in again["message"]


def test_status_reports_the_server_peer(world: World, tunnel: FakeTunnel) -> None:
    write_config(world)
    down = ok(call(world.services(), "foundries_vpn_status"))
    assert down["connected"] is False and down["peer"] is None
    assert down["public_key"] == str(CLIENT.public) and down["address"] == "10.42.42.200"
    tunnel.up, tunnel.handshake = True, int(time.time()) - 30
    up = ok(call(world.services(), "foundries_vpn_status"))
    assert up["connected"] is True and up["server_address"] == "10.42.42.1"
    assert up["peer"]["public_key"] == str(SERVER_KEY.public)
    assert 25 <= up["peer"]["handshake_age_s"] <= 60
    assert (up["peer"]["rx"], up["peer"]["tx"]) == (1000, 2000)


def test_verify_ok_and_not_connected(world: World, tunnel: FakeTunnel) -> None:
    write_config(world)
    down = ok(call(world.services(), "verify_foundries_vpn_connection"))
    assert down["connected"] is False and down["server_reachable"] is False
    assert "connect_foundries_vpn" in down["message"]
    assert not any(a[0] == "ping" for a in argvs(world))  # nothing pinged while down
    tunnel.up = True
    up = ok(call(world.services(), "verify_foundries_vpn_connection"))
    assert up["connected"] and up["server_reachable"] and up["handshake_age_s"] is not None
    assert ("ping", "-n", "-c", "1", "-W", "2", "10.42.42.1") in argvs(world)


def test_verify_unregistered_key_says_what_to_do(world: World, tunnel: FakeTunnel) -> None:
    write_config(world)
    tunnel.up, tunnel.registered = True, False
    data = ok(call(world.services(), "verify_foundries_vpn_connection"))
    assert data["server_reachable"] is False and data["handshake_age_s"] is None
    assert "not registered" in data["message"]


def test_check_registered_locally_by_handshake(world: World, tunnel: FakeTunnel) -> None:
    write_config(world)
    data = ok(call(world.services(), "check_client_peer_registered"))
    assert data["registered"] is True and data["method"] == "handshake"
    assert data["public_key"] == str(CLIENT.public)
    assert not tunnel.up, "the tunnel it brought up for the check is down again"


def test_wg_needs_root_is_a_clear_error(world: World) -> None:
    write_config(world)
    world.runner.on("wg", "show", reply=lambda _a, _i: (1, "Operation not permitted"))
    text = error_text(call(world.services(), "foundries_vpn_status"))
    assert "needs root" in text


# --- setup_foundries_vpn ------------------------------------------------------------------

def setup(world: World, **args: Any) -> dict[str, Any]:
    return ok(call(world.services(), "setup_foundries_vpn", args))


def test_setup_fresh_engineer_starts_with_client_init(world: World, tunnel: FakeTunnel) -> None:
    data = setup(world)
    assert (data["flow"], data["stage"]) == ("engineer", "no_config")
    assert "fiovpn client init" in data["next_step"]
    # a config outside the default place is named in every command, so they copy-paste
    config = world.tmp / "wg" / "foundries.conf"
    assert data["steps"][0]["command"] == f"fiovpn client init --config {config}"
    assert any("fiovpn register --public-key" in st["command"] for st in data["steps"])
    assert data["facts"]["config_exists"] is False and data["facts"]["connected"] is False
    assert "fiovpn://docs/setup" in data["docs"]
    assert world.runner.calls == [], "a machine without config is not probed"


def test_setup_on_the_server_is_the_first_admin_flow(world: World, tunnel: FakeTunnel) -> None:
    marker = world.tmp / "etc" / "server.toml"
    marker.parent.mkdir()
    marker.write_text("factory = 'acme'\n")
    write_config(world, address=None)
    data = setup(world)
    assert (data["flow"], data["stage"]) == ("first_admin", "no_address")
    assert f"fiovpn server clients add --public-key {CLIENT.public}" in data["next_step"]
    assert data["facts"]["this_machine_is_server"] is True
    assert data["facts"]["public_key"] == str(CLIENT.public)
    forced = setup(world, role="engineer")
    assert forced["flow"] == "engineer" and "fiovpn register" in forced["next_step"]


def test_setup_key_file_only_shows_the_public_key(world: World, tunnel: FakeTunnel) -> None:
    key = world.tmp / "wg" / "foundries.key"
    key.parent.mkdir(parents=True)
    key.write_text(f"{CLIENT.private}\n")
    data = setup(world, role="first_admin")
    assert data["flow"] == "first_admin" and data["stage"] == "no_config"
    assert data["facts"]["key_file_exists"] is True
    assert data["facts"]["public_key"] == str(CLIENT.public)
    assert str(CLIENT.private) not in str(data)


def test_setup_not_connected_then_no_handshake_then_ready(world: World,
                                                          tunnel: FakeTunnel) -> None:
    write_config(world)
    down = setup(world)
    assert (down["flow"], down["stage"]) == ("engineer", "not_connected")
    assert "fiovpn connect" in down["next_step"]
    assert not tunnel.up, "setup changes nothing"
    tunnel.up, tunnel.registered = True, False
    stuck = setup(world)
    assert stuck["stage"] == "no_handshake"
    assert f"fiovpn register --public-key {CLIENT.public}" in stuck["next_step"]
    tunnel.registered = True
    ready = setup(world)
    assert (ready["flow"], ready["stage"]) == ("ready", "ready")
    assert ready["facts"]["handshake_age_s"] is not None
    assert "list_foundries_devices" in ready["next_step"]


def test_setup_broken_config_names_the_line(world: World, tunnel: FakeTunnel) -> None:
    path = world.tmp / "wg" / "foundries.conf"
    path.parent.mkdir(parents=True)
    path.write_text("[Interface]\nAddress = banana\n")
    text = error_text(call(world.services(), "setup_foundries_vpn"))
    assert "line 2" in text and "banana" in text
