"""The ``fiovpn`` program. Two calls answer without loading the whole command line
(click, rich, the factory client, every command's module):

- ``fiovpn server [--config P] health [--json]``: keepalived runs it every couple of
  seconds as its ``track_script``, and on a loaded machine the full start-up alone can
  outlast the script's timeout;
- ``fiovpn ssh [OPTIONS] DEVICE [-- CMD ...]``: it should cost about what ``ssh`` costs
  (SPEC 12), and the full start-up is several times an SSH round trip. Same options,
  same behaviour, same errors as the full command (``fiovpn ssh --help``); ``--json``,
  ``--help`` and anything unusual go to the full command line.

Everything else goes to :func:`fiovpn.cli.main.main`.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path
from typing import NoReturn


def _health_args(argv: list[str]) -> tuple[Path | None, bool] | None:
    """``(config, json)`` when ``argv`` is exactly a health call, else None."""
    if not argv or argv[0] != "server":
        return None
    config: Path | None = None
    as_json = False
    seen_health = False
    rest = argv[1:]
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg == "health" and not seen_health:
            seen_health = True
        elif arg == "--json":
            as_json = True
        elif arg == "--config" and i + 1 < len(rest) and config is None:
            config = Path(rest[i + 1])
            i += 1
        elif arg.startswith("--config=") and config is None:
            config = Path(arg.split("=", 1)[1])
        else:
            return None  # --help, typos, other commands: the full CLI answers
        i += 1
    return (config, as_json) if seen_health else None


def health_main(config: Path | None, as_json: bool) -> int:
    from fiovpn.errors import FiovpnError
    from fiovpn.services.health import health
    from fiovpn.services.run_dir import running_daemon
    from fiovpn.settings import load_server

    try:
        settings = load_server({}, config)
        # the daemon that owns this live state, whatever was only on its command line
        found = running_daemon(settings)
        data = health(settings if found is None else found.settings)
    except FiovpnError as exc:
        if as_json:
            print(json.dumps({"error": {"code": exc.code, "message": str(exc)}}))
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if as_json:
        print(json.dumps(data, indent=2))
    elif data["healthy"]:
        print(f"healthy ({data['role']})")
    if not data["healthy"]:
        print(f"not healthy ({data['role']}): {data['reason']}", file=sys.stderr)
        return 1
    return 0


# `fiovpn ssh` options that take a value, as the full command names them (cli/client.py)
_SSH_VALUE_OPTIONS = {"--config": "config", "--user": "user",
                      "--identity-file": "identity_file", "--known-hosts": "known_hosts",
                      "--factory": "factory", "--api-url": "api_url",
                      "--api-token-file": "api_token_file", "--timeout": "timeout"}


def _ssh_args(argv: list[str]) -> tuple[dict[str, str], str, list[str]] | None:
    """``(options, device, command)`` for a plain ``fiovpn ssh`` call, else None (the
    full command line answers: ``--help``, ``--json``, typos, missing values)."""
    if not argv or argv[0] != "ssh":
        return None
    opts: dict[str, str] = {}
    i = 1
    while i < len(argv) and argv[i].startswith("-"):
        name, eq, value = argv[i].partition("=")
        key = _SSH_VALUE_OPTIONS.get(name)
        if key is None or key in opts:
            return None
        if not eq:
            if i + 1 >= len(argv):
                return None
            i += 1
            value = argv[i]
        opts[key] = value
        i += 1
    if i >= len(argv):
        return None  # no DEVICE: the full command says so
    if "timeout" in opts:
        try:
            float(opts["timeout"])
        except ValueError:
            return None  # click's own words for a value that is not a number
    device, rest = argv[i], argv[i + 1:]
    if rest and rest[0] == "--":
        rest = rest[1:]
    elif rest and rest[0].startswith("-"):
        return None  # `DEVICE --json ...` or options after DEVICE: the full command
    return opts, device, rest


def ssh_main(opts: dict[str, str], device: str, command: list[str]) -> int:
    """``fiovpn ssh`` as :func:`fiovpn.cli.client.ssh_cmd` runs it, on fewer imports."""
    from fiovpn.errors import FiovpnError, from_os_error

    try:
        from fiovpn.core.timespec import check_timeout

        timeout = check_timeout(float(opts["timeout"]) if "timeout" in opts else None)
        from fiovpn.adapters.runner import SubprocessRunner
        from fiovpn.services import device_access
        from fiovpn.settings import load_client

        settings = load_client({k: v for k, v in opts.items() if k != "timeout"})
        return device_access.ssh_command(settings, SubprocessRunner(), device, command,
                                         timeout=timeout)
    except FiovpnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"error: {from_os_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _skip_unused_optional_imports() -> None:
    """Two optional parts of the HTTP stack that fiovpn never uses are marked absent
    (None in sys.modules: importing them fails, and the libraries go on without them,
    as when they are not installed): httpcore loads trio whenever it is installed
    (selenium brings it), httpx its own command line. Together they cost 0.3-0.7 s of
    every command that talks to the factory, more than the API call itself. fiovpn's
    async code (the MCP server, the daemon's HTTP app) runs on asyncio."""
    for optional in ("trio", "httpx._main"):
        if optional not in sys.modules:
            sys.modules[optional] = None  # type: ignore[assignment]


def _exit_now(code: int) -> NoReturn:
    """Exit with ``code`` without tearing the interpreter down: ``fiovpn ssh`` has
    waited for ssh, closed its files and removed its temporary one, so the few
    milliseconds of module and object clean-up buy nothing. Output is flushed first."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 1  # as Python itself fails an exit whose flush fails
    os._exit(code)


def main() -> None:
    _skip_unused_optional_imports()
    fast = _health_args(sys.argv[1:])
    if fast is not None:
        sys.exit(health_main(*fast))
    ssh = _ssh_args(sys.argv[1:])
    if ssh is not None:
        gc.disable()  # a short call that then only waits for ssh: collecting costs time
        _exit_now(ssh_main(*ssh))
    from fiovpn.cli.main import main as full

    full()
