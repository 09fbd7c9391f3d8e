"""The bootstrap guide behind ``setup_foundries_vpn``: facts -> flow and next step.

Pure: the tool gathers the facts (files, connection, handshake) through the
services and this module decides which flow applies (SPEC section 1) and the
exact commands to run next. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Flow = Literal["first_admin", "engineer", "ready", "choose"]
Role = Literal["auto", "first_admin", "engineer"]
Branch = Literal["first_admin", "engineer"]

# The seed's question (SPEC section 12): asked through MCP elicitation where the
# client supports it; otherwise the guide answers flow "choose" with both branches.
FIRST_ADMIN_QUESTION = (
    "Are you the first admin of this factory's VPN? Yes if you have direct access to "
    "the WireGuard server (its console or public IP) and nobody is registered on the "
    "VPN yet; no if an admin who is already on the VPN will register you.")
Stage = Literal["no_config", "no_address", "not_connected", "no_handshake", "ready"]

@dataclass(frozen=True, slots=True)
class SetupFacts:
    """What the guide looked at on this machine."""

    key_file: str
    key_file_exists: bool
    config: str
    config_exists: bool
    address: str | None
    public_key: str | None
    server_endpoint: str | None
    interface: str
    connected: bool
    handshake_age_s: int | None
    server_answers: bool  # the server answered traffic from this key just now
    this_machine_is_server: bool
    server_ssh: str


@dataclass(frozen=True, slots=True)
class Step:
    command: str
    why: str


@dataclass(frozen=True, slots=True)
class BranchGuide:
    """One answer to the first-admin question and where it leads."""

    flow: Branch
    answer: Literal["yes", "no"]
    summary: str
    next_step: str
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class Guide:
    flow: Flow
    stage: Stage
    summary: str
    next_step: str
    steps: tuple[Step, ...]
    question: str | None = None  # set with flow "choose": what to ask the user
    branches: tuple[BranchGuide, ...] = ()  # flow "choose": both answers' steps


def stage_of(facts: SetupFacts) -> Stage:
    if not facts.config_exists:
        return "no_config"
    if not facts.address:
        return "no_address"
    if not facts.connected:
        return "not_connected"
    # An old handshake is no proof (the key may have been removed since): only an
    # answer to traffic sent now is (services.client.probe_server).
    if not facts.server_answers:
        return "no_handshake"
    return "ready"


def _cfg(facts: SetupFacts) -> str:
    """``--config P`` when the config is not the default one (commands stay copy-pasteable)."""
    return "" if facts.config.endswith("/.config/wireguard/foundries.conf") else \
        f" --config {facts.config}"


def needs_the_question(facts: SetupFacts, role: Role = "auto") -> bool:
    """Only the user can tell whether they are the first admin: on a machine that is
    not the WireGuard server, not yet ready, with no role given."""
    return role == "auto" and not facts.this_machine_is_server and stage_of(facts) != "ready"


def choose(facts: SetupFacts) -> Guide:
    """Flow "choose": the question, and both branches' steps; ``steps`` holds the
    steps both branches start with."""
    admin, engineer = guide(facts, "first_admin"), guide(facts, "engineer")
    common: list[Step] = []
    for a, e in zip(admin.steps, engineer.steps, strict=False):
        if a != e:
            break
        common.append(a)
    first = (f" Either way, start with `{common[0].command}` ({common[0].why})."
             if common else "")
    return Guide(
        flow="choose", stage=admin.stage,
        summary=("This machine is not the WireGuard server, so fiovpn cannot tell which "
                 f"flow applies: ask the user. {FIRST_ADMIN_QUESTION}"),
        next_step=(f"Ask the user: {FIRST_ADMIN_QUESTION} Yes: follow branch first_admin "
                   "(or call setup_foundries_vpn with role=first_admin); no: branch "
                   f"engineer (role=engineer).{first}"),
        steps=tuple(common), question=FIRST_ADMIN_QUESTION,
        branches=(BranchGuide("first_admin", "yes", admin.summary, admin.next_step,
                              admin.steps),
                  BranchGuide("engineer", "no", engineer.summary, engineer.next_step,
                              engineer.steps)))


def guide(facts: SetupFacts, role: Role = "auto") -> Guide:
    """Which flow applies and the next concrete step, with the exact commands. With
    role "auto" where only the user can tell (``needs_the_question``): flow "choose"."""
    if needs_the_question(facts, role):
        return choose(facts)
    stage = stage_of(facts)
    cfg = _cfg(facts)
    key = facts.public_key or "<YOUR_PUBLIC_KEY>"
    if stage == "ready":
        return Guide(
            flow="ready", stage=stage,
            summary=(f"Connected on {facts.interface} as {facts.address}; the server "
                     "answers this key. Nothing to set up."),
            next_step=f"Run `fiovpn verify{cfg}` (tool verify_foundries_vpn_connection), "
                      "then `fiovpn devices list` (tool list_foundries_devices).",
            steps=(Step(f"fiovpn verify{cfg}", "confirm the server answers through the tunnel"),
                   Step("fiovpn devices list", "see the devices you can reach"),
                   Step("fiovpn ssh DEVICE -- uname -a", "run a command on a device")),
        )
    first_admin = role == "first_admin" or (role == "auto" and facts.this_machine_is_server)
    flow: Flow = "first_admin" if first_admin else "engineer"
    if first_admin:
        register = Step(f"fiovpn server clients add --public-key {key} --name <your-name>",
                        "on the WireGuard server, as root: registers your key locally "
                        "(nobody is on the VPN yet to do it over SSH); prints your IP")
        who = "First admin: register your own key directly on the server."
    else:
        register = Step(f"fiovpn register --public-key {key} --name <your-name>",
                        f"run by an admin who is on the VPN (SSH to {facts.server_ssh}); "
                        "send them your PUBLIC key only, never the private key; "
                        "they tell you the IP it prints")
        who = "Engineer: an admin on the VPN registers your public key."
    init = Step(f"fiovpn client init{cfg}",
                "creates your key (0600) and the client config from the factory's "
                "wireguard-server file, and prints your public key")
    set_address = Step(f"fiovpn client init{cfg} --address <IP>",
                       "sets the address you were given; keeps your key")
    connect = Step(f"fiovpn connect{cfg}", "brings the tunnel up (tool connect_foundries_vpn)")
    check = Step(f"fiovpn check-registered{cfg}",
                 "the server answering your traffic proves it holds your key "
                 "(tool check_client_peer_registered)")
    verify = Step(f"fiovpn verify{cfg}", "pings the server's VPN address through the tunnel")
    if stage == "no_config":
        summary = f"{who} No client config at {facts.config} yet."
        steps: tuple[Step, ...] = (init, register, set_address, connect, verify)
        next_step = (f"Run `fiovpn client init{cfg}` and note the public key it prints.")
    elif stage == "no_address":
        summary = (f"{who} The client config exists (public key {key}) but has no address: "
                   "your key has not been registered yet, or the IP was not set.")
        steps = (register, set_address, connect, verify)
        next_step = (f"Get your key registered: `{register.command}` ({register.why}); then "
                     f"`fiovpn client init{cfg} --address <IP>`.")
    elif stage == "not_connected":
        summary = (f"{who} Config complete (address {facts.address}); the tunnel "
                   f"{facts.interface} is down.")
        steps = (connect, check, verify)
        next_step = f"Run `fiovpn connect{cfg}` (tool connect_foundries_vpn), then verify."
    else:  # no_handshake
        age = ("never" if facts.handshake_age_s is None
               else f"{facts.handshake_age_s:.0f}s ago")
        summary = (f"{who} The tunnel {facts.interface} is up (last handshake {age}) but "
                   f"the server does not answer: it does not (or no longer) accept public "
                   f"key {key}, or the endpoint {facts.server_endpoint or '?'} is "
                   "unreachable.")
        steps = (register, check, verify, Step(f"fiovpn doctor{cfg}",
                                               "walks the whole troubleshooting tree"))
        next_step = (f"Make sure your key is registered: `{register.command}` "
                     f"({register.why}); then `fiovpn check-registered{cfg}`.")
    return Guide(flow=flow, stage=stage, summary=summary, next_step=next_step, steps=steps)
