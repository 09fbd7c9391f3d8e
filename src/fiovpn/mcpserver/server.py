"""``build_server(services)``: the fiovpn MCP server and its tools.

Every tool is a thin adapter: load settings the way the CLI does, call one
service, turn its result into a typed model. Errors are raised as
``ToolError`` whose text says what was wrong and what to do next; nothing is
returned as an error value. No tool takes a password, token or private key.
"""

import contextlib
import time
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from fiovpn import __version__
from fiovpn.adapters.factory_api import FactoryApi, current_file
from fiovpn.core.factory_files import WIREGUARD_SERVER_FILE, ServerConfigFile
from fiovpn.errors import (
    ApiTemporaryError,
    AuthError,
    BadInput,
    FiovpnError,
    MissingTool,
    TemporaryError,
)
from fiovpn.mcpserver import models as m
from fiovpn.mcpserver.services import Services
from fiovpn.settings import ClientSettings

TOOL_NAMES = (
    "connect_foundries_vpn",
    "disconnect_foundries_vpn",
    "foundries_vpn_status",
    "verify_foundries_vpn_connection",
    "check_client_peer_registered",
    "register_foundries_vpn_client",
    "unregister_foundries_vpn_client",
    "list_foundries_devices",
    "enable_foundries_vpn_device",
    "disable_foundries_vpn_device",
    "enable_foundries_device_to_device",
    "ssh_to_device",
    "get_foundries_vpn_server_config",
    "setup_foundries_vpn",
)

DOCS = {
    "setup": ("fiovpn://docs/setup", "Setting up the Foundries VPN",
              "The flows: first admin, engineer, admin on the VPN, devices, server."),
    "troubleshooting": ("fiovpn://docs/troubleshooting", "Troubleshooting the Foundries VPN",
                        "The decision tree: config? connected? registered? reachable?"),
}

INSTRUCTIONS = """\
fiovpn manages the WireGuard VPN of a FoundriesFactory: engineers' machines,
the factory's devices and one WireGuard server. Start with setup_foundries_vpn:
it inspects this machine and says which flow applies (first admin, engineer,
already ready) and the next command. Read fiovpn://docs/setup and
fiovpn://docs/troubleshooting for the full flows. No tool takes a password or
a token: the factory API token comes from FIOVPN_API_TOKEN, the api-token-file
setting or fioctl's config, and SSH uses keys with host keys checked.
"""

# --- parameter types (module level: the SDK resolves the annotations by name) ---

ConfigParam = Annotated[
    str | None,
    Field(description="Path of the client config (wg-quick file). Default "
                      "~/.config/wireguard/foundries.conf; the interface is named after it."),
]
FactoryParam = Annotated[
    str | None,
    Field(description="Factory name. Default: FIOVPN_FACTORY, the settings file or fioctl's "
                      "config."),
]
DeviceParam = Annotated[str, Field(description="Device name as the factory knows it.",
                                   min_length=1, max_length=127)]
PublicKeyParam = Annotated[str, Field(description="A WireGuard PUBLIC key (base64, 44 "
                                                  "characters). Never a private key.")]
RoleParam = Annotated[
    Literal["auto", "first_admin", "engineer"],
    Field(description="auto: decide from this machine (the WireGuard server itself means "
                      "first admin); first_admin: you have direct access to the server and "
                      "nobody is registered yet; engineer: someone on the VPN registers you."),
]

_HINTS: list[tuple[type[FiovpnError], str]] = [
    (AuthError, "set FIOVPN_API_TOKEN or api-token-file in ~/.config/fiovpn/config.toml "
                "(tools never take a token)"),
    (ApiTemporaryError, "the factory API is unavailable; retry in a minute"),
    (TemporaryError, "this may pass: retry in a moment"),
    (MissingTool, "install the named package, then retry"),
    (BadInput, "nothing was changed; fix the input and retry"),
]


def tool_error(exc: FiovpnError) -> ToolError:
    """A fiovpn error as the tool error the model reads: message, code, next step."""
    text = f"{exc} [{exc.code}]"
    if exc.hint is None:
        for cls, hint in _HINTS:
            if isinstance(exc, cls):
                text += f"; {hint}"
                break
    text += ". See fiovpn://docs/troubleshooting."
    return ToolError(text)


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Raise fiovpn's errors (and OS errors) as tool errors with their own message."""
    try:
        yield
    except FiovpnError as exc:
        raise tool_error(exc) from exc
    except PermissionError as exc:
        raise ToolError(f"permission denied: {exc.filename or exc}; fiovpn needs root for "
                        "this (run the MCP server as root or fix the file's owner)") from exc
    except OSError as exc:
        raise ToolError(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from exc


def _hints(*, read_only: bool, destructive: bool = False, idempotent: bool = True,
           open_world: bool = True, title: str) -> ToolAnnotations:
    return ToolAnnotations(title=title, read_only_hint=read_only, destructive_hint=destructive,
                           idempotent_hint=idempotent, open_world_hint=open_world)


def _doc(name: str) -> str:
    return resources.files("fiovpn").joinpath("docs", f"{name}.md").read_text(encoding="utf-8")


def _flags(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def build_server(services: Services) -> MCPServer:
    """The fiovpn MCP server over ``services`` (real ones for ``fiovpn mcp``, fakes in tests)."""
    server: MCPServer = MCPServer(
        "fiovpn", title="fiovpn: Foundries VPN", version=__version__,
        instructions=INSTRUCTIONS, log_level="WARNING",
    )

    for key, (uri, title, description) in DOCS.items():
        server.resource(uri, name=key, title=title, description=description,
                        mime_type="text/markdown")(_doc_reader(key))

    def settings(**flags: Any) -> ClientSettings:
        return services.load_settings(_flags(**flags))

    @contextlib.contextmanager
    def factory_api(factory: str | None) -> Iterator[FactoryApi]:
        api = services.factory(settings(factory=factory))
        try:
            yield api
        finally:
            close = getattr(api, "close", None)
            if callable(close):
                close()

    # --- factory-side reads -------------------------------------------------

    @server.tool(annotations=_hints(read_only=True, title="Foundries VPN server config"))
    def get_foundries_vpn_server_config(factory: FactoryParam = None) -> m.ServerConfig:
        """Read the factory's WireGuard server config (the `wireguard-server` factory config
        file): the endpoint clients and devices connect to, the server's VPN address, its
        public key, and whether the factory VPN is enabled. Read-only."""
        with reported(), factory_api(factory) as api:
            file = current_file(api.factory_config(), WIREGUARD_SERVER_FILE)
            if file is None:
                raise ToolError(
                    f"factory {api.factory} has no {WIREGUARD_SERVER_FILE} config: the VPN "
                    "server was never enabled. An admin runs, on the WireGuard server: "
                    "`fiovpn server enable --factory F --endpoint HOST[:PORT]`.")
            parsed = ServerConfigFile.parse(file.value)
            return m.ServerConfig(
                factory=api.factory, endpoint=parsed.endpoint,
                endpoint_host=parsed.endpoint_host, endpoint_port=parsed.endpoint_port,
                server_address=str(parsed.server_address), pubkey=str(parsed.pubkey),
                enabled=parsed.enabled)

    # --- not yet wired: the services land from the other helpers ----------

    def pending(name: str) -> ToolError:
        return ToolError(f"{name} is not available in this build yet")

    @server.tool(annotations=_hints(read_only=True, open_world=False,
                                    title="Set up the Foundries VPN"))
    def setup_foundries_vpn(role: RoleParam = "auto", config: ConfigParam = None) -> m.SetupGuide:
        """The bootstrap guide. Inspects this machine (private key, client config, the
        tunnel, whether a handshake with the server completed) and answers which flow
        applies (first_admin, engineer, or ready) and the next concrete step with the exact
        commands. Changes nothing. Call this first."""
        raise pending("setup_foundries_vpn")

    @server.tool(annotations=_hints(read_only=True, open_world=False,
                                    title="Foundries VPN status"))
    def foundries_vpn_status(config: ConfigParam = None) -> m.VpnStatus:
        """Show the local Foundries VPN tunnel: interface, address, public key, server
        endpoint, latest handshake and traffic. Read-only."""
        raise pending("foundries_vpn_status")

    @server.tool(annotations=_hints(read_only=False, destructive=False, idempotent=True,
                                    open_world=True, title="Connect to the Foundries VPN"))
    def connect_foundries_vpn(config: ConfigParam = None) -> m.ConnectResult:
        """Bring the Foundries VPN tunnel up from the client config (wg-quick). Connecting
        when already connected is fine and says so."""
        raise pending("connect_foundries_vpn")

    @server.tool(annotations=_hints(read_only=False, destructive=True, idempotent=True,
                                    open_world=False, title="Disconnect the Foundries VPN"))
    def disconnect_foundries_vpn(config: ConfigParam = None) -> m.ConnectResult:
        """Take the Foundries VPN tunnel down. Open connections through it drop.
        Disconnecting when not connected is fine and says so."""
        raise pending("disconnect_foundries_vpn")

    @server.tool(annotations=_hints(read_only=True, title="Verify the Foundries VPN"))
    def verify_foundries_vpn_connection(config: ConfigParam = None) -> m.VerifyResult:
        """Verify the tunnel works: the interface is up, a handshake with the server
        completed recently, and the server's VPN address answers through the tunnel."""
        raise pending("verify_foundries_vpn_connection")

    @server.tool(annotations=_hints(read_only=True, title="Is a client registered?"))
    def check_client_peer_registered(
        public_key: Annotated[str | None, Field(
            description="A client's WireGuard PUBLIC key to look up in the server's registry "
                        "(admin, over SSH). Omit to check THIS machine by handshake "
                        "(needs no admin rights).")] = None,
        config: ConfigParam = None,
    ) -> m.RegistrationCheck:
        """Check whether a client's public key is registered on the WireGuard server.
        Without public_key: checks this machine's own key by looking for a completed
        handshake. With public_key: asks the server's registry over SSH (admin)."""
        raise pending("check_client_peer_registered")

    @server.tool(annotations=_hints(read_only=False, destructive=False, idempotent=False,
                                    title="Register a VPN client"))
    def register_foundries_vpn_client(
        public_key: PublicKeyParam,
        ip: Annotated[str, Field(description="'auto' (next free IP of the client pool) or an "
                                             "IPv4 address inside the pool.")] = "auto",
        name: Annotated[str | None, Field(description="A label for the client, e.g. the "
                                                      "engineer's name.")] = None,
        config: ConfigParam = None,
    ) -> m.ClientEntry:
        """Register an engineer's WireGuard public key on the server (admin, over SSH to
        the server's VPN address). Returns the IP assigned; tell the engineer to run
        `fiovpn client init --address IP`. The server applies it at once."""
        raise pending("register_foundries_vpn_client")

    @server.tool(annotations=_hints(read_only=False, destructive=True, idempotent=True,
                                    title="Unregister a VPN client"))
    def unregister_foundries_vpn_client(
        public_key: Annotated[str | None, Field(description="The client's PUBLIC key "
                                                            "(give this or name).")] = None,
        name: Annotated[str | None, Field(description="The client's name (give this or "
                                                      "public_key).")] = None,
        config: ConfigParam = None,
    ) -> m.UnregisterResult:
        """Remove a client from the server's registry (admin, over SSH): its tunnel stops
        working at once."""
        raise pending("unregister_foundries_vpn_client")

    @server.tool(annotations=_hints(read_only=True, title="List Foundries devices"))
    def list_foundries_devices(
        vpn: Annotated[Literal["all", "enabled", "disabled"], Field(
            description="Filter by whether VPN is enabled on the device.")] = "all",
        name_contains: Annotated[str | None, Field(
            description="Only devices whose name contains this text.")] = None,
        factory: FactoryParam = None,
    ) -> m.DeviceList:
        """List the factory's devices with their status, VPN IP and whether VPN is
        enabled. Read-only."""
        raise pending("list_foundries_devices")

    @server.tool(annotations=_hints(read_only=False, destructive=False, idempotent=True,
                                    title="Enable VPN on a device"))
    def enable_foundries_vpn_device(device: DeviceParam,
                                    factory: FactoryParam = None) -> m.DeviceVpnResult:
        """Enable the VPN on a device: assigns its VPN IP (as fioctl does) in the device's
        factory config. The server picks it up on its next reconcile. The device must have
        published its VPN public key."""
        raise pending("enable_foundries_vpn_device")

    @server.tool(annotations=_hints(read_only=False, destructive=True, idempotent=True,
                                    title="Disable VPN on a device"))
    def disable_foundries_vpn_device(device: DeviceParam,
                                     factory: FactoryParam = None) -> m.DeviceVpnResult:
        """Disable the VPN on a device (keeps its IP for later). The server removes the
        device's peer on its next reconcile."""
        raise pending("disable_foundries_vpn_device")

    @server.tool(annotations=_hints(read_only=False, destructive=True, idempotent=True,
                                    title="Device-to-device on a device"))
    def enable_foundries_device_to_device(
        device: DeviceParam,
        action: Annotated[Literal["enable", "disable"], Field(
            description="enable: widen the device's route to the whole VPN subnet; "
                        "disable: restore the server-only route.")] = "enable",
        config: ConfigParam = None,
    ) -> m.DeviceToDeviceResult:
        """Let a device reach other devices over the VPN (over SSH to the device: widens
        the server peer's allowed IPs in its NetworkManager VPN connection). Both devices
        need it, and the server must run with --allow-device-to-device. action=disable
        restores isolation."""
        raise pending("enable_foundries_device_to_device")

    @server.tool(annotations=_hints(read_only=False, destructive=True, idempotent=False,
                                    title="Run a command on a device"))
    def ssh_to_device(
        device: Annotated[str, Field(description="Device name or its VPN IP.",
                                     min_length=1, max_length=127)],
        command: Annotated[str, Field(description="ONE command line, run by the device "
                                                  "user's shell.", min_length=1)],
        user: Annotated[str | None, Field(description="Login user on the device. Default: "
                                                      "FIOVPN_DEVICE_USER or 'fio'.")] = None,
        timeout_s: Annotated[float, Field(description="Give up waiting after this many "
                                                      "seconds.", gt=0, le=600)] = 60.0,
        max_output_bytes: Annotated[int, Field(description="Cap on each of stdout and "
                                                           "stderr.", ge=256,
                                               le=1_048_576)] = 65_536,
        config: ConfigParam = None,
    ) -> m.SshResult:
        """Run one command on a device over SSH through the VPN (key authentication, host
        keys checked) and return its exit code, stdout and stderr (each capped; says when
        truncated). Runs the command once: never retries it on another path and never
        kills processes on the device."""
        raise pending("ssh_to_device")

    return server


def _doc_reader(key: str) -> Callable[[], str]:
    """A parameterless reader of one help page (static resources take no parameters)."""
    def read() -> str:
        return _doc(key)
    read.__name__ = f"docs_{key}"
    return read


def _age(latest: int | None, now: float | None = None) -> float | None:
    if not latest:
        return None
    return max(0.0, (time.time() if now is None else now) - latest)
