"""The engineer's machine: client config, connect / disconnect, status, verify, doctor.

The client config is a wg-quick file (default ``~/.config/wireguard/foundries.conf``);
the interface is named after the file, as with wg-quick. Everything that runs a
program (``wg``, ``wg-quick``, ``nmcli``, ``ping``) goes through the injected
Runner, so unit tests never touch the network.
"""

from __future__ import annotations

import getpass
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from fiovpn.adapters.factory_api import current_file
from fiovpn.adapters.fs import atomic_write, read_text
from fiovpn.adapters.runner import Completed, Runner
from fiovpn.core import wgquick
from fiovpn.core.addresses import default_pool, parse_pool, parse_subnet
from fiovpn.core.factory_files import WIREGUARD_SERVER_FILE, ServerConfigFile, parse_endpoint
from fiovpn.core.keys import Key, KeyPair, public_key
from fiovpn.core.wgdump import PeerDump, WgDump, parse_dump
from fiovpn.errors import (
    ApiError,
    BadInput,
    FiovpnError,
    MissingTool,
    NotFound,
    PermanentError,
)
from fiovpn.services import device_access
from fiovpn.services.client_config import (
    ApiFactory,
    default_api,
    interface_name,
    load_config,
    server_vpn_address,
)
from fiovpn.services.keys import default_key_path, read_private_key
from fiovpn.settings import ClientSettings

Clock = Callable[[], float]

# WireGuard drops a session 180 s after its handshake (REJECT_AFTER_TIME); a handshake
# younger than that proves the server accepts this key now.
FRESH_HANDSHAKE_S = 180
DEFAULT_SERVER_PORT = 5555


@dataclass(frozen=True)
class InitResult:
    public_key: Key
    config: Path
    address: str | None
    created: bool
    changed: tuple[str, ...]
    next_step: str
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"public_key": str(self.public_key), "config": str(self.config),
                "address": self.address, "created": self.created,
                "changed": list(self.changed), "next_step": self.next_step,
                "warnings": list(self.warnings)}


def _suggested_name() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        return "NAME"
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", user).strip("-.")
    return cleaned or "NAME"


def next_step_for_key(pub: Key, address: str | None, *, new_key: bool = False,
                      old_key: Key | None = None) -> str:
    """What to do after ``client init``. A ``new_key`` (``--force``) is unknown to the
    server even when the config keeps an address: it must be registered first."""
    name = _suggested_name()
    if new_key:
        ip = f" --ip {address}" if address else ""
        drop = (f"  fiovpn unregister --public-key {old_key}\n" if old_key is not None
                else "")
        return (f"This is a new key: the server does not know it yet. Send your public key "
                f"{pub} to a Foundries VPN admin, who runs:\n{drop}"
                f"  fiovpn register --public-key {pub} --name {name}{ip}\n"
                "Then, if the IP they give you differs, run `fiovpn client init --address "
                "IP`, and run `fiovpn connect`.")
    if address:
        return ("Connect with `fiovpn connect`, then check with `fiovpn verify`. If no "
                f"handshake happens, make sure an admin registered {pub}.")
    return (f"Send your public key {pub} to a Foundries VPN admin, who runs:\n"
            f"  fiovpn register --public-key {pub} --name {name}\n"
            "(the first admin, on the server itself: "
            f"fiovpn server clients add --public-key {pub} --name {name})\n"
            "Then set the address they give you: `fiovpn client init --address IP`, "
            "and run `fiovpn connect`.")


def _server_from_factory(api: ApiFactory) -> ServerConfigFile:
    try:
        entries = api().factory_config()
    except (BadInput, ApiError) as exc:
        raise type(exc)(f"cannot read the server's endpoint and key from the factory: "
                        f"{exc.message}", code=exc.code,
                        hint=(exc.hint + "; or " if exc.hint else "")
                        + "pass --server-endpoint HOST:PORT and --server-public-key KEY "
                          "(an admin has them: `fiovpn server status` on the server)"
                        ) from None
    f = current_file(entries, WIREGUARD_SERVER_FILE)
    if f is None:
        raise NotFound("the factory has no wireguard-server config: VPN is not enabled",
                       code="vpn_not_enabled",
                       hint="an admin runs `fiovpn server enable` on the server, or pass "
                            "--server-endpoint and --server-public-key")
    server = ServerConfigFile.parse(f.value)
    if not server.enabled:
        raise PermanentError("VPN access is disabled for this factory (wireguard-server has "
                             "enabled=0)", code="vpn_disabled",
                             hint="an admin re-enables it with `fiovpn server enable`")
    return server


def check_client_address(addr: IPv4Interface, networks: tuple[IPv4Network, ...],
                         server: IPv4Address | None) -> None:
    """The address an admin assigned must be a host of the VPN subnet the tunnel carries
    (not its network or broadcast address) and not the server's own address."""
    ip = addr.ip
    inside = [n for n in networks if ip in n]
    where = ", ".join(str(n) for n in networks)
    hint = "use the IP that `fiovpn register` (or `fiovpn server clients add`) printed"
    if not inside:
        raise BadInput(f"--address {ip} is not in the VPN subnet {where}", code="bad_ip",
                       hint=hint)
    if any(n.prefixlen < 31 and ip in (n.network_address, n.broadcast_address)
           for n in inside):
        raise BadInput(f"--address {ip} is not a host address of the VPN subnet {where}",
                       code="bad_ip", hint=hint)
    if server is not None and ip == server:
        raise BadInput(f"--address {ip} is the server's own VPN address", code="bad_ip",
                       hint=hint)


def client_pool_warning(ip: IPv4Address, networks: tuple[IPv4Network, ...],
                        settings: ClientSettings) -> str | None:
    """A warning when ``ip`` lies outside the client pool, in the device space.

    The client cannot know the server's ``--client-pool`` for sure: it uses its own
    ``client-pool`` setting when set, else the default rule for the subnet, and says
    which one it used."""
    subnet = next((n for n in networks if ip in n), None)
    if subnet is None:
        return None
    if settings.client_pool:
        try:
            pool = parse_pool(settings.client_pool, subnet)
        except BadInput:
            return None
        which = f"the client pool {pool} (your client-pool setting)"
    else:
        pool = default_pool(subnet)
        which = (f"the client pool {pool} (the default for {subnet}; the server's "
                 "--client-pool may differ)")
    if ip in pool:
        return None
    return (f"{ip} is outside {which}: that is device space, where the factory hands out "
            "device IPs, so it will conflict with a device (the server keeps the device and "
            "does not apply this client); use the IP that `fiovpn register` printed")


def init_client(settings: ClientSettings, *, address: str | None = None,
                server_endpoint: str | None = None, server_public_key: str | None = None,
                force: bool = False, api: ApiFactory | None = None,
                key_path: Path | None = None) -> InitResult:
    """Create the client config, or change only what is given in an existing one.

    A new config takes its key from ``fiovpn keys generate``'s key file when that
    exists, else a new key. An existing key is never replaced without ``force``;
    ``force`` starts over with a new key (and rewrites the key file, if any, so
    the two agree)."""
    path = settings.config
    wgquick.interface_name(path.name)
    # Validate every input before touching anything.
    iface_addr = wgquick.parse_interface(address, what="address") if address else None
    endpoint = parse_endpoint(server_endpoint, DEFAULT_SERVER_PORT) if server_endpoint else None
    server_key = (Key.parse_public(server_public_key, what="server public key")
                  if server_public_key else None)
    key_file = key_path or default_key_path()
    subnet: IPv4Network = parse_subnet(settings.subnet)
    existing_text = read_text(path)

    if existing_text is not None and not force:
        try:
            doc = wgquick.parse(existing_text, source=str(path))
            view = wgquick.client_view(doc)
        except BadInput as exc:
            raise BadInput(f"{exc.message}; fix the file or start over with --force",
                           code=exc.code) from None
        if view.private_key is None:
            raise BadInput(f"{path} has no PrivateKey; start over with --force",
                           code="no_key")
        warnings: list[str] = []
        if iface_addr is not None:
            networks = view.allowed_ips or (subnet,)
            check_client_address(iface_addr, networks, server_vpn_address(settings, view))
            warning = client_pool_warning(iface_addr.ip, networks, settings)
            warnings += [warning] if warning else []
        changed: list[str] = []
        if iface_addr is not None and iface_addr not in view.addresses:
            doc = doc.with_interface("Address", str(iface_addr))
            changed.append("address")
        if (endpoint or server_key) and not doc.peers:
            raise BadInput(f"{path} has no [Peer] section; start over with --force",
                           code="bad_config")
        if endpoint is not None and endpoint != view.endpoint:
            doc = doc.with_peer(0, "Endpoint", endpoint)
            changed.append("server_endpoint")
        if server_key is not None and server_key != view.server_public_key:
            doc = doc.with_peer(0, "PublicKey", str(server_key))
            changed.append("server_public_key")
        if changed:
            atomic_write(path, doc.render(), mode=0o600)
        view = wgquick.client_view(doc)
        pub = public_key(view.private_key) if view.private_key else None
        assert pub is not None
        addr = str(view.address) if view.address else None
        return InitResult(pub, path, addr, False, tuple(changed), next_step_for_key(pub, addr),
                          tuple(warnings))

    # A new config (or --force): the server peer from flags, else the old config (force),
    # else the factory's wireguard-server file.
    old_view: wgquick.ClientConfig | None = None
    if existing_text is not None:
        try:
            old_view = wgquick.client_view(wgquick.parse(existing_text))
        except BadInput:
            old_view = None
    server_address: IPv4Address | None = None
    if endpoint is None and old_view is not None and old_view.endpoint:
        endpoint = old_view.endpoint
    if server_key is None and old_view is not None:
        server_key = old_view.server_public_key
    if old_view is not None:
        server_address = old_view.server_address
    if endpoint is None or server_key is None:
        server = _server_from_factory(api or default_api(settings))
        endpoint = endpoint or server.endpoint
        server_key = server_key or server.pubkey
        server_address = server_address or server.server_address
    if server_address is None:
        server_address = server_vpn_address(settings)
    new_warnings: list[str] = []
    if iface_addr is not None:
        check_client_address(iface_addr, (subnet,), server_address)
        warning = client_pool_warning(iface_addr.ip, (subnet,), settings)
        new_warnings += [warning] if warning else []
    elif old_view is not None and old_view.addresses:
        iface_addr = old_view.addresses[0]

    if force:
        pair = KeyPair.generate()
        private = pair.private
        if key_file.exists():
            atomic_write(key_file, f"{private}\n", mode=0o600)
    elif key_file.exists():
        private = read_private_key(key_file)
    else:
        private = KeyPair.generate().private
    doc = wgquick.new_client_config(
        private_key=private, address=iface_addr, server_public_key=server_key,
        endpoint=endpoint, allowed_ips=subnet, server_address=server_address)
    atomic_write(path, doc.render(), mode=0o600)
    pub = public_key(private)
    addr = str(iface_addr.ip) if iface_addr else None
    old_key = (public_key(old_view.private_key)
               if old_view is not None and old_view.private_key is not None else None)
    replaced = force and existing_text is not None
    return InitResult(pub, path, addr, True, ("config",),
                      next_step_for_key(pub, addr, new_key=replaced,
                                        old_key=old_key if replaced else None),
                      tuple(new_warnings))


# --- the live interface -------------------------------------------------------------------


def read_dump(runner: Runner, iface: str) -> WgDump | None:
    """The interface's ``wg show dump``, or None when it does not exist."""
    result = runner.run(["wg", "show", iface, "dump"], check=False, timeout=10)
    if not result.ok:
        err = result.stderr.lower()
        if "operation not permitted" in err or "permission denied" in err:
            raise PermanentError(f"reading WireGuard interface {iface} needs root",
                                 code="needs_root",
                                 hint="run it with sudo, naming your config (sudo changes "
                                      "HOME): sudo fiovpn <command> --config PATH")
        return None
    return parse_dump(result.stdout)


def nm_running(runner: Runner) -> bool:
    """True when NetworkManager runs here (then connections go through it)."""
    try:
        result = runner.run(["nmcli", "-t", "-f", "RUNNING", "general"], check=False,
                            timeout=10)
    except MissingTool:
        return False
    return result.ok and result.stdout.strip() == "running"


def _nm_has(runner: Runner, name: str) -> bool:
    result = runner.run(["nmcli", "-t", "-f", "NAME", "connection", "show"], check=False,
                        timeout=10)
    return result.ok and name in result.stdout.split("\n")


@dataclass(frozen=True)
class ConnectResult:
    interface: str
    config: Path
    connected: bool
    changed: bool
    backend: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"interface": self.interface, "config": str(self.config),
                "connected": self.connected, "changed": self.changed,
                "backend": self.backend, "message": self.message}


def connect(settings: ClientSettings, runner: Runner) -> ConnectResult:
    """Bring the tunnel up with wg-quick (or NetworkManager when it runs). Idempotent."""
    iface = interface_name(settings)
    doc = load_config(settings.config)
    view = wgquick.client_view(doc)
    if view.private_key is None or not doc.peers:
        raise BadInput(f"{settings.config} has no key or no server peer",
                       code="bad_config", hint="run `fiovpn client init --force`")
    if read_dump(runner, iface) is not None:
        return ConnectResult(iface, settings.config, True, False, "-",
                             f"already connected ({iface} is up)")
    if nm_running(runner):
        if _nm_has(runner, iface):
            # Re-import so NetworkManager uses the current file, not an old copy.
            runner.run(["nmcli", "connection", "delete", iface], timeout=30)
        runner.run(["nmcli", "connection", "import", "type", "wireguard", "file",
                    str(settings.config)], timeout=30)
        runner.run(["nmcli", "connection", "up", iface], timeout=60)
        backend = "networkmanager"
    else:
        result = runner.run(["wg-quick", "up", str(settings.config)], check=False,
                            timeout=60)
        if not result.ok:
            raise wg_quick_failed(result, settings.config)
        backend = "wg-quick"
    return ConnectResult(iface, settings.config, True, True, backend,
                         f"connected: {iface} is up ({backend})")


def wg_quick_failed(result: Completed, config: Path) -> PermanentError:
    """``wg-quick up`` failed: its cause, not the ``[#] ip link delete`` of its cleanup
    (always its last line)."""
    lines = [ln.strip() for ln in (result.stderr + "\n" + result.stdout).splitlines()]
    causes = [ln for ln in lines if ln and not ln.startswith(("[#]", "[!]"))
              and ln[0] not in "│┌└─"]
    cause = causes[-1] if causes else f"exit code {result.returncode}"
    hint = f"run `wg-quick up {config}` to see its full output"
    low = cause.lower()
    if "file exists" in low:
        hint = ("another interface already has this address or a route to the VPN subnet: "
                "is another VPN config connected? (`wg show`, `ip route`); " + hint)
    elif "must be run as root" in low or "permission denied" in low \
            or "operation not permitted" in low:
        hint = ("connecting needs root: sudo fiovpn connect --config PATH (sudo changes "
                "HOME)")
    return PermanentError(f"wg-quick could not bring the tunnel up: {cause}",
                          code="connect_failed", hint=hint)


def disconnect(settings: ClientSettings, runner: Runner) -> ConnectResult:
    """Take the tunnel down. Idempotent."""
    iface = interface_name(settings)
    if read_dump(runner, iface) is None:
        return ConnectResult(iface, settings.config, False, False, "-",
                             f"already disconnected ({iface} is not up)")
    if nm_running(runner) and _nm_has(runner, iface):
        runner.run(["nmcli", "connection", "down", iface], timeout=60)
        backend = "networkmanager"
    else:
        runner.run(["wg-quick", "down", str(settings.config)], timeout=60)
        backend = "wg-quick"
    return ConnectResult(iface, settings.config, False, True, backend,
                         f"disconnected: {iface} is down")


def _server_peer(dump: WgDump, view: wgquick.ClientConfig) -> PeerDump | None:
    if view.server_public_key is not None:
        found = dump.peer(view.server_public_key)
        if found is not None:
            return found
    return dump.peers[0] if dump.peers else None


def handshake_age(peer: PeerDump | None, now: float) -> int | None:
    if peer is None or peer.latest_handshake <= 0:
        return None
    return max(0, int(now - peer.latest_handshake))


def status(settings: ClientSettings, runner: Runner, *, now: Clock = time.time
           ) -> dict[str, Any]:
    """Interface, address, the server peer, handshake age and transfer."""
    iface = interface_name(settings)
    doc = load_config(settings.config)
    view = wgquick.client_view(doc)
    dump = read_dump(runner, iface)
    peer = _server_peer(dump, view) if dump else None
    return {
        "interface": iface,
        "config": str(settings.config),
        "connected": dump is not None,
        "address": str(view.address) if view.address else None,
        "public_key": str(public_key(view.private_key)) if view.private_key else None,
        "server_address": str(server_vpn_address(settings, view)),
        "peer": None if peer is None else {
            "public_key": str(peer.public_key),
            "endpoint": peer.endpoint,
            "allowed_ips": list(peer.allowed_ips),
            "latest_handshake": peer.latest_handshake,
            "handshake_age_s": handshake_age(peer, now()),
            "rx": peer.rx,
            "tx": peer.tx,
        },
    }


def ping(runner: Runner, ip: IPv4Address | str, *, count: int = 1, wait_s: int = 2) -> bool:
    result = runner.run(["ping", "-n", "-c", str(count), "-W", str(wait_s), str(ip)],
                        check=False, timeout=count * wait_s + 5)
    return result.ok


@dataclass(frozen=True)
class VerifyResult:
    connected: bool
    handshake_age_s: int | None
    server_reachable: bool
    server_address: str
    interface: str

    @property
    def ok(self) -> bool:
        return self.connected and self.server_reachable

    def to_json(self) -> dict[str, Any]:
        return {"connected": self.connected, "handshake_age_s": self.handshake_age_s,
                "server_reachable": self.server_reachable,
                "server_address": self.server_address, "interface": self.interface}


def verify(settings: ClientSettings, runner: Runner, *, now: Clock = time.time
           ) -> VerifyResult:
    """Is the tunnel up, when was the last handshake, does the server answer a ping?"""
    iface = interface_name(settings)
    view = wgquick.client_view(load_config(settings.config))
    server = server_vpn_address(settings, view)
    dump = read_dump(runner, iface)
    if dump is None:
        return VerifyResult(False, None, False, str(server), iface)
    reachable = ping(runner, server)
    # The ping itself may have caused the first handshake: read it again.
    dump = read_dump(runner, iface) or dump
    age = handshake_age(_server_peer(dump, view), now())
    return VerifyResult(True, age, reachable, str(server), iface)


# --- registration by handshake ------------------------------------------------------------


def not_registered_step(pub: Key) -> str:
    return (f"send your public key {pub} to an admin, who runs "
            f"`fiovpn register --public-key {pub}`; if you are registered, check that the "
            "server is reachable (`fiovpn doctor`)")


# A held session answers data at once; a new handshake is retried by WireGuard every 5 s
# (REKEY_TIMEOUT), so the window for a handshake covers one retry.
ANSWER_WINDOW_S = 3.0
HANDSHAKE_WINDOW_S = 6.0


@dataclass(frozen=True)
class ServerAnswer:
    """What traffic sent now says about this key: the server answered it or not."""

    connected: bool
    answered: bool  # the server sent something after the probe: it holds this key now
    ping_ok: bool
    handshake_age_s: int | None
    new_session: bool  # a fresh handshake was forced because the old session went unanswered


def _counters(peer: PeerDump | None) -> tuple[int, int]:
    return (peer.latest_handshake, peer.rx) if peer is not None else (0, 0)


def _probe(runner: Runner, iface: str, view: wgquick.ClientConfig, server: IPv4Address,
           peer: PeerDump | None, window_s: float, monotonic: Clock,
           sleep: Callable[[float], None]) -> tuple[bool, bool, PeerDump | None]:
    """Ping the server until it answers or ``window_s`` passed: (answered, ping_ok, peer).
    Answered = the ping came back, or the peer's rx / latest handshake moved."""
    before = _counters(peer)
    deadline = monotonic() + window_s
    while True:
        ping_ok = ping(runner, server, wait_s=1)  # traffic also starts a handshake if needed
        dump = read_dump(runner, iface)
        peer = _server_peer(dump, view) if dump is not None else None
        after = _counters(peer)
        if ping_ok or after[0] > before[0] or after[1] > before[1]:
            return True, ping_ok, peer
        if dump is None or monotonic() >= deadline:
            return False, False, peer
        sleep(0.5)


def _new_session(runner: Runner, iface: str, doc: wgquick.WgQuickConfig,
                 peer: PeerDump) -> bool:
    """Forget the session with the server on this machine's own interface (remove and
    re-add the peer as it is, in one ``wg set``): the next packet starts a handshake.
    False when the peer cannot be put back exactly (a preshared key we do not have)."""
    psk = doc.peers[0].get("PresharedKey") if doc.peers else None
    if peer.has_preshared_key and not psk:
        return False
    key = str(peer.public_key)
    argv = ["wg", "set", iface, "peer", key, "remove", "peer", key]
    if peer.endpoint:
        argv += ["endpoint", peer.endpoint]
    argv += ["allowed-ips", ",".join(peer.allowed_ips)]
    if peer.persistent_keepalive:
        argv += ["persistent-keepalive", str(peer.persistent_keepalive)]
    if psk:
        argv += ["preshared-key", "/dev/stdin"]  # a secret: never on the command line
    runner.run(argv, input=f"{psk}\n" if psk else None, timeout=10)
    return True


def probe_server(settings: ClientSettings, runner: Runner, *,
                 window_s: float = HANDSHAKE_WINDOW_S, now: Clock = time.time,
                 monotonic: Clock = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> ServerAnswer:
    """Does the server accept this key NOW? Sends traffic and reads whether the server
    answered (the tunnel must be up).

    A handshake under 180 s proves nothing by itself: an admin may have removed the
    key a second ago, and the server then drops what this key sends, silently. When a
    live-looking session gets no answer it may also be stale (the server restarted or
    re-added the key): then a fresh handshake is forced, which the server answers only
    when it holds the key. The rule of ``check-registered``, ``doctor`` and the MCP
    ``setup_foundries_vpn`` / ``check_client_peer_registered``."""
    iface = interface_name(settings)
    doc = load_config(settings.config)
    view = wgquick.client_view(doc)
    server = server_vpn_address(settings, view)
    dump = read_dump(runner, iface)
    if dump is None:
        return ServerAnswer(False, False, False, None, False)
    peer = _server_peer(dump, view)
    age = handshake_age(peer, now())
    held = age is not None and age <= FRESH_HANDSHAKE_S
    answered, ping_ok, peer = _probe(runner, iface, view, server, peer,
                                     min(ANSWER_WINDOW_S, window_s) if held else window_s,
                                     monotonic, sleep)
    forced = False
    if not answered and held and peer is not None:
        forced = _new_session(runner, iface, doc, peer)
        if forced:  # the baseline is the new peer as it is now (wg zeroes its counters)
            fresh = read_dump(runner, iface)
            peer = _server_peer(fresh, view) if fresh is not None else None
            answered, ping_ok, peer = _probe(runner, iface, view, server, peer, window_s,
                                             monotonic, sleep)
    return ServerAnswer(True, answered, ping_ok, handshake_age(peer, now()), forced)


def check_registered_local(settings: ClientSettings, runner: Runner, *,
                           timeout: float = HANDSHAKE_WINDOW_S, now: Clock = time.time,
                           monotonic: Clock = time.monotonic,
                           sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Registered = the server answers traffic this key sends now (``probe_server``).
    Connects for the check when not connected (and disconnects again afterwards); no
    admin rights. ``timeout`` bounds each wait for an answer."""
    view = wgquick.client_view(load_config(settings.config))
    if view.private_key is None:
        raise BadInput(f"{settings.config} has no PrivateKey", code="no_key",
                       hint="run `fiovpn client init --force`")
    pub = public_key(view.private_key)
    connected_here = False
    if read_dump(runner, interface_name(settings)) is None:
        connect(settings, runner)
        connected_here = True
    try:
        answer = probe_server(settings, runner, window_s=timeout, now=now,
                              monotonic=monotonic, sleep=sleep)
    finally:
        if connected_here:
            disconnect(settings, runner)
    registered = answer.answered
    return {
        "registered": registered,
        "public_key": str(pub),
        "method": "handshake",
        "handshake_age_s": answer.handshake_age_s if registered else None,
        "message": ("registered: the server answered traffic from this key just now"
                    if registered else "not registered (or server unreachable): the server "
                    "did not answer traffic from this key"),
        "next_step": None if registered else not_registered_step(pub),
    }


# --- doctor -------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool | None  # None: skipped because an earlier check failed
    detail: str
    next_step: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail,
                "next_step": self.next_step}


@dataclass
class Doctor:
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, ok: bool | None, detail: str, next_step: str | None = None
            ) -> bool:
        self.checks.append(Check(name, ok, detail, None if ok else next_step))
        return bool(ok)

    def skip(self, *names: str) -> None:
        for name in names:
            self.checks.append(Check(name, None, "skipped: an earlier check failed"))

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks)


ALL_CHECKS = ("config", "key", "address", "connected", "handshake", "server_reachable",
              "registered")


def doctor(settings: ClientSettings, runner: Runner, *, device: str | None = None,
           api: ApiFactory | None = None, now: Clock = time.time,
           monotonic: Clock = time.monotonic,
           sleep: Callable[[float], None] = time.sleep) -> Doctor:
    """Walk the decision tree; each check says what is wrong and the next step.
    A bad ``device`` is bad input (BadInput, exit 2) before anything runs."""
    if device is not None:
        from fiovpn.services import device_access

        device_access.check_device_ref(settings, device)
    d = Doctor()
    rest = list(ALL_CHECKS)

    def done(name: str) -> None:
        rest.remove(name)

    # 1. config exists and is valid
    try:
        iface = interface_name(settings)
        doc = load_config(settings.config)
        view = wgquick.client_view(doc)
        if not doc.peers:
            raise BadInput(f"{settings.config} has no [Peer] (server) section",
                           code="bad_config")
    except FiovpnError as exc:
        d.add("config", False, str(exc),
              "run `fiovpn client init` (or `fiovpn client init --force` to start over)")
        done("config")
        d.skip(*rest)
        return d
    d.add("config", True, f"{settings.config} is a valid wg-quick config")
    done("config")
    # 2. key
    if view.private_key is None:
        d.add("key", False, "the config has no PrivateKey", "run `fiovpn client init --force`")
        done("key")
        d.skip(*rest)
        return d
    pub = public_key(view.private_key)
    d.add("key", True, f"public key {pub}")
    done("key")
    # 3. address
    d.add("address", view.address is not None,
          f"address {view.address}" if view.address else "the config has no Address",
          "ask the admin who registered you for your VPN IP, then run "
          "`fiovpn client init --address IP`")
    done("address")
    server = server_vpn_address(settings, view)
    # 4. connected
    try:
        dump = read_dump(runner, iface)
    except FiovpnError as exc:
        d.add("connected", False, str(exc), "run fiovpn with sudo")
        done("connected")
        d.skip(*rest)
        return d
    if dump is None:
        d.add("connected", False, f"{iface} is not up", "run `fiovpn connect`")
        done("connected")
        d.skip(*rest)
        return d
    d.add("connected", True, f"{iface} is up")
    done("connected")
    # 5./6. handshake and server reachability: traffic sent now, and whether the server
    # answers it (an old handshake is no proof, see probe_server)
    answer = probe_server(settings, runner, now=now, monotonic=monotonic, sleep=sleep)
    reachable, fresh, age = answer.ping_ok, answer.answered, answer.handshake_age_s
    # Without a handshake nothing passes the tunnel: one cause, said once (under
    # "registered"), with both ways out; never "run doctor" from inside doctor.
    no_handshake = "no handshake, so nothing passes the tunnel: see 'registered' below"
    d.add("handshake", fresh,
          (f"last handshake {age} s ago, and the server answers this key now" if fresh else
           f"last handshake {age} s ago, but the server does not answer this key now"
           if age is not None else "no handshake with the server"),
          no_handshake)
    done("handshake")
    d.add("server_reachable", reachable,
          f"the server {server} answers ping" if reachable else
          f"the server {server} does not answer ping",
          "check that the server daemon runs (`fiovpn server status` on the server) and "
          f"that UDP to {view.endpoint} is not blocked" if fresh else no_handshake)
    done("server_reachable")
    d.add("registered", fresh,
          "registered (the server answers traffic from this key)" if fresh else
          "not registered, or the server is unreachable",
          f"send your public key {pub} to an admin, who runs `fiovpn register --public-key "
          f"{pub}` (or checks it with `fiovpn check-registered --public-key {pub}`); if it "
          f"is registered: is {view.endpoint} the server's current endpoint "
          "(`fiovpn client init --server-endpoint`), UDP to it open, and the server daemon "
          "running (`fiovpn server status` on the server)?")
    done("registered")
    if device is not None:
        _doctor_device(d, settings, runner, device, api)
    return d


def _doctor_device(d: Doctor, settings: ClientSettings, runner: Runner, device: str,
                   api: ApiFactory | None) -> None:
    try:
        target = device_access.resolve_device(settings, device, api=api)
    except FiovpnError as exc:
        d.add("device", False, str(exc), "check the name with `fiovpn devices list`")
        return
    ok = ping(runner, target.ip)
    d.add("device_reachable", ok,
          f"{target.name} ({target.ip}) answers ping" if ok else
          f"{target.name} ({target.ip}) does not answer ping",
          f"is VPN enabled on it? `fiovpn devices enable-vpn {target.name}`; is the device "
          "online? (`fiovpn devices list`)")
    if ok:
        # the device's own live state, from any engineer's machine (no local record)
        try:
            status = device_access.d2d_device(settings, runner, target).status()
        except FiovpnError as exc:
            d.add("device_to_device", None,
                  f"cannot read device-to-device state of {target.name}: {exc.message}",
                  exc.hint or f"try `fiovpn devices d2d-status {target.name}`")
            return
        lasting = status.d2d == status.persistent
        d.add("device_to_device", lasting, status.summary(),
              f"run `fiovpn devices enable-d2d {target.name}` (installs the hook that keeps "
              f"it on) or `fiovpn devices disable-d2d {target.name}`")
