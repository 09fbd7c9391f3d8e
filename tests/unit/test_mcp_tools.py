"""The MCP tools, in process through the SDK's ``Client``, over fakes of fiovpn's services."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import time
from collections.abc import Awaitable, Callable, Mapping
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from mcp import Client
from mcp.types import CallToolResult
from tests.unit.fake_lmp import HOOK as LMP_HOOK
from tests.unit.fake_lmp import KEYFILE as LMP_KEYFILE
from tests.unit.fake_lmp import FakeLmpDevice

from fiovpn.adapters.factory_api import ConfigEntry, ConfigFile, Device, WireguardIp
from fiovpn.adapters.runner import Completed, FakeRunner
from fiovpn.core import wgquick
from fiovpn.core.factory_files import VPN_HANDLER
from fiovpn.core.keys import KeyPair
from fiovpn.errors import AuthError, TemporaryError
from fiovpn.mcpserver import TOOL_NAMES, Services, build_server, guide
from fiovpn.services import client
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
    waited: float = 0.0  # seconds the probes slept (a fake clock: no real waiting)

    def monotonic(self) -> float:
        return self.waited

    def sleep(self, seconds: float) -> None:
        self.waited += seconds

    def services(self) -> Services:
        (self.tmp / "known_hosts").touch()  # a real file: fiovpn checks it exists

        def load_settings(flags: Mapping[str, Any]) -> ClientSettings:
            self.settings_flags.append(dict(flags))
            config = Path(flags.get("config") or self.tmp / "wg" / "foundries.conf")
            return ClientSettings(config=config, factory=flags.get("factory", "acme"),
                                  user=flags.get("user", "fio"),
                                  known_hosts=self.tmp / "known_hosts")

        return Services(
            load_settings=load_settings,
            factory=lambda _settings: self.api,
            runner=self.runner,
            key_path=lambda: self.tmp / "wg" / "foundries.key",
            server_markers=(self.tmp / "etc" / "server.toml",),
            probe_server=lambda s, r: client.probe_server(
                s, r, monotonic=self.monotonic, sleep=self.sleep),
            check_registered_local=lambda s, r: client.check_registered_local(
                s, r, monotonic=self.monotonic, sleep=self.sleep),
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
    "foundries_device_to_device_status": {"device"},
    "ssh_to_device": {"device", "command"},
    "get_foundries_vpn_server_config": set(),
    "setup_foundries_vpn": set(),
    "exec_on_devices": {"command"},
    "copy_to_device": {"device", "local_path", "remote_path"},
    "copy_from_device": {"device", "remote_path", "local_path"},
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
        "uuid": "u-dev-a", "device_group": "lab", "group": "lab", "tag": None,
        "online": False}
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
                    "changed": True, "reachable_after_s": None, "message": data["message"]}
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


def test_right_after_the_key_was_removed_nothing_says_registered(
        world: World, tunnel: FakeTunnel) -> None:
    """The last handshake is 10 s old but the server no longer answers this key."""
    write_config(world)
    tunnel.up, tunnel.registered, tunnel.handshake = True, False, int(time.time()) - 10
    check = ok(call(world.services(), "check_client_peer_registered"))
    assert check["registered"] is False
    assert "fiovpn register --public-key" in check["next_step"]
    assert world.waited < 10, "answers within seconds"
    world.waited = 0
    guide_ = ok(call(world.services(), "setup_foundries_vpn", {"role": "engineer"}))
    assert guide_["stage"] == "no_handshake" and guide_["flow"] != "ready"
    assert guide_["facts"]["server_answers"] is False
    assert world.waited < 10


def test_wg_needs_root_is_a_clear_error(world: World) -> None:
    write_config(world)
    world.runner.on("wg", "show", reply=lambda _a, _i: (1, "Operation not permitted"))
    text = error_text(call(world.services(), "foundries_vpn_status"))
    assert "needs root" in text


# --- setup_foundries_vpn ------------------------------------------------------------------

def setup(world: World, **args: Any) -> dict[str, Any]:
    return ok(call(world.services(), "setup_foundries_vpn", args))


def test_setup_on_a_bare_machine_without_elicitation_answers_choose(
        world: World, tunnel: FakeTunnel) -> None:
    """Not the server, no config: only the user knows whether they are the first admin.
    A client without elicitation gets the question and both branches (SPEC 12)."""
    data = setup(world)
    assert (data["flow"], data["stage"]) == ("choose", "no_config")
    assert data["question"] == guide.FIRST_ADMIN_QUESTION
    assert "first admin" in data["question"] and data["question"] in data["next_step"]
    assert data["answered"] is None
    branches = {b["flow"]: b for b in data["branches"]}
    assert set(branches) == {"first_admin", "engineer"}
    assert branches["first_admin"]["answer"] == "yes" and branches["engineer"]["answer"] == "no"
    admin_cmds = [st["command"] for st in branches["first_admin"]["steps"]]
    engineer_cmds = [st["command"] for st in branches["engineer"]["steps"]]
    assert any("fiovpn server clients add --public-key" in c for c in admin_cmds)
    assert any("fiovpn register --public-key" in c for c in engineer_cmds)
    # a config outside the default place is named in every command, so they copy-paste;
    # both branches start with client init: that is the common first step
    config = world.tmp / "wg" / "foundries.conf"
    assert data["steps"][0]["command"] == f"fiovpn client init --config {config}"
    assert admin_cmds[0] == engineer_cmds[0] == data["steps"][0]["command"]
    assert data["facts"]["config_exists"] is False and data["facts"]["connected"] is False
    assert "fiovpn://docs/setup" in data["docs"]
    assert world.runner.calls == [], "a machine without config is not probed"


Answer = Callable[[Any, Any], Awaitable[Any]]


def setup_asking(world: World, answer: Answer, **args: Any) -> dict[str, Any]:
    """setup_foundries_vpn through a client whose user answers elicitations."""
    async def main() -> CallToolResult:
        async with Client(build_server(world.services()), elicitation_callback=answer) as c:
            return await c.call_tool("setup_foundries_vpn", args)
    return ok(anyio.run(main))


def user_says(first_admin: bool | None, asked: list[str]) -> Answer:
    from mcp.types import ElicitResult

    async def answer(_ctx: Any, params: Any) -> ElicitResult:
        asked.append(params.message)
        assert params.requested_schema["properties"]["first_admin"]["type"] == "boolean"
        if first_admin is None:
            return ElicitResult(action="decline")
        return ElicitResult(action="accept", content={"first_admin": first_admin})
    return answer


def test_setup_asks_the_first_admin_question_yes(world: World, tunnel: FakeTunnel) -> None:
    asked: list[str] = []
    data = setup_asking(world, user_says(True, asked))
    assert asked == [guide.FIRST_ADMIN_QUESTION]
    assert (data["flow"], data["stage"], data["answered"]) == ("first_admin", "no_config",
                                                                "first_admin")
    assert any("fiovpn server clients add" in st["command"] for st in data["steps"])
    assert data["question"] is None and data["branches"] == []


def test_setup_asks_the_first_admin_question_no(world: World, tunnel: FakeTunnel) -> None:
    asked: list[str] = []
    write_config(world, address=None)
    data = setup_asking(world, user_says(False, asked))
    assert len(asked) == 1
    assert (data["flow"], data["stage"], data["answered"]) == ("engineer", "no_address",
                                                                "engineer")
    assert f"fiovpn register --public-key {CLIENT.public}" in data["next_step"]


def test_setup_declined_question_answers_choose(world: World, tunnel: FakeTunnel) -> None:
    asked: list[str] = []
    data = setup_asking(world, user_says(None, asked))
    assert len(asked) == 1 and data["flow"] == "choose" and len(data["branches"]) == 2


def test_setup_asks_nothing_where_the_machine_can_tell(world: World,
                                                       tunnel: FakeTunnel) -> None:
    asked: list[str] = []
    # a role given: no question
    assert setup_asking(world, user_says(True, asked), role="engineer")["flow"] == "engineer"
    # the WireGuard server itself: the first admin
    marker = world.tmp / "etc" / "server.toml"
    marker.parent.mkdir()
    marker.write_text("factory = 'acme'\n")
    assert setup_asking(world, user_says(False, asked))["flow"] == "first_admin"
    # connected and the server answers: ready
    marker.unlink()
    write_config(world)
    tunnel.up = True
    assert setup_asking(world, user_says(False, asked))["flow"] == "ready"
    assert asked == []


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
    down = setup(world, role="engineer")
    assert (down["flow"], down["stage"]) == ("engineer", "not_connected")
    assert "fiovpn connect" in down["next_step"]
    assert not tunnel.up, "setup changes nothing"
    assert setup(world)["flow"] == "choose"  # not the server, no role: only the user knows
    tunnel.up, tunnel.registered = True, False
    stuck = setup(world, role="engineer")
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


# --- registration: the real services/remote.py, ssh answered by a FakeRunner -------------

ENGINEER = KeyPair.generate().public


def remote_command(argv: tuple[str, ...]) -> list[str]:
    """The remote command the ssh argv carries (the last word, shell-quoted)."""
    return shlex.split(argv[-1])


@dataclasses.dataclass
class FakeServerSsh:
    """`ssh root@10.42.42.1 fiovpn server clients ...` as the real server CLI answers."""

    runner: FakeRunner
    clients: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.runner.on("ssh", reply=self._ssh)

    def _ssh(self, argv: Any, _input: Any) -> tuple[int, str]:
        cmd = remote_command(argv)
        assert cmd[:3] == ["fiovpn", "server", "clients"] and cmd[-1] == "--json", cmd
        verb, args = cmd[3], dict(zip(cmd[4:-1:2], cmd[5:-1:2], strict=False))
        if verb == "add":
            key = args["--public-key"]
            if key in self.clients:
                return 2, json.dumps({"error": {"code": "conflict",
                                                "message": f"{key} is already registered"}})
            entry = {"public_key": key, "ip": f"10.42.42.{200 + len(self.clients)}",
                     "name": args.get("--name")}
            self.clients[key] = entry
            return 0, json.dumps(entry)
        if verb == "remove":
            found = [e for e in self.clients.values()
                     if e["public_key"] == args.get("--public-key")
                     or (e["name"] is not None and e["name"] == args.get("--name"))]
            if not found:
                return 2, json.dumps({"error": {"code": "not_found",
                                                "message": "no such client"}})
            for e in found:
                del self.clients[e["public_key"]]
            return 0, json.dumps(found[0] if len(found) == 1 else found)
        if verb == "check":
            e = self.clients.get(args["--public-key"])
            return 0, json.dumps({"registered": e is not None, "in_registry": e is not None,
                                  "on_interface": e is not None,
                                  "ip": e["ip"] if e else None})
        raise AssertionError(cmd)


@pytest.fixture
def server_ssh(world: World) -> FakeServerSsh:
    return FakeServerSsh(world.runner)


def test_register_assigns_an_ip_over_ssh_with_host_keys_checked(
        world: World, server_ssh: FakeServerSsh) -> None:
    data = ok(call(world.services(), "register_foundries_vpn_client",
                   {"public_key": str(ENGINEER), "name": "alice"}))
    assert data == {"public_key": str(ENGINEER), "ip": "10.42.42.200", "name": "alice"}
    [argv] = argvs(world)
    assert "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv
    assert f"UserKnownHostsFile={world.tmp / 'known_hosts'}" in argv
    assert argv[argv.index("--") + 1] == "10.42.42.1" and "5025" in argv
    assert remote_command(argv) == ["fiovpn", "server", "clients", "add", "--public-key",
                                    str(ENGINEER), "--ip", "auto", "--name", "alice", "--json"]


def test_register_twice_is_a_conflict_error(world: World, server_ssh: FakeServerSsh) -> None:
    ok(call(world.services(), "register_foundries_vpn_client", {"public_key": str(ENGINEER)}))
    text = error_text(call(world.services(), "register_foundries_vpn_client",
                           {"public_key": str(ENGINEER)}))
    assert "already registered" in text and "[conflict]" in text


def test_register_bad_key_or_name_never_reaches_ssh(world: World,
                                                    server_ssh: FakeServerSsh) -> None:
    text = error_text(call(world.services(), "register_foundries_vpn_client",
                           {"public_key": "not-a-key"}))
    assert "public key" in text and "nothing was changed" in text
    text = error_text(call(world.services(), "register_foundries_vpn_client",
                           {"public_key": str(ENGINEER), "name": "bob; rm -rf /"}))
    assert "invalid client name" in text
    assert world.runner.calls == []


def test_check_registered_on_the_server_and_unregister(world: World,
                                                       server_ssh: FakeServerSsh) -> None:
    before = ok(call(world.services(), "check_client_peer_registered",
                     {"public_key": str(ENGINEER)}))
    assert before["registered"] is False and before["method"] == "server"
    assert "register_foundries_vpn_client" in before["message"]
    ok(call(world.services(), "register_foundries_vpn_client",
            {"public_key": str(ENGINEER), "name": "alice"}))
    after = ok(call(world.services(), "check_client_peer_registered",
                    {"public_key": str(ENGINEER)}))
    assert after["registered"] is True and after["ip"] == "10.42.42.200"
    gone = ok(call(world.services(), "unregister_foundries_vpn_client", {"name": "alice"}))
    assert gone == {"removed": [{"public_key": str(ENGINEER), "ip": "10.42.42.200",
                                 "name": "alice"}]}
    assert server_ssh.clients == {}
    text = error_text(call(world.services(), "unregister_foundries_vpn_client",
                           {"name": "alice"}))
    assert "no such client" in text and "[not_found]" in text


def test_unregister_needs_exactly_one_of_key_or_name(world: World,
                                                     server_ssh: FakeServerSsh) -> None:
    for args in ({}, {"public_key": str(ENGINEER), "name": "alice"}):
        text = error_text(call(world.services(), "unregister_foundries_vpn_client", args))
        assert "exactly one" in text
    assert world.runner.calls == []


def test_server_host_key_failure_says_how_to_fix(world: World) -> None:
    world.runner.on("ssh", reply=lambda _a, _i: (255, "Host key verification failed."))
    text = error_text(call(world.services(), "register_foundries_vpn_client",
                           {"public_key": str(ENGINEER)}))
    assert "host key verification failed" in text and "known_hosts" in text


# --- devices over SSH: ssh_to_device and device-to-device --------------------------------

KEYFILE_TEXT = (Path(__file__).parent.parent / "data" / "factory-vpn0.nmconnection").read_text()


@dataclasses.dataclass
class FakeDeviceSsh:
    """`ssh root@<device>` for one device: runs `sh -c CMD` from a script, and keeps its
    LmP device (keyfile, hook, live peers) for the d2d commands."""

    runner: FakeRunner
    replies: dict[str, tuple[int, str, str]] = dataclasses.field(default_factory=dict)
    device: FakeLmpDevice = dataclasses.field(
        default_factory=lambda: FakeLmpDevice(KEYFILE_TEXT))
    commands: list[list[str]] = dataclasses.field(default_factory=list)

    @property
    def keyfile(self) -> str:
        return self.device.files[LMP_KEYFILE]

    def __post_init__(self) -> None:
        self.runner.on("ssh", reply=self._ssh)

    def _ssh(self, argv: Any, stdin: str | None) -> Completed:
        cmd = remote_command(argv)
        if cmd[:3] == ["sudo", "-n", "--"]:  # device-side changes as a non-root user
            cmd = cmd[3:]
        self.commands.append(cmd)
        host = argv[argv.index("--") + 1]
        assert host == "10.42.42.2", host
        if cmd[:2] == ["sh", "-c"]:
            code, out, err = self.replies.get(cmd[2], (127, "", f"sh: {cmd[2]}: not found"))
            return Completed(tuple(argv), code, out, err)
        self.device.commands = self.commands
        return self.device.handle(argv, stdin)


@pytest.fixture
def device_ssh(fleet: World) -> FakeDeviceSsh:
    write_config(fleet)
    return FakeDeviceSsh(fleet.runner)


def test_ssh_runs_one_command_by_device_name(fleet: World, device_ssh: FakeDeviceSsh) -> None:
    device_ssh.replies["uname -a"] = (0, "Linux dev-a 6.6.0 aarch64\n", "")
    data = ok(call(fleet.services(), "ssh_to_device",
                   {"device": "dev-a", "command": "uname -a", "user": "root"}))
    assert data == {
        "device": "dev-a", "ip": "10.42.42.2", "user": "root", "command": "uname -a",
        "exit_code": 0, "stdout": "Linux dev-a 6.6.0 aarch64\n", "stderr": "",
        "stdout_truncated": False, "stderr_truncated": False,
        "stdout_bytes": 26, "stderr_bytes": 0, "stdout_escaped": False,
        "stderr_escaped": False}
    [argv] = argvs(fleet)
    assert "StrictHostKeyChecking=yes" in argv and argv[argv.index("-l") + 1] == "root"
    assert device_ssh.commands == [["sh", "-c", "uname -a"]]


def test_ssh_nonzero_exit_is_a_result_not_retried(fleet: World,
                                                  device_ssh: FakeDeviceSsh) -> None:
    device_ssh.replies["false"] = (1, "", "")
    data = ok(call(fleet.services(), "ssh_to_device",
                   {"device": "10.42.42.2", "command": "false"}))
    assert data["exit_code"] == 1 and data["user"] == "fio"
    assert len(argvs(fleet)) == 1, "the command ran exactly once"
    assert fleet.api.patches == []


def test_ssh_output_is_capped_and_says_so(fleet: World, device_ssh: FakeDeviceSsh) -> None:
    device_ssh.replies["dmesg"] = (0, "é" * 1000, "warn\n" * 10)
    data = ok(call(fleet.services(), "ssh_to_device",
                   {"device": "dev-a", "command": "dmesg", "max_output_bytes": 301}))
    assert data["stdout_truncated"] is True and data["stdout_bytes"] == 2000
    assert data["stdout"] == "é" * 150  # cut at 300 bytes, never mid-character
    assert data["stderr_truncated"] is False and data["stderr"] == "warn\n" * 10


def test_ssh_timeout_is_reported_without_killing_or_retrying(fleet: World) -> None:
    write_config(fleet)

    def slow(_argv: Any, _input: Any) -> Completed:
        raise TemporaryError("`ssh -p 22` did not finish within 5s", code="timeout")
    fleet.runner.on("ssh", reply=slow)
    text = error_text(call(fleet.services(), "ssh_to_device",
                           {"device": "dev-a", "command": "sleep 100", "timeout_s": 5}))
    assert "did not finish within 5s" in text and "did not kill" in text
    assert len(argvs(fleet)) == 1


def test_ssh_to_unknown_or_disabled_device(fleet: World, device_ssh: FakeDeviceSsh) -> None:
    text = error_text(call(fleet.services(), "ssh_to_device",
                           {"device": "dev-b", "command": "true"}))
    assert "VPN is not enabled on device dev-b" in text and "enable-vpn" in text
    text = error_text(call(fleet.services(), "ssh_to_device",
                           {"device": "ghost", "command": "true"}))
    assert "unknown device 'ghost'" in text
    assert argvs(fleet) == []


def test_enable_then_disable_device_to_device(fleet: World, device_ssh: FakeDeviceSsh) -> None:
    data = ok(call(fleet.services(), "enable_foundries_device_to_device",
                   {"device": "dev-a"}))
    assert data["device_to_device"] is True and data["changed"] is True
    assert data["persistent"] is True
    assert data["allowed_ips"] == ["10.42.42.0/24"] and data["warning"]
    assert "allowed-ips=10.42.42.0/24" in device_ssh.keyfile
    assert LMP_HOOK in device_ssh.device.files
    status = ok(call(fleet.services(), "foundries_device_to_device_status",
                     {"device": "dev-a"}))
    assert (status["d2d"], status["persistent"]) == (True, True)
    assert status["allowed_ips"] == ["10.42.42.0/24"]
    again = ok(call(fleet.services(), "enable_foundries_device_to_device",
                    {"device": "dev-a"}))
    assert again["changed"] is False and "nothing changed" in again["message"]
    off = ok(call(fleet.services(), "enable_foundries_device_to_device",
                  {"device": "dev-a", "action": "disable"}))
    assert off["device_to_device"] is False and off["allowed_ips"] == ["10.42.42.1/32"]
    assert device_ssh.keyfile == KEYFILE_TEXT and LMP_HOOK not in device_ssh.device.files


def test_device_to_device_private_key_never_in_argv(fleet: World,
                                                    device_ssh: FakeDeviceSsh) -> None:
    ok(call(fleet.services(), "enable_foundries_device_to_device", {"device": "dev-a"}))
    private = "sO3oaa8JZ3yW0B7oZAV+2HgOn3woxDtFMgxKKJDLPEQ="
    assert all(private not in " ".join(argv) for argv in argvs(fleet))


# --- the guide's decision (pure) --------------------------------------------------------

def facts(**over: Any) -> guide.SetupFacts:
    base = guide.SetupFacts(
        key_file="/h/.config/wireguard/foundries.key", key_file_exists=False,
        config="/h/.config/wireguard/foundries.conf", config_exists=True,
        address="10.42.42.200", public_key=str(CLIENT.public),
        server_endpoint="vpn.example.com:5555", interface="foundries", connected=True,
        handshake_age_s=10, server_answers=True, this_machine_is_server=False,
        server_ssh="root@10.42.42.1:5025")
    return dataclasses.replace(base, **over)


def test_guide_a_fresh_handshake_the_server_no_longer_answers_is_not_ready() -> None:
    """Right after an admin removed the key the handshake is 10 s old: not ready."""
    assert guide.guide(facts()).flow == "ready"
    removed = guide.guide(facts(handshake_age_s=10, server_answers=False), "engineer")
    assert (removed.flow, removed.stage) == ("engineer", "no_handshake")
    assert "10s ago" in removed.summary and "does not answer" in removed.summary


def test_guide_default_config_commands_need_no_config_flag() -> None:
    g = guide.guide(facts(connected=False))
    assert g.steps[0].command == "fiovpn connect"
    assert all("--config" not in st.command for st in g.steps)


def test_guide_ready_wins_over_the_server_marker() -> None:
    """An admin already connected on the server machine is ready, not bootstrapping."""
    assert guide.guide(facts(this_machine_is_server=True)).flow == "ready"
    assert guide.guide(facts(this_machine_is_server=True, connected=False)).flow == \
        "first_admin"


def test_output_cap_never_splits_a_character_nor_hides_binary() -> None:
    from fiovpn.mcpserver.server import _cap

    text, cut, size, escaped = _cap("é".encode() * 10, 5)  # 2 bytes each: 5 splits one
    assert (text, cut, size, escaped) == ("éé", True, 20, False)
    text, cut, size, escaped = _cap(b"\xff\x00abc", 100)
    assert (text, cut, size, escaped) == ("\\xff\x00abc", False, 5, True)


# --- exec_on_devices, copy_*, enable with wait (issue 12) ----------------------------


def call_with_progress(services: Services, tool: str, args: Mapping[str, Any],
                       guard: Any = None) -> tuple[CallToolResult, list[tuple[float, Any, Any]]]:
    seen: list[tuple[float, Any, Any]] = []

    async def progress(p: float, total: float | None, message: str | None) -> None:
        seen.append((p, total, message))

    async def main() -> CallToolResult:
        async with Client(build_server(services, guard)) as client:
            return await client.call_tool(tool, dict(args), progress_callback=progress)
    return anyio.run(main), seen


def test_exec_on_devices_reports_progress_and_caps_output(fleet: World,
                                                         device_ssh: FakeDeviceSsh) -> None:
    device_ssh.replies["uname -n"] = (0, "x" * 5000 + "\n", "")
    result, seen = call_with_progress(fleet.services(), "exec_on_devices",
                                      {"command": "uname -n", "devices": ["dev-a"],
                                       "max_output_bytes": 1000})
    data = ok(result)
    [row] = data["results"]
    assert (row["name"], row["exit_code"], row["error"]) == ("dev-a", 0, None)
    assert row["stdout_truncated"] is True and row["stdout_bytes"] == 5001
    assert len(row["stdout"]) == 1000 and data["ok"] == 1 and data["failed"] == 0
    assert seen and seen[-1][:2] == (1, 1) and "dev-a" in seen[-1][2]
    assert device_ssh.commands == [["sh", "-c", "uname -n"]]


def test_exec_on_devices_bad_selection_and_guard_run_nothing(fleet: World,
                                                             device_ssh: FakeDeviceSsh
                                                             ) -> None:
    from fiovpn.mcpserver.guard import Guard

    for args in ({"command": "true", "devices": ["nope"]}, {"command": "true"},
                 {"command": "true", "devices": ["dev-b"]}):
        assert call(fleet.services(), "exec_on_devices", args).is_error, args
    refused, _ = call_with_progress(fleet.services(), "exec_on_devices",
                                    {"command": "true", "devices": ["dev-a"]},
                                    Guard(allow_devices="other-*"))
    assert refused.is_error and "refused" in error_text(refused)
    assert device_ssh.commands == []


def test_copy_to_and_from_device_use_scp_with_host_keys_checked(world: World) -> None:
    write_config(world)
    data = ok(call(world.services(), "copy_to_device",
                   {"device": "10.42.42.2", "local_path": "app.conf",
                    "remote_path": "/etc/app.conf"}))
    assert data["direction"] == "upload" and data["vpn_ip"] == "10.42.42.2"
    back = ok(call(world.services(), "copy_from_device",
                   {"device": "10.42.42.2", "remote_path": "/var/log/x", "local_path": "/tmp/x",
                    "recursive": True}))
    assert back["direction"] == "download" and back["recursive"] is True
    up, down = argvs(world)
    assert up[0] == "scp" and "StrictHostKeyChecking=yes" in up
    assert up[-2:] == ("app.conf", "fio@10.42.42.2:/etc/app.conf")
    assert "-r" in down and down[-2:] == ("fio@10.42.42.2:/var/log/x", "/tmp/x")


def test_enable_with_wait_reports_progress_until_the_device_answers(fleet: World) -> None:
    answers = iter([False, False, True])
    services = dataclasses.replace(fleet.services(), probe=lambda _ip, _t: next(answers))
    result, seen = call_with_progress(services, "enable_foundries_vpn_device",
                                      {"device": "dev-b", "wait": True, "timeout_s": 30})
    data = ok(result)
    assert data["reachable_after_s"] is not None and "answered" in data["message"]
    assert seen, "progress notifications while waiting"
