"""fiovpn.lab: the namespace lab that end-to-end tests, `fiovpn demo` and
`fiovpn lab` run in (factory sandbox, server, devices, engineers)."""

from fiovpn.lab.lab import DeviceSpec, Lab, leftovers, preflight, sandbox_available
from fiovpn.lab.probes import HttpReply, PingStats, PingStream
from fiovpn.lab.proc import LabError, LabTimeout, wait_for
from fiovpn.lab.roles import Device, Engineer, Factory, Role, Server, WgPeer

__all__ = [
    "Device", "DeviceSpec", "Engineer", "Factory", "HttpReply", "Lab", "LabError",
    "LabTimeout", "PingStats", "PingStream", "Role", "Server", "WgPeer", "leftovers",
    "preflight", "sandbox_available", "wait_for",
]
