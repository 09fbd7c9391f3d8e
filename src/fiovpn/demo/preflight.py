"""Before the demo builds anything: root, and every program the lab runs, with one
install command naming the Debian packages of whatever is missing."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from fiovpn.errors import MissingTool, PermanentError

# program -> Debian package
DEMO_TOOLS: dict[str, str] = {
    "ip": "iproute2",
    "ss": "iproute2",
    "wg": "wireguard-tools",
    "wg-quick": "wireguard-tools",
    "wireguard-go": "wireguard-go",
    "nft": "nftables",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "ping": "iputils-ping",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "setsid": "util-linux",
}


def check(*, euid: Callable[[], int] = os.geteuid,
          which: Callable[[str], str | None] = shutil.which,
          tun: Path = Path("/dev/net/tun")) -> None:
    """Raise a clear error (nothing built yet) when the demo cannot run here."""
    if euid() != 0:
        raise PermanentError(
            "fiovpn demo needs root: it builds network namespaces and WireGuard "
            "interfaces (nothing outside them is touched); run `sudo fiovpn demo`",
            code="not_root")
    missing = [tool for tool in DEMO_TOOLS if which(tool) is None]
    if missing:
        packages = sorted({DEMO_TOOLS[t] for t in missing})
        raise MissingTool(
            f"fiovpn demo needs {', '.join(missing)}: run "
            f"`apt-get install -y {' '.join(packages)}`", code="missing_tool")
    if not tun.exists():
        raise PermanentError(
            f"{tun} is missing: wireguard-go needs the tun device (in a container, "
            "start it with --device /dev/net/tun)", code="no_tun")
