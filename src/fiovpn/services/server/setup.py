"""``server enable`` / ``disable``: publish this server in the factory, write its
settings file and its systemd unit."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from fiovpn.adapters.factory_api import ConfigFile, FactoryApi, current_file
from fiovpn.adapters.fs import atomic_write, loose_secret_file
from fiovpn.core.factory_files import (
    VPN_HANDLER,
    WIREGUARD_SERVER_FILE,
    ServerConfigFile,
    parse_endpoint,
)
from fiovpn.core.keys import Key, public_key
from fiovpn.errors import BadInput, NotFound, PermanentError
from fiovpn.services.keys import ensure_key_file
from fiovpn.settings import SERVER_CONFIG_ENV, ServerSettings, load, render_toml, toml_value

log = logging.getLogger("fiovpn.server")


TOKEN_ENV = "FIOVPN_API_TOKEN"  # noqa: S105 - the name of a variable, not a secret


TOML_KEYS = ("factory", "api_url", "api_token_file", "interface", "private_key", "subnet",
             "address", "port", "endpoint", "client_pool", "interval", "clients_file",
             "hosts_file", "state_dir", "allow_device_to_device", "http", "unit_dir")


def render_server_toml(settings: ServerSettings) -> str:
    return render_toml({name.replace("_", "-"): getattr(settings, name) for name in TOML_KEYS},
                       header="fiovpn server settings (keys are the long flag names of "
                              "`fiovpn server`)")


def fiovpn_command() -> list[str]:
    found = shutil.which("fiovpn")
    return [found] if found else [sys.executable, "-m", "fiovpn"]


def _systemd_arg(arg: str) -> str:
    """One ExecStart word: quoted when it holds whitespace or quotes; ``%`` and
    ``$`` escaped so systemd neither expands specifiers nor variables in it."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and not any(c.isspace() or c in "\"'\\;" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(settings: ServerSettings, config_path: Path) -> str:
    """A systemd unit for the daemon. No secret: the token stays in its 0600 file."""
    exec_start = " ".join(_systemd_arg(a) for a in [*fiovpn_command(), "server", "daemon",
                                                     "--config", str(config_path)])
    return (
        "[Unit]\n"
        f"Description=fiovpn WireGuard server for factory {settings.factory}\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={exec_start}\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "# Stopping or restarting the daemon leaves wireguard-go and every tunnel up.\n"
        "KillMode=process\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def unit_path(settings: ServerSettings) -> Path:
    return settings.unit_dir / f"fiovpn-{settings.factory}.service"


def config_path_for(config: Path | None, env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    if config is not None:
        return config
    if env.get(SERVER_CONFIG_ENV):
        return Path(env[SERVER_CONFIG_ENV])
    return Path("/etc/fiovpn/server.toml")


def _server_file(settings: ServerSettings, endpoint: str, key: Key, *, enabled: bool
                 ) -> ConfigFile:
    server = ServerConfigFile(endpoint, settings.network().server, key, enabled=enabled)
    return ConfigFile(WIREGUARD_SERVER_FILE, server.render(), True, (VPN_HANDLER,))


def enable(settings: ServerSettings, api: FactoryApi, *, endpoint: str,
           config_path: Path, env: dict[str, str] | None = None,
           force: bool = False) -> dict[str, Any]:
    """Publish this server in the factory and install its daemon.

    - server private key: generated if missing (0600);
    - the factory's ``wireguard-server`` file (exactly fioctl's keys);
    - ``config_path`` (the TOML the daemon reads) when it does not exist yet;
    - the systemd unit ``fiovpn-<factory>.service`` in ``unit-dir`` (no secret in it).

    An ``api-token-file`` that group or others may read is refused (exit 2)
    unless ``force``; with ``force`` it is a warning.
    """
    env = dict(os.environ) if env is None else env
    if not settings.factory:
        raise BadInput("no factory given: use --factory F (or env FIOVPN_FACTORY)",
                       code="usage")
    loose = (loose_secret_file(settings.api_token_file, "the factory API token")
             if settings.api_token_file is not None else None)
    if loose is not None and not force:
        raise BadInput(loose + "; nothing was changed", code="token_file_mode",
                       hint="or pass --force to enable anyway")
    ep = parse_endpoint(endpoint, default_port=settings.port)
    if config_path.exists():
        _check_daemon_agrees(settings, config_path)
    private, created = ensure_key_file(settings.private_key)
    pub = public_key(private)
    cfile = _server_file(settings, ep, pub, enabled=True)
    api.patch_factory_config(f"fiovpn: enable WireGuard server {ep}", [cfile])

    wrote_config = False
    warnings: list[str] = [loose] if loose is not None else []
    if config_path.exists() and env.get(TOKEN_ENV):
        daemon = load(ServerSettings, toml_path=config_path, toml_required=True, flags={},
                      env={})
        if daemon.api_token_file is None:
            warnings.append(
                f"the token came from ${TOKEN_ENV}, which the systemd daemon does not see, "
                f"and {config_path} sets no api-token-file: put the token in a 0600 file "
                f"and add `api-token-file = \"/etc/fiovpn/api-token\"` to {config_path}")
    unit = unit_path(settings)
    target = config_path
    try:
        if config_path.exists() and settings.http is not None:
            wrote_config = set_setting(config_path, "http", settings.http)
        elif not config_path.exists():
            to_write = settings
            token = env.get(TOKEN_ENV)
            if settings.api_token_file is None and token:
                target = config_path.parent / "api-token"
                atomic_write(target, token.strip() + "\n", mode=0o600)
                to_write = _replace(settings, api_token_file=target)
            target = config_path
            atomic_write(config_path, render_server_toml(_replace(to_write, endpoint=ep)),
                         mode=0o600)
            wrote_config = True
        target = unit
        atomic_write(unit, render_unit(settings, config_path), mode=0o644)
    except OSError as exc:
        raise PermanentError(
            f"the factory now announces this server, but {target} cannot be written: "
            f"{exc.strerror or exc}", code="write_failed",
            hint="fix that, then run `fiovpn server enable` again") from None
    return {"factory": settings.factory, "endpoint": ep,
            "server_address": str(settings.network().server), "public_key": str(pub),
            "private_key_path": str(settings.private_key), "key_created": created,
            "config": str(config_path), "config_written": wrote_config, "unit": str(unit),
            "http": settings.http, "enabled": True, "warnings": warnings}


def set_setting(path: Path, key: str, value: object) -> bool:
    """Set one ``key = value`` line of a settings file, keeping every other line
    (comments included) and the file's mode; False when it already says so."""
    raw = path.read_text()
    line = f"{key} = {toml_value(value)}"
    lines = raw.splitlines()
    for i, old in enumerate(lines):
        if "=" in old and old.split("=", 1)[0].strip() == key:
            if old.strip() == line:
                return False
            lines[i] = line
            break
    else:
        lines.append(line)
    atomic_write(path, "\n".join(lines) + "\n", mode=path.stat().st_mode & 0o777)
    return True


def _check_daemon_agrees(settings: ServerSettings, config_path: Path) -> None:
    """Refuse to publish a server address, port or key that the daemon (which
    reads only ``config_path``) would not use: devices could never connect."""
    daemon = load(ServerSettings, toml_path=config_path, toml_required=True, flags={},
                  env={})
    given: list[tuple[str, object, object]] = [
        ("address", settings.network().server, daemon.network().server),
        ("port", settings.port, daemon.port),
        ("private-key", settings.private_key.absolute(), daemon.private_key.absolute()),
    ]
    for flag, want, has in given:
        if want != has:
            value = str(want) if flag == "port" else json.dumps(str(want))
            raise BadInput(
                f"--{flag} {want} differs from what the daemon uses ({has}, from "
                f"{config_path}): the factory would announce a server the daemon does not "
                "run", code="config_mismatch",
                hint=f"set {flag} = {value} in {config_path} first, or drop "
                     f"--{flag}")


def disable(settings: ServerSettings, api: FactoryApi) -> dict[str, Any]:
    """Mark the factory's ``wireguard-server`` file ``enabled=0`` (devices turn
    their VPN off); the server's own interface is left as it is."""
    cfile = current_file(api.factory_config(), WIREGUARD_SERVER_FILE)
    if cfile is None:
        raise NotFound(f"the factory has no {WIREGUARD_SERVER_FILE} file: nothing to disable")
    server = ServerConfigFile.parse(cfile.value)
    new = ConfigFile(WIREGUARD_SERVER_FILE,
                     ServerConfigFile(server.endpoint, server.server_address, server.pubkey,
                                      enabled=False).render(),
                     True, (VPN_HANDLER,))
    api.patch_factory_config("fiovpn: disable WireGuard server", [new])
    return {"factory": settings.factory, "endpoint": server.endpoint,
            "server_address": str(server.server_address), "public_key": str(server.pubkey),
            "enabled": False}


def _replace(settings: ServerSettings, **changes: Any) -> ServerSettings:
    import dataclasses

    return dataclasses.replace(settings, **changes)
