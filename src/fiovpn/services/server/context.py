"""What a reconcile needs: settings, adapters, the factory client and the memos
that keep an idle poll cheap. Built once by the daemon or the CLI."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fiovpn.adapters.factory_api import FactoryApi, WireguardIp
from fiovpn.adapters.nft import Nft
from fiovpn.adapters.runner import Runner, SubprocessRunner
from fiovpn.adapters.wireguard import WireGuard
from fiovpn.core.addresses import VpnNetwork
from fiovpn.core.firewall import TableModel
from fiovpn.core.keys import Key, public_key
from fiovpn.core.peerrows import PeerRows
from fiovpn.core.peers import DesiredPeers, Peer
from fiovpn.core.wgdump import WgDump
from fiovpn.errors import FiovpnError
from fiovpn.services.access import AccessState
from fiovpn.services.admins import AdminKeys
from fiovpn.services.ha import HaNode
from fiovpn.services.keys import read_private_key
from fiovpn.services.server.debounce import RegistryGuard, Signature
from fiovpn.services.state import StateCache
from fiovpn.settings import ServerSettings

if TYPE_CHECKING:
    from fiovpn.services.server.report import ReconcileReport

log = logging.getLogger("fiovpn.server")


@dataclass
class ServerContext:
    """Everything a reconcile needs; built once by the daemon or the CLI."""

    settings: ServerSettings
    network: VpnNetwork
    wg: WireGuard
    nft: Nft
    state: StateCache
    api: FactoryApi | None = None
    server_key: Key | None = None  # public key, to keep peers from claiming it
    clock: Callable[[], float] = time.time
    last_notes: frozenset[str] = frozenset()
    last_api_success: str | None = None
    # Memos so an idle poll at 5,000 peers stays cheap: what was last saved,
    # applied or written, compared before doing it again.
    last_rows: list[WireguardIp] | None = None
    last_firewall: tuple[object, ...] | None = None
    last_model: TableModel | None = None  # the nft table this process last applied
    last_model_generation: str | None = None  # the token that table was made with
    saved_model_checked: bool = False  # the model an earlier process saved, looked at
    last_desired: tuple[tuple[object, ...], DesiredPeers] | None = None
    last_hosts: tuple[object, ...] | None = None
    known: dict[Key, Peer] | None = None
    # the peers of the last pass: kept as the pass's list while they stay equal, so
    # the memos below (made from it) are found by identity, one compare a pass
    last_peers: list[Peer] | None = None
    last_clean: WgDump | None = None  # its dump, when that pass had nothing to change
    last_hosts_peers: list[Peer] | None = None  # the peers the hosts memo was made from
    last_order: tuple[list[Peer], list[Peer]] | None = None  # peers, in status order
    # (those peers in order, the dump, their status rows): reused while both are the same
    last_peers_json: tuple[list[Peer], WgDump | None, PeerRows] | None = None
    daemon: bool = False  # True in the daemon process (its pid goes into status.json)
    forwarding_on: bool = False  # switched on (or found on) after the firewall applied
    registry_guard: RegistryGuard = field(default_factory=RegistryGuard, repr=False,
                                          compare=False)
    apply_lock: threading.Lock = field(default_factory=threading.Lock, repr=False,
                                       compare=False)
    # Called after every pass with its report and duration (the daemon's metrics).
    on_pass: Callable[[ReconcileReport, float], None] | None = None
    last_status: dict[str, Any] | None = None  # the status document of the last pass
    # the interface as the last pass read it, when that pass changed no peer, and
    # when that pass ended (time.monotonic)
    last_dump: WgDump | None = None
    last_dump_at: float = 0.0
    # the daemon's page's own read of the interface (monotonic time, dump), shared by
    # the page's polls while it is fresh
    web_dump: tuple[float, WgDump] | None = None
    access_state: AccessState | None = field(default=None, repr=False, compare=False)
    # grants.json as an op of this process last wrote it (already applied)
    trusted_grants: tuple[int, int, int, int] | None = None

    @property
    def access(self) -> AccessState:
        """Device groups, grants and the journal of this state directory (section 11)."""
        if self.access_state is None:
            self.access_state = AccessState.in_state_dir(self.settings.state_dir)
        return self.access_state

    @property
    def trusted_registry(self) -> Signature:
        return self.registry_guard.trusted

    @trusted_registry.setter
    def trusted_registry(self, sig: Signature) -> None:
        self.registry_guard.trusted = sig
    ha: HaNode | None = None  # the daemon's HA role keeper (HA mode only)
    # authorized_keys with this server's forced command (HA catch-up writes admins)
    admin_keys: AdminKeys | None = None

    @classmethod
    def from_settings(cls, settings: ServerSettings, *, runner: Runner | None = None,
                      api: FactoryApi | None = None) -> ServerContext:
        runner = runner or SubprocessRunner()
        server_key = None
        with contextlib.suppress(FiovpnError):
            server_key = public_key(read_private_key(settings.private_key))
        return cls(
            settings=settings,
            network=settings.network(),
            wg=WireGuard(runner, wireguard_go=settings.wireguard_go),
            nft=Nft(runner, ip_forward_file=settings.ip_forward_file),
            state=StateCache(settings.state_dir),
            api=api,
            server_key=server_key,
        )


def build_api(settings: ServerSettings) -> FactoryApi:
    """The FoundriesFactory client for ``settings`` (imported late: only server
    commands that talk to the factory need it)."""
    from fiovpn.adapters.factory import build_factory_client

    return build_factory_client(settings)
