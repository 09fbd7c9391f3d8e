"""The daemon as the only writer of live state: the control socket, the op table
used by the daemon and (with no daemon) by the CLI with the daemon's recorded
settings, and the registry debounce.

Fakes stand in for `wg`/`nft` (no network); the socket, the files, the locks and
the threads are real.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from tests.unit.test_reconcile import FakeApi, FakeWg, env  # noqa: F401 - fixture

from fiovpn.adapters.factory_api import WireguardIp
from fiovpn.core.keys import KeyPair
from fiovpn.core.registry import Registry
from fiovpn.errors import BadInput
from fiovpn.services import server as svc
from fiovpn.services.server.control import ControlClient, Requester
from fiovpn.services.server.debounce import RegistryGuard
from fiovpn.settings import ServerSettings

D2D = "device-to-device allowed"


def _ctx(settings: ServerSettings, fake: FakeWg, api: FakeApi | None = None
         ) -> svc.ServerContext:
    return svc.ServerContext.from_settings(settings, runner=fake.runner, api=api)


class RunningDaemon:
    """A real Daemon loop in a thread (fake wg/nft), stopped at the end."""

    def __init__(self, settings: ServerSettings, fake: FakeWg, api: FakeApi) -> None:
        self.ctx = _ctx(settings, fake, api)
        self.daemon = svc.Daemon(self.ctx)
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.code = self.daemon.run()

    def __enter__(self) -> RunningDaemon:
        self.thread.start()
        sock = self.ctx.settings.state_dir / "control.sock"
        deadline = time.monotonic() + 10
        while not (sock.exists() and self.daemon.passes >= 1):
            assert time.monotonic() < deadline, "the daemon did not start"
            assert self.thread.is_alive(), "the daemon exited"
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.daemon.stopping = True
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


@pytest.fixture
def flagged(env: tuple[ServerSettings, FakeWg, FakeApi]  # noqa: F811
            ) -> Iterator[tuple[ServerSettings, ServerSettings, FakeWg, FakeApi]]:
    """``daemon_settings`` has --allow-device-to-device (as a command-line flag
    would set it); ``toml_settings`` is what a CLI reads from server.toml."""
    toml_settings, fake, api = env
    yield replace(toml_settings, allow_device_to_device=True), toml_settings, fake, api


def test_a_running_daemon_applies_what_the_cli_asks_with_its_own_flags(
        flagged: tuple[ServerSettings, ServerSettings, FakeWg, FakeApi],
        caplog: pytest.LogCaptureFixture) -> None:
    """Issue 9 item 1: before, the CLI re-rendered nft from server.toml alone and
    dropped the device-to-device rule the daemon had from its command line."""
    daemon_settings, toml_settings, fake, api = flagged
    caplog.set_level(logging.INFO, logger="fiovpn.server")
    key = str(KeyPair.generate().public)
    with RunningDaemon(daemon_settings, fake, api) as running:
        before = len(fake.rulesets)
        answer = svc.ask(toml_settings, "clients.add", {"public_key": key, "name": "alice"},
                         requester=Requester.of_this_process(
                             "server clients add",
                             env={"SUDO_USER": "alice", "SSH_CLIENT": "10.42.42.200 5 22"}))
        assert answer["entry"]["ip"] == "10.42.42.200"
        assert answer["applied"]["by"] == "daemon" and answer["applied"]["pid"] == os.getpid()
        assert any("peer added: client 'alice'" in c for c in answer["applied"]["changes"])
        assert key in fake.peers
        removed = svc.ask(toml_settings, "clients.remove", {"public_key": key})
        assert [e["public_key"] for e in removed["removed"]] == [key]
        assert key not in fake.peers
        assert running.thread.is_alive()
    new = fake.rulesets[before:]
    # every whole table it wrote keeps the rule; element deltas leave the rules as they are
    assert new and all(D2D in r if "delete table" in r
                       else all(ln.startswith(("add element", "delete element"))
                                for ln in r.splitlines()) for r in new)
    assert all(D2D in r for r in fake.rulesets if "delete table" in r)
    # one log line per change, with who asked (kernel uid + what the caller's env says)
    added = [r.getMessage() for r in caplog.records
             if r.getMessage().startswith("peer added: client 'alice'")]
    assert len(added) == 1
    assert "`server clients add` asked by uid" in added[0]
    assert "sudo from alice" in added[0] and "ssh from 10.42.42.200" in added[0]


def test_parallel_adds_through_the_daemon_get_distinct_ips(
        flagged: tuple[ServerSettings, ServerSettings, FakeWg, FakeApi]) -> None:
    daemon_settings, toml_settings, fake, api = flagged
    keys = [str(KeyPair.generate().public) for _ in range(5)]
    with RunningDaemon(daemon_settings, fake, api), ThreadPoolExecutor(max_workers=5) as pool:
        answers = list(pool.map(lambda k: svc.ask(toml_settings, "clients.add",
                                                  {"public_key": k}), keys))
    assert len({a["entry"]["ip"] for a in answers}) == 5
    assert {a["applied"]["by"] for a in answers} == {"daemon"}
    assert all(k in fake.peers for k in keys)
    assert all(D2D in r for r in fake.rulesets if "delete table" in r)


def test_without_a_daemon_the_cli_applies_with_the_daemons_recorded_settings(
        flagged: tuple[ServerSettings, ServerSettings, FakeWg, FakeApi]) -> None:
    daemon_settings, toml_settings, fake, api = flagged
    with RunningDaemon(daemon_settings, fake, api):
        pass  # it recorded effective.json, then stopped
    effective = json.loads((toml_settings.state_dir / "effective.json").read_text())
    assert effective["settings"]["allow_device_to_device"] is True
    assert stat.S_IMODE((toml_settings.state_dir / "effective.json").stat().st_mode) == 0o600
    assert not (toml_settings.state_dir / "control.sock").exists()
    before = len(fake.rulesets)
    key = str(KeyPair.generate().public)
    answer = svc.ask(toml_settings, "clients.add", {"public_key": key},
                     build=lambda s: _ctx(s, fake))
    assert answer["applied"]["by"] == "cli" and answer["applied"]["firewall_applied"]
    assert key in fake.peers
    assert len(fake.rulesets) > before and all(D2D in r for r in fake.rulesets[before:])


def test_control_socket_is_root_only_and_answers_errors_with_their_exit_code(
        env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:  # noqa: F811
    settings, fake, api = env
    zero = "A" * 43 + "="
    with RunningDaemon(settings, fake, api):
        sock = settings.state_dir / "control.sock"
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert stat.S_IMODE(settings.state_dir.stat().st_mode) == 0o700
        client = ControlClient(settings.state_dir)
        with pytest.raises(BadInput) as info:
            client.request("clients.add", {"public_key": zero})
        assert info.value.exit_code == 2 and info.value.code == "bad_key"
        with pytest.raises(BadInput, match="unknown control op"):
            client.request("no.such.op")
        assert client.request("hello")["settings"]["interface"] == settings.interface
    assert not settings.clients_file.exists()  # nothing changed


def test_ambiguous_name_is_refused_unless_all(
        env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:  # noqa: F811
    """Issue 9 item 10: `clients remove --name twin` removed every twin silently."""
    settings, fake, _api = env
    a, b = (str(KeyPair.generate().public) for _ in range(2))
    settings.clients_file.write_text(f"{a} 10.42.42.200 twin\n{b} 10.42.42.201 twin\n")
    before = settings.clients_file.read_bytes()
    with pytest.raises(BadInput) as info:
        svc.ask(settings, "clients.remove", {"name": "twin"}, build=lambda s: _ctx(s, fake))
    assert info.value.exit_code == 2 and a in info.value.message and b in info.value.message
    assert settings.clients_file.read_bytes() == before
    answer = svc.ask(settings, "clients.remove", {"name": "twin", "all": True},
                     build=lambda s: _ctx(s, fake))
    assert sorted(e["public_key"] for e in answer["removed"]) == sorted([a, b])


def test_a_cli_applying_alone_holds_the_daemon_lock(
        env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:  # noqa: F811
    """A daemon starting while a CLI applies waits for it instead of writing too."""
    settings, _fake, _api = env
    from fiovpn.services.state import StateCache

    state = StateCache(settings.state_dir)
    with state.cli_lock() as mine:
        assert mine
        with state.cli_lock(timeout=0.2) as other:
            assert not other  # a second CLI waits, then gives up
    with state.daemon_lock(), state.cli_lock() as mine:
        assert not mine  # a daemon holds it: ask it over the socket instead


# --------------------------------------------------------------------------- debounce


def test_guard_holds_an_emptied_registry_until_it_is_seen_stable() -> None:
    """Issue 9 item 14: a registry rewritten in place is empty for a moment."""
    now = [100.0]
    guard = RegistryGuard(clock=lambda: now[0])
    k1, k2 = (KeyPair.generate().public for _ in range(2))
    full = Registry.parse(f"{k1} 10.42.42.200 a\n{k2} 10.42.42.201 b\n")
    assert guard.entries(full, (1, 1, 1, 1)) == (full.entries, False)
    empty = Registry.parse("")
    kept, held = guard.entries(empty, (1, 0, 2, 2))
    assert held and kept == full.entries
    now[0] += 0.3
    assert guard.entries(empty, (1, 0, 2, 2))[1] and not guard.due()
    now[0] += 0.3
    assert guard.due()
    assert guard.entries(empty, (1, 0, 2, 2)) == ([], False)  # stable: applied


def test_guard_lets_well_formed_edits_and_own_writes_through() -> None:
    guard = RegistryGuard(clock=lambda: 0.0)
    k1, k2 = (KeyPair.generate().public for _ in range(2))
    full = Registry.parse(f"{k1} 10.42.42.200 a\n{k2} 10.42.42.201 b\n")
    guard.entries(full, (1, 1, 1, 1))
    one = Registry.parse(f"{k1} 10.42.42.200 a\n")
    assert guard.entries(one, (1, 2, 2, 2)) == (one.entries, False)  # a real edit
    cut = Registry.parse(f"{k1} 10.42.42.200 a\n{k2} 10.42.4")  # mid-write
    guard.entries(full, (1, 3, 3, 3))
    assert guard.entries(cut, (1, 4, 4, 4))[1]
    guard.trusted = (1, 5, 5, 5)
    assert guard.entries(Registry.parse(""), (1, 5, 5, 5)) == ([], False)  # our own write


def test_daemon_keeps_clients_while_the_registry_is_empty_for_a_moment(
        env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:  # noqa: F811
    settings, fake, api = env
    keys = [str(KeyPair.generate().public) for _ in range(2)]
    text = "".join(f"{k} 10.42.42.{200 + i}\n" for i, k in enumerate(keys))
    settings.clients_file.write_text(text)
    with RunningDaemon(settings, fake, api):
        assert all(k in fake.peers for k in keys)
        with settings.clients_file.open("w") as f:  # rewritten in place: empty first
            f.flush()
            time.sleep(0.4)  # longer than one file poll
            assert all(k in fake.peers for k in keys), "clients removed during rewrite"
            f.write(text)
        time.sleep(1.2)
        assert all(k in fake.peers for k in keys)
        settings.clients_file.write_text(text.splitlines(keepends=True)[0])
        deadline = time.monotonic() + 2
        while keys[1] in fake.peers:  # a well-formed edit applies within 2 s
            assert time.monotonic() < deadline
            time.sleep(0.05)
        settings.clients_file.write_text("")  # emptied for good: applied, after settling
        deadline = time.monotonic() + 2
        while keys[0] in fake.peers:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_requester_describes_what_the_kernel_and_the_env_say() -> None:
    who = Requester.of_this_process("server clients add",
                                    env={"SUDO_USER": "bob",
                                         "SSH_CONNECTION": "198.18.0.100 4 198.18.0.3 22"})
    assert who.uid == os.getuid() and who.ssh_client == "198.18.0.100"
    text = who.cause()
    assert text.startswith("`server clients add` asked by uid ")
    assert "sudo from bob" in text and "ssh from 198.18.0.100" in text


def test_an_add_is_applied_within_2s_while_a_factory_read_hangs(
        env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:  # noqa: F811
    """The daemon answers the control socket from its own threads and applies under
    the apply lock, which a factory read in flight does not hold."""
    settings, fake, api = env
    settings = replace(settings, interval=0.2)
    release = threading.Event()
    real = api.wireguard_ips
    calls = [0]

    def hanging() -> list[WireguardIp]:
        calls[0] += 1
        if calls[0] > 1:
            release.wait(timeout=30)
        return real()

    api.wireguard_ips = hanging  # type: ignore[method-assign]
    try:
        with RunningDaemon(settings, fake, api):
            deadline = time.monotonic() + 5
            while calls[0] < 2:  # the second factory read is in flight, hanging
                assert time.monotonic() < deadline
                time.sleep(0.02)
            key = str(KeyPair.generate().public)
            started = time.monotonic()
            answer = svc.ask(settings, "clients.add", {"public_key": key})
            took = time.monotonic() - started
            assert answer["applied"]["by"] == "daemon" and key in fake.peers
            assert took < 2.0, took
            release.set()
    finally:
        release.set()
