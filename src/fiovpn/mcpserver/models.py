"""Structured results of the MCP tools: what the CLI's ``--json`` carries, typed.

Each model is the tool's ``outputSchema``; field names follow the CLI JSON keys
(SPEC section 5) so a script and an assistant read the same thing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from fiovpn.mcpserver.guide import Flow


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


class SetupBranch(BaseModel):
    """With flow "choose": one answer to the first-admin question and its steps."""

    flow: Literal["first_admin", "engineer"]
    answer: Literal["yes", "no"] = Field(description="the answer to `question` that leads here")
    summary: str
    next_step: str
    steps: list[SetupStep]


class FirstAdminAnswer(BaseModel):
    """The elicitation form of the first-admin question."""

    first_admin: bool = Field(
        title="I am the first admin of this factory's VPN",
        description="Yes: you have direct access to the WireGuard server (console or public "
                    "IP) and nobody is registered yet. No: an admin already on the VPN "
                    "registers you.")


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
    handshake_age_s: int | None
    server_answers: bool = Field(description="the server answered traffic from this key "
                                             "just now (the proof it holds the key)")
    this_machine_is_server: bool
    server_ssh: str


class SetupGuide(BaseModel):
    """Which flow applies to this machine and the next concrete step."""

    flow: Flow
    stage: Literal["no_config", "no_address", "not_connected", "no_handshake", "ready"]
    summary: str
    next_step: str
    steps: list[SetupStep]
    question: str | None = Field(
        default=None, description="flow choose: ask the user this, then follow the branch "
                                  "their answer names")
    branches: list[SetupBranch] = Field(default_factory=list,
                                        description="flow choose: both answers' steps")
    answered: Literal["first_admin", "engineer"] | None = Field(
        default=None, description="what the user answered to the first-admin question, "
                                  "when it was asked through elicitation")
    facts: SetupFactsModel
    docs: list[str] = Field(description="MCP resources with the full flows")


class PeerStatus(BaseModel):
    public_key: str = Field(description="the server's public key")
    endpoint: str | None
    allowed_ips: list[str]
    latest_handshake: int = Field(description="unix seconds; 0 when never")
    handshake_age_s: int | None
    rx: int
    tx: int


class VpnStatus(BaseModel):
    """The local tunnel: interface, address, public key and the server peer."""

    interface: str
    config: str
    connected: bool
    address: str | None
    public_key: str | None = Field(description="this machine's public key (safe to share)")
    server_address: str
    peer: PeerStatus | None = Field(description="the server peer; null when not connected")


class ConnectResult(BaseModel):
    interface: str
    config: str
    connected: bool
    changed: bool = Field(description="false when the tunnel was already up (or already down)")
    backend: str = Field(description="wg-quick or networkmanager; '-' when nothing was done")
    message: str


class VerifyResult(BaseModel):
    connected: bool
    handshake_age_s: int | None
    server_reachable: bool
    server_address: str
    interface: str
    message: str


class RegistrationCheck(BaseModel):
    registered: bool
    public_key: str
    method: Literal["handshake", "server"] = Field(
        description="handshake: local check, no admin rights; server: the registry over SSH")
    handshake_age_s: int | None = None
    in_registry: bool | None = None
    on_interface: bool | None = None
    ip: str | None = None
    message: str
    next_step: str | None = None


class ClientEntry(BaseModel):
    public_key: str
    ip: str
    name: str | None


class UnregisterResult(BaseModel):
    removed: list[ClientEntry]


class DeviceInfo(BaseModel):
    name: str
    status: str
    group: str | None = None
    tag: str | None = None
    online: bool = Field(default=False, description="seen by the factory in the last 15 "
                                                    "minutes")
    vpn_ip: str | None
    vpn_enabled: bool
    last_seen: str | None = None
    target: str | None = None
    pubkey: str | None = Field(default=None, description="the device's VPN public key")
    uuid: str | None = None
    device_group: str | None = None


class DeviceList(BaseModel):
    factory: str
    total: int = Field(description="devices in the factory before filtering")
    devices: list[DeviceInfo]


class DeviceVpnResult(BaseModel):
    name: str
    vpn_ip: str | None
    vpn_enabled: bool
    changed: bool
    reachable_after_s: float | None = Field(
        default=None, description="with wait: seconds until the device answered through "
                                  "the tunnel; null when it did not in time (or no wait)")
    message: str


class DeviceToDeviceResult(BaseModel):
    name: str
    vpn_ip: str
    device_to_device: bool = Field(description="whether the device now routes the VPN subnet")
    changed: bool = Field(description="false when the device already was in that state")
    allowed_ips: list[str] = Field(description="the server peer's allowed IPs on the device")
    persistent: bool = Field(description="whether the dispatcher hook that re-applies it "
                                         "after reboots and config rewrites is installed")
    warning: str | None
    message: str


class DeviceToDeviceStatus(BaseModel):
    name: str
    vpn_ip: str
    d2d: bool = Field(description="the device's live interface routes the VPN subnet "
                                  "through the server")
    allowed_ips: list[str] = Field(description="the server peer's allowed IPs, live")
    persistent: bool = Field(description="the hook that keeps d2d on is installed")
    message: str


class SshResult(BaseModel):
    device: str
    ip: str = Field(description="the device's VPN address that was connected to")
    user: str
    command: str
    exit_code: int = Field(description="the remote command's exit code")
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    stdout_bytes: int = Field(description="full size of stdout before the cap")
    stderr_bytes: int = Field(description="full size of stderr before the cap")
    stdout_escaped: bool = Field(
        default=False, description="true when stdout held bytes that are not UTF-8: each "
                                   "is written as a \\xNN escape, so the text is not "
                                   "the bytes themselves")
    stderr_escaped: bool = Field(default=False, description="the same for stderr")


class ExecDeviceResult(BaseModel):
    """One device's part of ``exec_on_devices``."""

    name: str
    vpn_ip: str
    exit_code: int | None = Field(description="the command's exit code; null when it did "
                                              "not run to the end (see error)")
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    stdout_bytes: int = Field(description="full size of stdout before the cap")
    stderr_bytes: int = Field(description="full size of stderr before the cap")
    stdout_escaped: bool = Field(description="true when bytes that are not UTF-8 were "
                                             "written as \\xNN escapes")
    stderr_escaped: bool
    duration_s: float
    error: str | None = Field(description="why it did not run or finish: cannot connect, "
                                          "timed out, ...; null when it ran")


class ExecResults(BaseModel):
    command: str
    selected_by: str = Field(description="names, group G, tag T or all")
    ok: int = Field(description="devices where the command exited 0")
    failed: int = Field(description="devices where it exited non-zero or did not run")
    skipped: list[str] = Field(description="devices of the group/tag not on the VPN "
                                           "(nothing ran there)")
    results: list[ExecDeviceResult]
    results_truncated: bool = Field(description="true when outputs were cut further to "
                                                "keep the whole answer under its cap")
    message: str


class CopyResult(BaseModel):
    device: str
    vpn_ip: str
    direction: Literal["upload", "download"]
    sources: list[str]
    destination: str
    recursive: bool
    message: str
