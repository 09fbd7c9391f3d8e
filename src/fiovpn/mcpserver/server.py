"""``build_server(services)``: the fiovpn MCP server and its tools.

Every tool is a thin adapter: load settings the way the CLI does, call one
service, turn its result into a typed model. Errors are raised as
``ToolError`` whose text says what was wrong and what to do next; nothing is
returned as an error value. No tool takes a password, token or private key.
"""

import contextlib
import dataclasses
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from importlib import resources
from ipaddress import IPv4Address
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import anyio.from_thread
import anyio.lowlevel
from mcp.server.mcpserver import (
    AcceptedElicitation,
    Context,
    Elicit,
    ElicitationResult,
    MCPServer,
    Resolve,
)
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from fiovpn import __version__
from fiovpn.adapters.factory_api import FactoryApi, current_file
from fiovpn.core import wgquick
from fiovpn.core.factory_files import WIREGUARD_SERVER_FILE, ServerConfigFile
from fiovpn.core.keys import public_key
from fiovpn.errors import (
    ApiTemporaryError,
    AuthError,
    BadInput,
    FiovpnError,
    MissingTool,
    TemporaryError,
)
from fiovpn.mcpserver import guide
from fiovpn.mcpserver import models as m
from fiovpn.mcpserver.guard import Guard
from fiovpn.mcpserver.services import Services
from fiovpn.services import client_config, device_access, devices, fanout, reachability
from fiovpn.services.journal import record_device_call
from fiovpn.services.keys import read_private_key
from fiovpn.settings import ClientSettings, default_journal

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
    "foundries_device_to_device_status",
    "ssh_to_device",
    "get_foundries_vpn_server_config",
    "setup_foundries_vpn",
    "exec_on_devices",
    "copy_to_device",
    "copy_from_device",
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
    (BadInput, "fix the input and retry"),
]


def tool_error(exc: FiovpnError) -> ToolError:
    """A fiovpn error as the tool error the model reads: message, code, next step."""
    text = f"{exc} [{exc.code}]"
    if isinstance(exc, BadInput):
        text += "; nothing was changed"
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


def build_server(services: Services, guard: Guard | None = None) -> MCPServer:
    """The fiovpn MCP server over ``services`` (real ones for ``fiovpn mcp``, fakes in
    tests); ``guard``: ``--read-only`` / ``--allow-devices`` and the journal."""
    server: MCPServer = MCPServer(
        "fiovpn", title="fiovpn: Foundries VPN", version=__version__,
        instructions=INSTRUCTIONS, log_level="WARNING",
    )

    def journal_path() -> Path:
        try:
            return services.load_settings({}).journal
        except FiovpnError:
            return default_journal()
    active_guard = guard or Guard()
    active_guard.install(server, journal_path)

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

    # --- this machine: setup guide, tunnel, verification --------------------------

    def setup_facts(config: ConfigParam = None) -> guide.SetupFacts:
        """Resolver: what setup_foundries_vpn looks at on this machine."""
        with reported():
            return gather_facts(settings(config=config))

    def ask_first_admin(facts: Annotated[guide.SetupFacts, Resolve(setup_facts)],
                        ctx: Context, role: RoleParam = "auto",
                        ) -> Elicit[m.FirstAdminAnswer] | None:
        """Resolver: the seed's question, through elicitation, only where this machine
        cannot tell and the client can ask its user (else None: flow "choose")."""
        caps = ctx.client_capabilities
        if not guide.needs_the_question(facts, role) or caps is None \
                or caps.elicitation is None:
            return None
        return Elicit(guide.FIRST_ADMIN_QUESTION, m.FirstAdminAnswer)

    @server.tool(annotations=_hints(read_only=True, open_world=False,
                                    title="Set up the Foundries VPN"))
    def setup_foundries_vpn(
        facts: Annotated[guide.SetupFacts, Resolve(setup_facts)],
        answer: Annotated[ElicitationResult[m.FirstAdminAnswer], Resolve(ask_first_admin)],
        role: RoleParam = "auto", config: ConfigParam = None,
    ) -> m.SetupGuide:
        """The bootstrap guide: call this first. Inspects this machine (private key file,
        client config, whether the tunnel is up and the server answers this key) and
        answers which flow applies (first_admin, engineer, ready) and the next concrete
        step with the exact commands. Where only the user can tell whether they are the
        first admin of the factory's VPN, it asks them (MCP elicitation) when the client
        supports it, else answers flow "choose" with the question and both branches'
        steps. Changes nothing."""
        del config  # read by the setup_facts resolver
        answered: guide.Branch | None = None
        if isinstance(answer, AcceptedElicitation) and answer.data is not None:
            answered = "first_admin" if answer.data.first_admin else "engineer"
        g = guide.guide(facts, answered or role)
        return m.SetupGuide(
            flow=g.flow, stage=g.stage, summary=g.summary, next_step=g.next_step,
            steps=[m.SetupStep(command=st.command, why=st.why) for st in g.steps],
            question=g.question,
            branches=[m.SetupBranch(flow=b.flow, answer=b.answer, summary=b.summary,
                                    next_step=b.next_step,
                                    steps=[m.SetupStep(command=st.command, why=st.why)
                                           for st in b.steps]) for b in g.branches],
            answered=answered,
            facts=m.SetupFactsModel(**dataclasses.asdict(facts)),
            docs=[uri for uri, _t, _d in DOCS.values()])

    def gather_facts(s: ClientSettings) -> guide.SetupFacts:
        key_file = services.key_path()
        public: str | None = None
        if key_file.exists():
            public = str(public_key(read_private_key(key_file)))
        address = endpoint = None
        connected = answers = False
        age: int | None = None
        iface = wgquick.interface_name(s.config.name)
        config_exists = s.config.exists()
        if config_exists:
            view = wgquick.client_view(client_config.load_config(s.config))
            address = str(view.address) if view.address else None
            endpoint = view.endpoint
            if view.private_key is not None:
                public = str(public_key(view.private_key))
            if address is not None:
                # Traffic sent now, and whether the server answers it: the proof that it
                # accepts this key (an old handshake is none: the key may be removed).
                answer = services.probe_server(s, services.runner)
                connected, age = answer.connected, answer.handshake_age_s
                answers = answer.answered
        return guide.SetupFacts(
            key_file=str(key_file), key_file_exists=key_file.exists(), config=str(s.config),
            config_exists=config_exists, address=address, public_key=public,
            server_endpoint=endpoint, interface=iface, connected=connected,
            handshake_age_s=age, server_answers=answers,
            this_machine_is_server=any(p.exists() for p in services.server_markers),
            server_ssh=s.server_ssh)

    @server.tool(annotations=_hints(read_only=True, open_world=False,
                                    title="Foundries VPN status"))
    def foundries_vpn_status(config: ConfigParam = None) -> m.VpnStatus:
        """Show the local Foundries VPN tunnel: interface, address, this machine's public
        key, the server peer (endpoint, latest handshake and its age, traffic). Read-only."""
        with reported():
            return m.VpnStatus.model_validate(
                services.status(settings(config=config), services.runner))

    @server.tool(annotations=_hints(read_only=False, destructive=False, idempotent=True,
                                    title="Connect to the Foundries VPN"))
    def connect_foundries_vpn(config: ConfigParam = None) -> m.ConnectResult:
        """Bring the Foundries VPN tunnel up from the client config (wg-quick, or
        NetworkManager where it runs). Connecting when already connected changes nothing
        and says so. Then call verify_foundries_vpn_connection."""
        with reported():
            result = services.connect(settings(config=config), services.runner)
            return m.ConnectResult.model_validate(result.to_json())

    @server.tool(annotations=_hints(read_only=False, destructive=True, idempotent=True,
                                    open_world=False, title="Disconnect the Foundries VPN"))
    def disconnect_foundries_vpn(config: ConfigParam = None) -> m.ConnectResult:
        """Take the Foundries VPN tunnel down; open connections through it drop.
        Disconnecting when not connected changes nothing and says so."""
        with reported():
            result = services.disconnect(settings(config=config), services.runner)
            return m.ConnectResult.model_validate(result.to_json())

    @server.tool(annotations=_hints(read_only=True, title="Verify the Foundries VPN"))
    def verify_foundries_vpn_connection(config: ConfigParam = None) -> m.VerifyResult:
        """Verify the tunnel works: the interface is up, a handshake with the server
        completed, and the server's VPN address answers a ping through the tunnel."""
        with reported():
            r = services.verify(settings(config=config), services.runner)
            if not r.connected:
                message = (f"not connected: {r.interface} is down; call "
                           "connect_foundries_vpn (`fiovpn connect`)")
            elif r.server_reachable:
                message = f"OK: the server {r.server_address} answers through the tunnel"
            elif r.handshake_age_s is None:
                message = ("connected but no handshake with the server: this key is not "
                           "registered, or the endpoint is unreachable; call "
                           "check_client_peer_registered and setup_foundries_vpn")
            else:
                message = (f"handshake {r.handshake_age_s}s ago but {r.server_address} does "
                           "not answer: check the server daemon (`fiovpn server status`) "
                           "and fiovpn://docs/troubleshooting")
            return m.VerifyResult(**r.to_json(), message=message)

    # --- registration (admin over SSH; local check by handshake) ------------------

    @server.tool(annotations=_hints(read_only=False, destructive=False, idempotent=True,
                                    title="Is a client registered?"))
    def check_client_peer_registered(
        public_key: Annotated[str | None, Field(
            description="A client's WireGuard PUBLIC key to look up in the server's registry "
                        "(admin, over SSH). Omit to check THIS machine by handshake "
                        "(needs no admin rights).")] = None,
        config: ConfigParam = None,
    ) -> m.RegistrationCheck:
        """Check whether a client's public key is registered on the WireGuard server.
        Without public_key: checks this machine's own key by sending traffic to the
        server now and reading whether it answers (an earlier handshake is no proof;
        a session that gets no answer is replaced by a fresh handshake; ~10 s at most);
        if the tunnel was down it is brought up for the check and taken down again.
        With public_key: asks the server's registry over SSH (admin)."""
        with reported():
            s = settings(config=config)
            if public_key is None:
                local = services.check_registered_local(s, services.runner)
                return m.RegistrationCheck.model_validate(local)
            answer = services.check_registered_remote(s, services.runner,
                                                      public_key=public_key)
            registered = bool(answer.get("registered"))
            if registered:
                message = f"registered with IP {answer.get('ip')} and live on the server"
            elif answer.get("in_registry"):
                message = ("in the registry but not on the server's interface yet: the "
                           "server daemon applies it within seconds; check `fiovpn server "
                           "status` if it stays so")
            else:
                message = ("not registered: call register_foundries_vpn_client "
                           f"(`fiovpn register --public-key {answer['public_key']}`)")
            return m.RegistrationCheck(
                registered=registered, public_key=answer["public_key"], method="server",
                in_registry=answer.get("in_registry"), on_interface=answer.get("on_interface"),
                ip=answer.get("ip"), message=message)

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
        the server's VPN address; key auth, host key checked). Returns the IP assigned;
        tell the engineer to run `fiovpn client init --address IP`. The server applies it
        at once."""
        with reported():
            entry = services.register(settings(config=config), services.runner,
                                      public_key=public_key, ip=ip, name=name)
            return m.ClientEntry.model_validate(entry)

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
        working at once. Give exactly one of public_key or name."""
        with reported():
            answer = services.unregister(settings(config=config), services.runner,
                                         public_key=public_key, name=name)
            return m.UnregisterResult(removed=_removed_entries(answer))

    @server.tool(annotations=_hints(read_only=True, title="List Foundries devices"))
    def list_foundries_devices(
        vpn: Annotated[Literal["all", "enabled", "disabled"], Field(
            description="Filter by whether VPN is enabled on the device.")] = "all",
        name_contains: Annotated[str | None, Field(
            description="Only devices whose name contains this text.")] = None,
        factory: FactoryParam = None,
        group: Annotated[str | None, Field(
            description="Only devices of this factory device group (the API's filter).")
        ] = None,
        tag: Annotated[str | None, Field(
            description="Only devices with this tag (the API's filter).")] = None,
        online: Annotated[bool, Field(
            description="Only devices the factory heard from in the last 15 minutes.")
        ] = False,
    ) -> m.DeviceList:
        """List the factory's devices with their status, group, tag, whether they are
        online, VPN IP and whether VPN is enabled. Read-only."""
        with reported(), factory_api(factory) as api:
            filters: dict[str, Any] = _flags(group=group, tag=tag) | (
                {"online": True} if online else {})
            found = services.list_devices(api, **filters)
            rows = [d for d in found
                    if (vpn == "all" or d.vpn_enabled == (vpn == "enabled"))
                    and (not name_contains or name_contains in d.name)]
            return m.DeviceList(factory=api.factory, total=len(found),
                                devices=[m.DeviceInfo(**d.to_json()) for d in rows])

    def vpn_change(change: devices.VpnChange, factory: str) -> m.DeviceVpnResult:
        state = "enabled" if change.vpn_enabled else "disabled"
        if not change.changed:
            message = f"VPN on {change.name} was already {state}; nothing changed."
        else:
            message = (f"VPN {state} on {change.name} in factory {factory}"
                       + (f" with IP {change.vpn_ip}" if change.vpn_enabled else "")
                       + "; the WireGuard server applies it on its next reconcile "
                         "(default within 60 s).")
        return m.DeviceVpnResult(**change.to_json(), message=message)

    @server.tool(annotations=_hints(read_only=False, destructive=False, idempotent=True,
                                    title="Enable VPN on a device"))
    def enable_foundries_vpn_device(
        device: DeviceParam, ctx: Context, factory: FactoryParam = None,
        wait: Annotated[bool, Field(description="Wait until the device answers through "
                                                "the tunnel (its sshd greets over its VPN "
                                                "address); progress is reported while "
                                                "waiting.")] = False,
        timeout_s: Annotated[float, Field(description="With wait: give up after this many "
                                                      "seconds.", gt=0, le=900)] = 300.0,
    ) -> m.DeviceVpnResult:
        """Enable the VPN on a device: assigns its VPN IP (as fioctl does: first free
        address after the server, outside the client pool) in the device's factory config;
        an existing IP is kept. The device applies it at its next config check-in, the
        server adds the peer on its next reconcile; with wait, returns once the device
        answers through the tunnel (reachable_after_s) or timeout_s passed (null). The
        device must have published its VPN public key."""
        with reported():
            s = settings(factory=factory)
            with factory_api(factory) as api:
                change = services.enable_vpn(api, device, subnet=s.subnet,
                                             client_pool=s.client_pool)
                result = vpn_change(change, api.factory)
            if not wait or change.vpn_ip is None:
                return result
            report = progress_sender(ctx)
            started = time.monotonic()
            last = [0.0]

            def probe(ip: IPv4Address, limit: float) -> bool:
                now = time.monotonic()
                if now - last[0] >= 1.0:
                    last[0] = now
                    report(round(now - started, 1), timeout_s,
                           f"waiting for {change.name} ({ip}) to answer through the tunnel")
                return services.probe(ip, limit)
            [reached] = reachability.wait_reachable(
                [(change.name, change.vpn_ip, started)], timeout=timeout_s, probe=probe)
            if reached.after_s is None:
                message = (f"{result.message} It did NOT answer through the tunnel within "
                           f"{timeout_s:g}s: is the device online (list_foundries_devices "
                           "online), and has it checked in since?")
            else:
                message = (f"{result.message} It answered through the tunnel after "
                           f"{reached.after_s:.1f}s.")
                report(timeout_s, timeout_s, f"{change.name} answered")
            return result.model_copy(update={"reachable_after_s": reached.after_s,
                                             "message": message})

    @server.tool(annotations=_hints(read_only=False, destructive=True, idempotent=True,
                                    title="Disable VPN on a device"))
    def disable_foundries_vpn_device(device: DeviceParam,
                                     factory: FactoryParam = None) -> m.DeviceVpnResult:
        """Disable the VPN on a device (its IP is kept for a later enable). The server
        removes the device's peer on its next reconcile; open sessions to it drop."""
        with reported(), factory_api(factory) as api:
            return vpn_change(services.disable_vpn(api, device), api.factory)

    @contextlib.contextmanager
    def lazy_api(s: ClientSettings) -> Iterator[Callable[[], FactoryApi]]:
        """An API factory for services that may not need the API (a device given by IP);
        every client it made is closed afterwards."""
        made: list[FactoryApi] = []

        def make() -> FactoryApi:
            made.append(services.factory(s))
            return made[-1]
        try:
            yield make
        finally:
            for api in made:
                close = getattr(api, "close", None)
                if callable(close):
                    close()

    @server.tool(annotations=_hints(read_only=False, destructive=True, idempotent=True,
                                    title="Device-to-device on a device"))
    def enable_foundries_device_to_device(
        device: DeviceParam,
        action: Annotated[Literal["enable", "disable"], Field(
            description="enable: widen the device's route to the whole VPN subnet; "
                        "disable: restore the server-only route.")] = "enable",
        config: ConfigParam = None,
    ) -> m.DeviceToDeviceResult:
        """Let a device reach other devices over the VPN, lastingly: over SSH to the
        device, installs the NetworkManager dispatcher hook that widens the server peer's
        allowed IPs to the VPN subnet whenever the VPN connection comes up (after reboots
        and factory VPN config changes), widens the keyfile and the live interface now
        (the session is not cut), then reads the result back. Both devices need it, and the
        server must run with --allow-device-to-device. action=disable restores isolation.
        Idempotent."""
        with reported():
            s = settings(config=config)
            change = services.enable_d2d if action == "enable" else services.disable_d2d
            with lazy_api(s) as api:
                r = change(s, services.runner, device, api=api)
            state = "on" if r["device_to_device"] else "off"
            message = (f"device-to-device is {state} on {r['name']} ({r['vpn_ip']})"
                       + ("" if r["changed"] else "; it already was, nothing changed")
                       + (". The other device needs it too, and the server "
                          "--allow-device-to-device." if r["device_to_device"] else "."))
            fields = {k: v for k, v in r.items() if k != "changed_parts"}
            return m.DeviceToDeviceResult(**fields, message=message)

    @server.tool(annotations=_hints(read_only=True, title="Device-to-device state"))
    def foundries_device_to_device_status(device: DeviceParam,
                                          config: ConfigParam = None
                                          ) -> m.DeviceToDeviceStatus:
        """Read a device's true device-to-device state over SSH: its live
        `wg show factory-vpn0 allowed-ips` and whether the dispatcher hook that keeps
        d2d on across reboots and factory VPN config changes is installed. Changes
        nothing."""
        with reported():
            s = settings(config=config)
            with lazy_api(s) as api:
                st = services.d2d_status(s, services.runner, device, api=api)
            return m.DeviceToDeviceStatus(**st.to_json(), message=st.summary())

    @server.tool(annotations=_hints(read_only=False, destructive=True, idempotent=False,
                                    title="Run a command on a device"))
    def ssh_to_device(
        device: Annotated[str, Field(description="Device name or its VPN IP.",
                                     min_length=1, max_length=127)],
        command: Annotated[str, Field(description="ONE command line, run on the device by "
                                                  "`sh -c` (pipes and quotes work as in a "
                                                  "shell).", min_length=1,
                                      max_length=8192)],
        user: Annotated[str | None, Field(description="Login user on the device. Default: "
                                                      "FIOVPN_DEVICE_USER or 'fio'.")] = None,
        timeout_s: Annotated[float, Field(description="Stop waiting after this many "
                                                      "seconds.", gt=0, le=600)] = 60.0,
        max_output_bytes: Annotated[int, Field(description="Cap on each of stdout and "
                                                           "stderr, in bytes.", ge=256,
                                               le=1_048_576)] = 65_536,
        config: ConfigParam = None,
    ) -> m.SshResult:
        """Run one command on a device over SSH through the VPN (key authentication, host
        keys checked) and return its exit code, stdout and stderr (each capped at
        max_output_bytes; says when truncated). Output is text: bytes that are not UTF-8
        come back as \\xNN escapes and stdout_escaped/stderr_escaped say so. A non-zero
        exit code is a result, not an error. Runs the command exactly once: never retries
        it on another path and never kills processes on the device."""
        with reported():
            s = settings(config=config, user=user)
            try:
                with lazy_api(s) as api:
                    r = services.run_on_device(s, services.runner, device, ["sh", "-c", command],
                                               api=api, timeout=timeout_s)
            except TemporaryError as exc:
                if exc.code != "timeout":
                    raise
                raise ToolError(
                    f"`{command[:80]}` on {device} did not finish within {timeout_s:g}s; "
                    "fiovpn stopped waiting but did not kill anything on the device (it may "
                    "still be running there). Retry with a larger timeout_s, or run it in "
                    "the background on the device.") from exc
            out, out_cut, out_n, out_esc = _cap(r.stdout, max_output_bytes)
            err, err_cut, err_n, err_esc = _cap(r.stderr, max_output_bytes)
            return m.SshResult(
                device=r.name, ip=str(r.ip), user=s.user, command=command,
                exit_code=r.exit_code, stdout=out, stderr=err, stdout_truncated=out_cut,
                stderr_truncated=err_cut, stdout_bytes=out_n, stderr_bytes=err_n,
                stdout_escaped=out_esc, stderr_escaped=err_esc)


    @server.tool(annotations=_hints(read_only=False, destructive=True, idempotent=False,
                                    title="Run a command on many devices"))
    def exec_on_devices(
        command: Annotated[str, Field(description="ONE command line, run on each device by "
                                                  "`sh -c`.", min_length=1,
                                      max_length=8192)],
        ctx: Context,
        devices: Annotated[list[Annotated[str, Field(min_length=1, max_length=127)]] | None,
                           Field(description="Device names (give this, group, tag or "
                                             "all_devices).", max_length=500)] = None,
        group: Annotated[str | None, Field(description="Every device of this factory "
                                                       "device group.")] = None,
        tag: Annotated[str | None, Field(description="Every device with this tag.")] = None,
        all_devices: Annotated[bool, Field(description="Every VPN-enabled device.")] = False,
        parallel: Annotated[int, Field(description="Devices at a time.", ge=1,
                                       le=64)] = fanout.DEFAULT_PARALLEL,
        timeout_s: Annotated[float, Field(description="Seconds per device, connect "
                                                      "included; a device past it is "
                                                      "reported with an error.", gt=0,
                                          le=600)] = 60.0,
        max_output_bytes: Annotated[int, Field(description="Cap on each device's stdout and "
                                                           "on its stderr, in bytes.",
                                               ge=256, le=262_144)] = 16_384,
        user: Annotated[str | None, Field(description="Login user on the devices. Default: "
                                                      "FIOVPN_DEVICE_USER or 'fio'.")] = None,
        config: ConfigParam = None,
    ) -> m.ExecResults:
        """Run one command on many devices at once over SSH through the VPN (key auth,
        host keys checked): by names, a factory device group, a tag, or all VPN-enabled
        devices; `parallel` at a time, each within timeout_s, so a dead device holds none
        of the others. Returns each device's exit code and output (capped, marked when
        truncated) and reports progress as devices finish. Runs the command once per
        device, never retried."""
        with reported():
            s = settings(config=config, user=user)
            with factory_api(None) as api:
                sel = fanout.select(
                    api, names=devices or (), group=group, tag=tag, all_devices=all_devices,
                    list_names=lambda **kw: services.device_names(api, **kw))
            refused = [t.name for t in sel.targets if not active_guard.allows(t.name)]
            for t in sel.targets:
                record_device_call(journal_path(), action="exec_on_devices", device=t.name,
                                   via="mcp", detail={"allowed": t.name not in refused})
            if refused:
                raise ToolError(f"refused: device(s) {', '.join(refused)} are not allowed "
                                f"for this MCP server (--allow-devices "
                                f"{active_guard.allow_devices!r}); nothing was run")
            report = progress_sender(ctx)
            total = len(sel.targets)
            done = [0]
            lock = threading.Lock()

            def finished(r: fanout.ExecResult) -> None:
                with lock:
                    done[0] += 1
                    n = done[0]
                state = f"exit {r.exit_code}" if r.error is None else "error"
                report(n, total, f"{r.name}: {state}")

            report(0, total, f"running on {total} device(s)")
            results = services.run_many(s, services.runner, sel.targets, ["sh", "-c", command],
                                        parallel=parallel, timeout=timeout_s,
                                        on_done=finished)
        rows, squeezed = _exec_rows(results, max_output_bytes)
        failed = sum(1 for r in results if not r.ok)
        message = (f"{total - failed} of {total} device(s) exited 0"
                   + (f"; {failed} failed (see exit_code and error)" if failed else "")
                   + (f"; not on the VPN, not run: {', '.join(sel.skipped)}"
                      if sel.skipped else ""))
        return m.ExecResults(command=command, selected_by=sel.how, ok=total - failed,
                             failed=failed, skipped=sel.skipped, results=rows,
                             results_truncated=squeezed, message=message)

    def copy_tool(device: str, sources: list[str], destination: str, recursive: bool,
                  user: str | None, config: str | None) -> m.CopyResult:
        with reported():
            s = settings(config=config, user=user)
            with tempfile.TemporaryFile() as err, lazy_api(s) as api:
                try:
                    data = services.copy(s, services.runner, sources, destination,
                                         recursive=recursive, api=api, stderr=err,
                                         stdout=subprocess.DEVNULL)
                except FiovpnError as exc:
                    err.seek(0)
                    said = err.read().decode("utf-8", "replace").strip().splitlines()
                    if said:
                        raise ToolError(f"{exc} [{exc.code}]: scp said: "
                                        f"{' | '.join(said[-3:])[:500]}") from exc
                    raise
            where = "to" if data["direction"] == "upload" else "from"
            return m.CopyResult(**data, message=f"copied {where} {data['device']} "
                                                 f"({data['vpn_ip']})")

    PathParam = Annotated[str, Field(description="A path (absolute, or relative to the "
                                                 "home directory on a device / the MCP "
                                                 "server's working directory here).",
                                     min_length=1, max_length=4096)]

    @server.tool(annotations=_hints(read_only=False, destructive=True, idempotent=True,
                                    title="Copy a file to a device"))
    def copy_to_device(
        device: Annotated[str, Field(description="Device name or its VPN IP.",
                                     min_length=1, max_length=127)],
        local_path: PathParam, remote_path: PathParam,
        recursive: Annotated[bool, Field(description="Copy a directory.")] = False,
        user: Annotated[str | None, Field(description="Login user on the device.")] = None,
        config: ConfigParam = None,
    ) -> m.CopyResult:
        """Copy a file (or with recursive, a directory) from this machine to a device,
        with scp through the VPN (key auth, host keys checked). Overwrites remote_path."""
        return copy_tool(device, [_local(local_path)], f"{device}:{remote_path}", recursive,
                         user, config)

    @server.tool(annotations=_hints(read_only=False, destructive=True, idempotent=True,
                                    title="Copy a file from a device"))
    def copy_from_device(
        device: Annotated[str, Field(description="Device name or its VPN IP.",
                                     min_length=1, max_length=127)],
        remote_path: PathParam, local_path: PathParam,
        recursive: Annotated[bool, Field(description="Copy a directory.")] = False,
        user: Annotated[str | None, Field(description="Login user on the device.")] = None,
        config: ConfigParam = None,
    ) -> m.CopyResult:
        """Copy a file (or with recursive, a directory) from a device to this machine,
        with scp through the VPN (key auth, host keys checked). Overwrites local_path."""
        return copy_tool(device, [f"{device}:{remote_path}"], _local(local_path), recursive,
                         user, config)
    return server


def _doc_reader(key: str) -> Callable[[], str]:
    """A parameterless reader of one help page (static resources take no parameters)."""
    def read() -> str:
        return _doc(key)
    read.__name__ = f"docs_{key}"
    return read


def _removed_entries(answer: Any) -> list[m.ClientEntry]:
    """``server clients remove --json`` answers the removed entries (a list, or an object
    holding them under ``removed``)."""
    if isinstance(answer, dict):
        answer = answer.get("removed", [answer] if "public_key" in answer else [])
    if not isinstance(answer, list):
        raise ToolError(f"unexpected answer from the server: {answer!r}"[:200])
    return [m.ClientEntry.model_validate(e) for e in answer]


def progress_sender(ctx: Context) -> Callable[[float, float | None, str | None], None]:
    """``report(progress, total, message)`` callable from the worker thread a sync tool
    runs in; a client that asked for no progress gets none, and a failed notification
    never fails the tool."""
    try:  # the event loop's token, so that threads this tool starts can report too
        token = anyio.from_thread.run_sync(anyio.lowlevel.current_token)
    except RuntimeError:
        token = None

    def report(progress: float, total: float | None, message: str | None) -> None:
        with contextlib.suppress(Exception):
            anyio.from_thread.run(ctx.report_progress, progress, total, message, token=token)
    return report


def _local(path: str) -> str:
    """A local path for scp: never read as DEVICE:PATH."""
    return path if "/" in path.partition(":")[0] or ":" not in path else f"./{path}"


# The whole exec answer stays under this many bytes of output (the model reads it all).
EXEC_OUTPUT_BUDGET = 1_048_576


def _exec_rows(results: list[fanout.ExecResult], limit: int
               ) -> tuple[list[m.ExecDeviceResult], bool]:
    """Each device's output capped at ``limit`` bytes a stream, and lower still when the
    devices together would exceed ``EXEC_OUTPUT_BUDGET``; whether that happened."""
    per = limit
    if results and 2 * limit * len(results) > EXEC_OUTPUT_BUDGET:
        per = max(256, EXEC_OUTPUT_BUDGET // (2 * len(results)))
    squeezed = per < limit and any(
        len(r.stdout) > per or len(r.stderr) > per for r in results)
    rows = []
    for r in results:
        out, out_cut, out_n, out_esc = _cap(r.stdout, per)
        err, err_cut, err_n, err_esc = _cap(r.stderr, per)
        rows.append(m.ExecDeviceResult(
            name=r.name, vpn_ip=str(r.vpn_ip), exit_code=r.exit_code, stdout=out,
            stderr=err, stdout_truncated=out_cut, stderr_truncated=err_cut,
            stdout_bytes=out_n, stderr_bytes=err_n, stdout_escaped=out_esc,
            stderr_escaped=err_esc, duration_s=round(r.duration_s, 3), error=r.error))
    return rows, squeezed


def _cap(data: bytes, limit: int) -> tuple[str, bool, int, bool]:
    """Output bytes as text of at most ``limit`` bytes: whether it was cut, its full size
    in bytes, and whether bytes that are not UTF-8 were written as ``\\xNN`` escapes.
    A cut never splits a character (nor counts as an escape)."""
    cut = data[:limit]
    if len(data) > limit:
        for k in range(4):  # drop a character the cut split in two
            try:
                cut[:len(cut) - k].decode("utf-8")
            except UnicodeDecodeError:
                continue
            cut = cut[:len(cut) - k]
            break
    text, escaped = device_access.decode_output(cut)
    return text, len(data) > limit, len(data), escaped
