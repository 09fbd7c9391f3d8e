"""Settings, loaded and validated once at the edge: flags > env > TOML file > defaults.

Every system path is a setting, so tests point each one at a temp dir.
The server reads ``/etc/fiovpn/server.toml`` (``--config`` or env
``FIOVPN_SERVER_CONFIG``); engineers read ``~/.config/fiovpn/config.toml``
(env ``FIOVPN_CLIENT_SETTINGS``). TOML keys are the long flag names
(``api-url``, ``clients-file``, ...).
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, TypeVar

from fiovpn.core.addresses import VpnNetwork
from fiovpn.core.listen import Listen
from fiovpn.core.names import validate_interface, validate_name
from fiovpn.errors import BadInput

DEFAULT_API_URL = "https://api.foundries.io"
SERVER_CONFIG_ENV = "FIOVPN_SERVER_CONFIG"
CLIENT_SETTINGS_ENV = "FIOVPN_CLIENT_SETTINGS"
API_TOKEN_ENV = "FIOVPN_API_TOKEN"  # noqa: S105 (a variable name; read by adapters/factory.py)
DEFAULT_SERVER_CONFIG = Path("/etc/fiovpn/server.toml")


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


@dataclass(frozen=True)
class ServerSettings:
    factory: str | None = None
    api_url: str | None = None  # None: fioctl's server.url, else DEFAULT_API_URL
    api_token_file: Path | None = None
    interface: str = "factory"
    private_key: Path = Path("/etc/fiovpn/server.key")
    subnet: str = "10.42.42.0/24"
    address: str | None = None  # server VPN address; default: first host of subnet
    port: int = 5555
    endpoint: str | None = None
    client_pool: str | None = None
    interval: float = 60.0
    clients_file: Path = Path("/etc/wireguard/factory-clients.conf")
    hosts_file: Path = Path("/etc/hosts")
    state_dir: Path = Path("/var/lib/fiovpn")
    # where a running daemon says so (``services/run_dir.py``): read from the
    # settings file or $FIOVPN_RUN_DIR only (no flag), so the daemon and every CLI
    # agree on it even when the daemon has other settings on its command line
    run_dir: Path = Path("/run/fiovpn")
    allow_device_to_device: bool = False
    unit_dir: Path = Path("/etc/systemd/system")
    ssh_port: int = 5025
    wireguard_go: str = "wireguard-go"
    nft_table: str = "fiovpn"
    ip_forward_file: Path = Path("/proc/sys/net/ipv4/ip_forward")
    # the server SSH's authorized_keys, where `server admins` keeps admins' keys
    authorized_keys: Path = Path("/root/.ssh/authorized_keys")
    http: str | None = None  # ADDR:PORT of /metrics, the dashboard and /api/status
    # High availability (SPEC section 14): the floating address keepalived moves,
    # the other server (USER@HOST[:PORT], over SSH) and how to reach it.
    ha_vip: str | None = None
    ha_peer: str | None = None
    ha_peer_command: str = "fiovpn"
    ha_identity_file: Path | None = None
    ha_known_hosts: Path | None = None
    ha_sync_interval: float = 2.0
    ssh_host_key: Path = Path("/etc/ssh/ssh_host_ed25519_key")
    local_addresses_file: Path = Path("/proc/net/fib_trie")

    def network(self) -> VpnNetwork:
        return VpnNetwork.build(self.subnet, self.address, self.client_pool)

    def http_listen(self) -> Listen | None:
        return Listen.parse(self.http) if self.http else None

    def validate(self) -> ServerSettings:
        validate_interface(self.interface)
        validate_name(self.nft_table, what="nft table name")
        if self.factory is not None:
            validate_name(self.factory, what="factory name")
        self.network()
        if not 0 < self.port < 65536:
            raise BadInput(f"invalid port {self.port}: expected 1-65535")
        if self.interval <= 0:
            raise BadInput(f"invalid interval {self.interval}: must be positive")
        self.http_listen()
        if self.ha_vip is not None:
            from fiovpn.core.ha import parse_vip

            parse_vip(self.ha_vip, self.network())
        if self.ha_peer is not None:
            from fiovpn.adapters.ssh import parse_ha_peer

            parse_ha_peer(self.ha_peer)
        if self.ha_sync_interval <= 0:
            raise BadInput(f"invalid ha-sync-interval {self.ha_sync_interval}: must be "
                           "positive")
        return self

    @property
    def vip(self) -> IPv4Address | None:
        """The HA floating address, when HA mode is on."""
        if self.ha_vip is None:
            return None
        from fiovpn.core.ha import parse_vip

        return parse_vip(self.ha_vip, self.network())


def default_journal() -> Path:
    """The engineer's journal of device-touching commands and MCP calls
    (``$FIOVPN_JOURNAL`` even for settings built in code, so no test writes ~)."""
    if os.environ.get("FIOVPN_JOURNAL"):
        return Path(os.environ["FIOVPN_JOURNAL"])
    return _home() / ".local" / "state" / "fiovpn" / "journal.jsonl"


def default_device_cache() -> Path:
    """Where ``fiovpn ssh`` remembers device names' VPN IPs (``$FIOVPN_DEVICE_CACHE``
    even for settings built in code, so no test writes ~; else the XDG cache dir)."""
    if os.environ.get("FIOVPN_DEVICE_CACHE"):
        return Path(os.environ["FIOVPN_DEVICE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(_home() / ".cache")
    return Path(base) / "fiovpn" / "devices.json"


def default_client_config() -> Path:
    return _home() / ".config" / "wireguard" / "foundries.conf"


@dataclass(frozen=True)
class ClientSettings:
    config: Path = dataclasses.field(default_factory=default_client_config)
    factory: str | None = None
    api_url: str | None = None  # None: fioctl's server.url, else DEFAULT_API_URL
    api_token_file: Path | None = None
    server_ssh: str = "root@10.42.42.1:5025"
    server_command: str = "fiovpn"
    user: str = "fio"
    identity_file: Path | None = None
    known_hosts: Path | None = None
    ssh_options: tuple[str, ...] = ()  # extra `-o K=V` options (the test lab uses these)
    ssh_config: Path | None = None  # `ssh -F`: None reads ~/.ssh/config as ssh does
    hosts_file: Path = Path("/etc/hosts")
    subnet: str = "10.42.42.0/24"
    client_pool: str | None = None
    journal: Path = dataclasses.field(default_factory=lambda: default_journal())
    # device name -> VPN IP as the factory last listed them (services/device_cache.py)
    device_cache: Path = dataclasses.field(default_factory=lambda: default_device_cache())
    device_cache_ttl: float = 300.0  # seconds a cached IP is used; 0: always ask
    # where the devices keep NetworkManager's keyfiles and dispatcher scripts (LmP's)
    device_keyfile_dir: Path = Path("/etc/NetworkManager/system-connections")
    device_dispatcher_dir: Path = Path("/etc/NetworkManager/dispatcher.d")

    def validate(self) -> ClientSettings:
        if self.factory is not None:
            validate_name(self.factory, what="factory name")
        if not self.device_cache_ttl >= 0:
            raise BadInput(f"invalid device-cache-ttl {self.device_cache_ttl:g}: seconds, "
                           "0 or more (0 turns the cache off)", code="bad_setting")
        for name in ("device_keyfile_dir", "device_dispatcher_dir"):
            value = str(getattr(self, name))
            if not value.startswith("/") or any(c.isspace() or c in "'\"$`\\;&|<>*?"
                                                for c in value):
                raise BadInput(f"invalid {name.replace('_', '-')} {value!r}: an absolute "
                               "path on the device, without spaces or shell characters",
                               code="bad_setting")
        return self

    def network(self) -> VpnNetwork:
        return VpnNetwork.build(self.subnet, None, self.client_pool)


S = TypeVar("S", ServerSettings, ClientSettings)

_ENV: dict[str, str] = {
    "factory": "FIOVPN_FACTORY",
    "api_url": "FIOVPN_API_URL",
    "server_ssh": "FIOVPN_SERVER_SSH",
    "server_command": "FIOVPN_SERVER_COMMAND",
    "user": "FIOVPN_DEVICE_USER",
    "journal": "FIOVPN_JOURNAL",
    "device_cache": "FIOVPN_DEVICE_CACHE",
    "run_dir": "FIOVPN_RUN_DIR",
}


_FIELD_TYPES: dict[type[Any], dict[str, Any]] = {}


def _field_types(cls: type[Any]) -> dict[str, Any]:
    """The fields' types, resolved once per settings class (each resolution evaluates
    every annotation of the class: once per setting given cost milliseconds a call)."""
    if cls not in _FIELD_TYPES:
        _FIELD_TYPES[cls] = typing.get_type_hints(cls)
    return _FIELD_TYPES[cls]


def _coerce(cls: type[Any], name: str, value: Any, source: str) -> Any:
    hint = _field_types(cls)[name]
    args = typing.get_args(hint)
    base = hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        base = next(a for a in args if a is not type(None))
    if value is None:
        return None
    try:
        if base is Path:
            if not isinstance(value, str | Path) or not str(value):
                raise TypeError(value)
            return Path(str(value)).expanduser()
        if base is bool:
            if isinstance(value, bool):
                return value
            low = str(value).lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if base is int:
            # TOML true or 5555.7 are not ports: refuse instead of guessing.
            if isinstance(value, bool | float):
                raise TypeError(value)
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise TypeError(value)
            return float(value)
        if typing.get_origin(base) is tuple:
            if isinstance(value, str):
                return (value,)
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise TypeError(value)
            return tuple(value)
        if not isinstance(value, str):
            raise TypeError(value)
        return value
    except (TypeError, ValueError):
        raise BadInput(f"invalid value {value!r} for {name.replace('_', '-')} in {source}",
                       code="bad_setting") from None


def load_toml(path: Path, *, required: bool) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise BadInput(f"settings file {path} does not exist", code="bad_setting") from None
        return {}
    except PermissionError:
        if required:
            raise BadInput(f"cannot read settings file {path}: permission denied",
                           code="bad_setting") from None
        return {}
    import tomllib  # here: only when there is a file (`fiovpn ssh` starts without it)

    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"settings file {path} is not valid TOML: {exc}",
                       code="bad_setting") from None
    if isinstance(data.get("server"), dict):
        data = {**data, **data["server"]}
        del data["server"]
    return data


def load(cls: type[S], *, toml_path: Path | None, toml_required: bool,
         flags: Mapping[str, Any], env: Mapping[str, str] | None = None) -> S:
    """Build settings from defaults < TOML < env < flags (``None`` flags are unset)."""
    env = os.environ if env is None else env
    fields = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if toml_path is not None:
        source = str(toml_path)
        for key, value in load_toml(toml_path, required=toml_required).items():
            name = key.replace("-", "_")
            if name not in fields:
                raise BadInput(f"unknown setting {key!r} in {source}", code="bad_setting")
            values[name] = _coerce(cls, name, value, source)
    for name, var in _ENV.items():
        if name in fields and env.get(var):
            values[name] = _coerce(cls, name, env[var], f"${var}")
    for name, value in flags.items():
        if value is None or name not in fields:
            continue
        values[name] = _coerce(cls, name, value, f"--{name.replace('_', '-')}")
    return cls(**values).validate()


def server_config_file(config: Path | None = None,
                       env: Mapping[str, str] | None = None) -> Path | None:
    """The settings file a server command was pointed at (``--config``, else
    ``$FIOVPN_SERVER_CONFIG``); None when it reads the default (which may not exist)."""
    env = os.environ if env is None else env
    if config is not None:
        return config
    return Path(env[SERVER_CONFIG_ENV]) if env.get(SERVER_CONFIG_ENV) else None


def server_settings_file(config: Path | None = None,
                         env: Mapping[str, str] | None = None) -> Path:
    """The settings file a server command reads (``server_config_file``, else the
    default, which may not exist), absolute: what the daemon records with its
    effective settings, so a CLI can tell an edit of that file from another file."""
    return (server_config_file(config, env) or DEFAULT_SERVER_CONFIG).absolute()


def load_server(flags: Mapping[str, Any], config: Path | None = None,
                env: Mapping[str, str] | None = None) -> ServerSettings:
    env = os.environ if env is None else env
    given = server_config_file(config, env)
    path, required = (given, True) if given is not None else (DEFAULT_SERVER_CONFIG, False)
    return load(ServerSettings, toml_path=path, toml_required=required, flags=flags, env=env)


def settings_record(settings: ServerSettings) -> dict[str, Any]:
    """Every field of ``settings`` as JSON values (paths as strings), to record the
    daemon's effective settings; ``settings_from_record`` reads it back."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        out[f.name] = str(value) if isinstance(value, Path) else value
    return out


def server_overrides(flags: Mapping[str, Any], env: Mapping[str, str] | None = None
                     ) -> dict[str, Any]:
    """The server settings ``flags`` and the environment set, as JSON values (what
    ``load_server`` takes from them over the settings file): the daemon records
    them so a CLI can rebuild what it would run with after a settings-file edit."""
    env = os.environ if env is None else env
    fields = {f.name for f in dataclasses.fields(ServerSettings)}
    out: dict[str, Any] = {name: env[var] for name, var in _ENV.items()
                           if name in fields and env.get(var)}
    out.update({name: value for name, value in flags.items()
                if value is not None and name in fields})
    return {name: str(v) if isinstance(v, Path) else v for name, v in out.items()}


def settings_from_record(record: Mapping[str, Any], *, source: str) -> ServerSettings:
    """``ServerSettings`` from ``settings_record``'s output (unknown keys ignored:
    a newer daemon may record more)."""
    fields = {f.name for f in dataclasses.fields(ServerSettings)}
    values = {name: _coerce(ServerSettings, name, value, source)
              for name, value in record.items() if name in fields}
    return ServerSettings(**values).validate()


def load_client(flags: Mapping[str, Any], env: Mapping[str, str] | None = None) -> ClientSettings:
    env = os.environ if env is None else env
    if env.get(CLIENT_SETTINGS_ENV):
        path, required = Path(env[CLIENT_SETTINGS_ENV]), True
    else:
        path, required = _home() / ".config" / "fiovpn" / "config.toml", False
    return load(ClientSettings, toml_path=path, toml_required=required, flags=flags, env=env)


def toml_value(value: Any) -> str:
    """A TOML value for the settings we write: bools, numbers, lists, else a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def render_toml(values: Mapping[str, Any], *, header: str | None = None) -> str:
    """``key = value`` lines (unset values left out), after an optional ``# header``."""
    lines = [f"# {header}"] if header else []
    lines += [f"{k} = {toml_value(v)}" for k, v in values.items() if v is not None]
    return "".join(f"{line}\n" for line in lines)
