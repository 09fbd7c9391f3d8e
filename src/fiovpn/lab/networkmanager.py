"""Real NetworkManager where it can run here: ``nmcli --offline``.

NetworkManager cannot drive wireguard-go, so the lab's devices use a stand-in
``nmcli`` (:mod:`fiovpn.lab.nmcli`). But ``nmcli --offline connection modify``
reads a keyfile on stdin and prints it as NetworkManager normalises it, with no
daemon: the check that the keyfiles fiovpn writes, and the stand-in's reading
of them, are what NetworkManager makes of them. It exits 0 even when it drops
an entry it cannot parse, so compare the values, never the exit code.
"""

from __future__ import annotations

import shutil
import subprocess
from ipaddress import IPv4Interface, IPv4Network

from fiovpn.core import nmconnection
from fiovpn.lab.nmcli import address, allowed_ips
from fiovpn.lab.proc import LabError


def available() -> bool:
    return shutil.which("nmcli") is not None


def normalise(text: str) -> nmconnection.Keyfile:
    """The keyfile as NetworkManager reads and writes it back."""
    nmcli = shutil.which("nmcli")
    if nmcli is None:
        raise LabError("nmcli is not installed (apt-get install network-manager)")
    proc = subprocess.run([nmcli, "--offline", "connection", "modify"], input=text,
                          capture_output=True, text=True, check=False, timeout=30)
    if proc.returncode != 0:
        raise LabError(f"nmcli --offline refused the keyfile: {proc.stderr.strip()}")
    return nmconnection.parse(proc.stdout, source="nmcli --offline")


def server_peer_view(text: str) -> tuple[list[IPv4Network], IPv4Interface | None]:
    """(the only peer's allowed-ips, ipv4 address1) as NetworkManager reads ``text``."""
    doc = normalise(text)
    peers = doc.peers
    if len(peers) != 1:
        raise LabError(f"expected one wireguard peer, NetworkManager read {len(peers)}")
    return allowed_ips(peers[0].get("allowed-ips")), address(doc.get("ipv4", "address1"))
