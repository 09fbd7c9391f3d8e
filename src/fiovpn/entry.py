"""The ``fiovpn`` program. ``fiovpn server [--config P] health [--json]`` answers
without loading the whole command line (click, rich, the factory client): keepalived
runs it every couple of seconds as its ``track_script``, and on a loaded machine the
full start-up alone can outlast the script's timeout. Everything else goes to
:func:`fiovpn.cli.main.main`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


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
    from fiovpn.settings import load_server

    try:
        data = health(load_server({}, config))
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


def main() -> None:
    fast = _health_args(sys.argv[1:])
    if fast is not None:
        sys.exit(health_main(*fast))
    from fiovpn.cli.main import main as full

    full()
