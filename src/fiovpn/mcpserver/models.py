"""Structured results of the MCP tools: what the CLI's ``--json`` carries, typed.

Each model is the tool's ``outputSchema``; field names follow the CLI JSON keys
(SPEC section 5) so a script and an assistant read the same thing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ServerConfig(BaseModel):
    """The factory's ``wireguard-server`` file, parsed."""

    factory: str
    endpoint: str = Field(description="HOST:PORT clients and devices send UDP to")
    endpoint_host: str
    endpoint_port: int
    server_address: str = Field(description="the server's VPN address")
    pubkey: str = Field(description="the server's WireGuard public key")
    enabled: bool = Field(description="false when the factory VPN is disabled (enabled=0)")


class SetupStep(BaseModel):
    command: str
    why: str


class SetupFactsModel(BaseModel):
    key_file: str
    key_file_exists: bool
    config: str
    config_exists: bool
    address: str | None
    public_key: str | None = Field(description="this machine's public key (safe to share)")
    server_endpoint: str | None
    interface: str
    connected: bool
    handshake_age_s: float | None
    this_machine_is_server: bool
    server_ssh: str


class SetupGuide(BaseModel):
    """Which flow applies to this machine and the next concrete step."""

    flow: Literal["first_admin", "engineer", "ready"]
    stage: Literal["no_config", "no_address", "not_connected", "no_handshake", "ready"]
    summary: str
    next_step: str
    steps: list[SetupStep]
    facts: SetupFactsModel
    docs: list[str] = Field(description="MCP resources with the full flows")


class VpnStatus(BaseModel):
    """The local tunnel: interface, address, server peer and handshake."""

    config: str
    interface: str
    connected: bool
    address: str | None
    public_key: str | None
    endpoint: str | None
    latest_handshake: int | None = Field(description="unix seconds; null when never")
    handshake_age_s: float | None
    rx: int | None
    tx: int | None


class ConnectResult(BaseModel):
    config: str
    interface: str
    connected: bool
    changed: bool = Field(description="false when the tunnel was already up (or already down)")
    message: str


class VerifyResult(BaseModel):
    connected: bool
    handshake_age_s: float | None
    server_reachable: bool
    server_address: str | None
    message: str


class RegistrationCheck(BaseModel):
    registered: bool
    public_key: str
    method: Literal["handshake", "server"] = Field(
        description="handshake: local check, no admin rights; server: the registry over SSH")
    in_registry: bool | None = None
    on_interface: bool | None = None
    ip: str | None = None
    message: str


class ClientEntry(BaseModel):
    public_key: str
    ip: str
    name: str | None


class UnregisterResult(BaseModel):
    removed: list[ClientEntry]


class DeviceInfo(BaseModel):
    name: str
    status: str
    vpn_ip: str | None
    vpn_enabled: bool
    uuid: str = ""
    last_seen: str = ""
    target_name: str = ""
    device_group: str = ""


class DeviceList(BaseModel):
    factory: str
    total: int = Field(description="devices in the factory before filtering")
    devices: list[DeviceInfo]


class DeviceVpnResult(BaseModel):
    name: str
    vpn_ip: str | None
    vpn_enabled: bool
    changed: bool
    message: str


class DeviceToDeviceResult(BaseModel):
    name: str
    device_to_device: bool = Field(description="whether the device now routes the VPN subnet")
    changed: bool
    message: str


class SshResult(BaseModel):
    device: str
    host: str = Field(description="the VPN address connected to")
    user: str
    command: str
    exit_code: int
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    stdout_bytes: int = Field(description="full size of stdout before the cap")
    stderr_bytes: int = Field(description="full size of stderr before the cap")
