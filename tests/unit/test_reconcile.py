"""reconcile_once and the daemon loop with a fake WireGuard (FakeRunner) and a
fake FactoryApi: API failures never remove peers, a restart with the API down
keeps the cached devices, one log line per change."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address as A
from pathlib import Path
from typing import Any

import pytest

from fiovpn.adapters.factory_api import ConfigEntry, ConfigFile, Device, WireguardIp
from fiovpn.adapters.fioctl import LoginExpired
from fiovpn.adapters.runner import FakeRunner
from fiovpn.core.factory_files import ServerConfigFile
from fiovpn.core.keys import Key, KeyPair, public_key
from fiovpn.errors import ApiError, ApiTemporaryError, AuthError, PermanentError
from fiovpn.services import server as svc
from fiovpn.services.keys import ensure_key_file
from fiovpn.services.server import daemon as daemon_module
from fiovpn.services.server import reconcile as reconcile_module
from fiovpn.services.server.status import device_list_age_s
from fiovpn.settings import ServerSettings


@dataclass
class FakeApi:
    rows: list[WireguardIp] = field(default_factory=list)
    fail: Exception | None = None
    config: list[ConfigEntry] = field(default_factory=list)
    patches: list[tuple[str, list[ConfigFile]]] = field(default_factory=list)
    factory: str = "acme"
    calls: int = 0

    def wireguard_ips(self) -> list[WireguardIp]:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return list(self.rows)

    def factory_config(self) -> list[ConfigEntry]:
        if self.fail is not None:
            raise self.fail
        return self.config

    def patch_factory_config(self, reason: str, files: list[ConfigFile]) -> None:
        self.patches.append((reason, files))
        self.config = [ConfigEntry("now", reason, tuple(files)), *self.config]

    def device_config(self, device: str) -> list[ConfigEntry]:
        return []

    def patch_device_config(self, device: str, reason: str, files: list[ConfigFile]) -> None:
        raise NotImplementedError

    def list_devices(self) -> list[Device]:
        return []

    def get_device(self, device: str) -> Device:
        raise NotImplementedError


class FakeWg:
    """Enough of `ip`/`wg`/`nft` to reconcile against, recording every call."""

    def __init__(self) -> None:
        self.peers: dict[str, dict[str, str]] = {}
        self.exists = True
        self.rulesets: list[str] = []
        self.runner = FakeRunner()
        self.runner.on("ip", "link", "show", reply=lambda a, i: (0 if self.exists else 1, ""))
        self.runner.on("wg", "show", reply=self._dump)
        self.runner.on("wg", "set", reply=self._set)
        self.runner.on("nft", "-f", "-", reply=self._nft)

    def _dump(self, argv: Sequence[str], _input: str | None) -> str:
        lines = [f"(none)\t{KeyPair.generate().public}\t5555\toff"]
        for key, p in self.peers.items():
            lines.append(f"{key}\t(none)\t{p['endpoint']}\t{p['ips']}\t{p['hs']}\t10\t20\toff")
        return "\n".join(lines) + "\n"

    def _set(self, argv: Sequence[str], _input: str | None) -> str:
        args = list(argv[3:])
        while args and args[0] != "peer":  # private-key FILE, listen-port N
            args = args[2:]
        while args:
            assert args.pop(0) == "peer"
            key = args.pop(0)
            if args[0] == "remove":
                args.pop(0)
                self.peers.pop(key, None)
            elif args[0] == "allowed-ips":
                args.pop(0)
                ips = args.pop(0)
                for other in self.peers.values():  # WireGuard moves a prefix
                    if other["ips"] == ips:
                        other["ips"] = "(none)"
                self.peers.setdefault(key, {"endpoint": "(none)", "hs": "0"})["ips"] = ips
            else:
                args.pop(0)
        return ""

    def _nft(self, argv: Sequence[str], text: str | None) -> str:
        assert text is not None
        self.rulesets.append(text)
        return ""

    def signal_nft(self) -> threading.Event:
        """An event set when the next ``nft -f`` arrives (which is then taken as
        usual): for tests of what runs while what."""
        applied = threading.Event()

        def reply(argv: Sequence[str], text: str | None) -> str:
            applied.set()
            return self._nft(argv, text)

        self.runner.handlers.insert(0, (("nft", "-f", "-"), reply))
        return applied

    @property
    def wg_sets(self) -> list[tuple[str, ...]]:
        return [c for c, _ in self.runner.calls if c[:2] == ("wg", "set")]


K = [KeyPair.generate().public for _ in range(10)]

# Tests that arrange the timing themselves (a slow `wg show dump` or `wg set`).
TIMING = {"test_the_interface_is_read_while_the_desired_peers_are_worked_out",
          "test_a_large_first_sync_puts_the_firewall_in_place_while_the_peers_are_set",
          "test_after_a_good_factory_answer_the_firewall_is_applied_while_wg_reads_the_interface"}


@pytest.fixture(autouse=True, params=["dump still running", "dump already read"])
def dump_timing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether a pass finds the interface read already once the desired peers are
    worked out decides the order of its steps (firewall and hosts before or after
    the interface is read): every test runs both ways, the outcome must not differ."""
    if request.node.originalname in TIMING:
        if request.param != "dump still running":
            pytest.skip("arranges its own timing")
        return
    done = request.param == "dump already read"
    monkeypatch.setattr(reconcile_module._Background, "done", lambda self: done)


def row(name: str, n: int, key: Key, enabled: bool = True) -> WireguardIp:
    return WireguardIp(name, A(f"10.42.42.{n}"), enabled, key)


@pytest.fixture
def env(tmp_path: Path) -> tuple[ServerSettings, FakeWg, FakeApi]:
    (tmp_path / "hosts").write_text("127.0.0.1\tlocalhost\n")
    settings = ServerSettings(
        factory="acme", interface="fvtest0", private_key=tmp_path / "server.key",
        clients_file=tmp_path / "clients.conf", hosts_file=tmp_path / "hosts",
        state_dir=tmp_path / "state", unit_dir=tmp_path / "units", run_dir=tmp_path / "run",
        ip_forward_file=tmp_path / "ip_forward", interval=60.0)
    (tmp_path / "ip_forward").write_text("0\n")
    api = FakeApi(rows=[row("dev-a", 2, K[0]), row("dev-b", 3, K[1]),
                        row("dev-off", 4, K[2], enabled=False)])
    return settings, FakeWg(), api


def ctx_for(settings: ServerSettings, fake: FakeWg, api: FakeApi | None) -> svc.ServerContext:
    return svc.ServerContext.from_settings(settings, runner=fake.runner, api=api)


def test_first_reconcile_adds_enabled_devices_and_clients(env: tuple[ServerSettings, FakeWg,
                                                                     FakeApi]) -> None:
    settings, fake, api = env
    settings.clients_file.write_text(f"{K[5]} 10.42.42.200 alice\n")
    report = svc.reconcile_once(ctx_for(settings, fake, api))
    assert report.ok, report.error
    assert {k: p["ips"] for k, p in fake.peers.items()} == {
        str(K[0]): "10.42.42.2/32", str(K[1]): "10.42.42.3/32", str(K[5]): "10.42.42.200/32"}
    assert len(fake.wg_sets) == 1  # one batched `wg set`
    assert "elements = { 10.42.42.200 }" in fake.rulesets[-1]
    hosts = settings.hosts_file.read_text()
    assert "10.42.42.2\tdev-a\n10.42.42.3\tdev-b\n" in hosts and "dev-off" not in hosts
    status = json.loads((settings.state_dir / "status.json").read_text())
    assert {p["name"] for p in status["peers"]} == {"dev-a", "dev-b", "alice"}
    assert status["last_error"] is None and status["last_sync"]
    assert stat.S_IMODE((settings.state_dir / "status.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((settings.state_dir / "devices.json").stat().st_mode) == 0o600


def test_second_reconcile_changes_nothing(env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:
    settings, fake, api = env
    ctx = ctx_for(settings, fake, api)
    svc.reconcile_once(ctx)
    calls = len(fake.runner.calls)
    hosts_mtime = settings.hosts_file.stat().st_mtime_ns
    report = svc.reconcile_once(ctx)
    assert report.changes == [] and not report.firewall_applied and not report.hosts_changed
    new_calls = [c for c, _ in fake.runner.calls[calls:]]
    assert new_calls == [("wg", "show", "fvtest0", "dump")]  # an idle poll is one read
    assert settings.hosts_file.stat().st_mtime_ns == hosts_mtime


def test_api_500_keeps_every_peer(env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:
    settings, fake, api = env
    ctx = ctx_for(settings, fake, api)
    svc.reconcile_once(ctx)
    before = dict(fake.peers)
    api.fail = ApiTemporaryError("factory API answered 500", delay=7.0)
    report = svc.reconcile_once(ctx)
    assert not report.ok and "500" in (report.error or "")
    assert report.retry_after == 7.0
    assert fake.peers == before
    status = json.loads((settings.state_dir / "status.json").read_text())
    assert "500" in status["last_error"] and status["api_ok"] is False
    assert len(status["peers"]) == 2


@pytest.mark.parametrize(("error", "code"), [
    (AuthError("the FoundriesFactory API refused the token (HTTP 401)", status=401),
     "auth_failed"),
    (LoginExpired("the fioctl login in /x has expired and cannot be refreshed",
                  code="login_expired"), "auth_failed"),
    (ApiTemporaryError("factory API answered 503", delay=1.0), "api_unreachable"),
    (ApiError("the FoundriesFactory API rejected the request (HTTP 400)", status=400),
     "api_error"),
])
def test_status_names_the_kind_of_api_failure_and_the_list_age(
        env: tuple[ServerSettings, FakeWg, FakeApi], error: Exception, code: str) -> None:
    settings, fake, api = env
    ctx = ctx_for(settings, fake, api)
    svc.reconcile_once(ctx)
    good = json.loads((settings.state_dir / "status.json").read_text())
    assert good["last_error_code"] is None and good["device_list_age_s"] in (0, 1)
    before = dict(fake.peers)
    api.fail = error
    svc.reconcile_once(ctx)
    assert fake.peers == before  # a refused token removes nothing either
    doc = json.loads((settings.state_dir / "status.json").read_text())
    assert doc["last_error_code"] == code and doc["api_ok"] is False
    shown = svc.status(settings, runner=fake.runner)
    assert shown["last_error_code"] == code
    assert isinstance(shown["device_list_age_s"], int)
    # the age counts from the last good answer, also when read much later
    assert device_list_age_s(doc["last_success"], now=time.time() + 600) >= 600


def test_api_failure_never_removes_even_peers_missing_from_the_cache(
        env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:
    settings, fake, api = env
    ctx = ctx_for(settings, fake, api)
    svc.reconcile_once(ctx)
    fake.peers[str(K[7])] = {"endpoint": "(none)", "hs": "0", "ips": "10.42.42.9/32"}
    api.fail = ApiError("factory API answered 401", status=401)
    svc.reconcile_once(ctx)
    assert str(K[7]) in fake.peers  # only a successful answer may remove a device peer
    api.fail = None
    svc.reconcile_once(ctx)
    assert str(K[7]) not in fake.peers


def test_registry_edit_applies_while_api_down(env: tuple[ServerSettings, FakeWg,
                                                         FakeApi]) -> None:
    settings, fake, api = env
    settings.clients_file.write_text(f"{K[5]} 10.42.42.200 alice\n{K[6]} 10.42.42.201 bob\n")
    ctx = ctx_for(settings, fake, api)
    svc.reconcile_once(ctx)
    api.fail = ApiTemporaryError("timeout")
    settings.clients_file.write_text(f"{K[5]} 10.42.42.200 alice\n")
    svc.reconcile_once(ctx)
    assert str(K[6]) not in fake.peers and str(K[0]) in fake.peers


def test_restart_with_api_down_keeps_peers_from_the_cache(
        env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:
    settings, fake, api = env
    svc.reconcile_once(ctx_for(settings, fake, api))
    before = dict(fake.peers)
    # kill -9 and restart: a fresh context, the API down, the interface as it was
    down = FakeApi(fail=ApiTemporaryError("connection refused"))
    report = svc.reconcile_once(ctx_for(settings, fake, down))
    assert fake.peers == before and report.changes == []
    assert report.devices_source == "cache"
    assert "elements = { 10.42.42.2, 10.42.42.3 }" in fake.rulesets[-1]
    # and even with a fresh interface (reboot), the cached devices come back
    fake.peers.clear()
    report = svc.reconcile_once(ctx_for(settings, fake, down))
    assert set(fake.peers) == {str(K[0]), str(K[1])}


def test_one_log_line_per_change_with_reason(env: tuple[ServerSettings, FakeWg, FakeApi],
                                             caplog: pytest.LogCaptureFixture) -> None:
    settings, fake, api = env
    ctx = ctx_for(settings, fake, api)
    svc.reconcile_once(ctx)
    api.rows = [row("dev-a", 2, K[0]), row("dev-b", 5, K[1]), row("dev-c", 6, K[3])]
    fake.peers[str(K[0])]["endpoint"] = "198.18.0.2:4444"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fiovpn.server"):
        report = svc.reconcile_once(ctx)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("peer ")]
    assert lines == [c.describe() for c in report.changes]
    assert len(lines) == 2
    assert lines[0].startswith("peer updated: device 'dev-b' 10.42.42.3/32 -> 10.42.42.5/32")
    assert lines[1].startswith("peer added: device 'dev-c' 10.42.42.6/32")
    assert fake.peers[str(K[0])]["endpoint"] == "198.18.0.2:4444"  # untouched peer
    api.rows = api.rows[:2]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fiovpn.server"):
        svc.reconcile_once(ctx)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("peer ")]
    assert line.startswith("peer removed: device 'dev-c'")
    assert "no longer an enabled device" in line


def test_conflicts_and_bad_registry_lines_are_reported(
        env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:
    settings, fake, api = env
    settings.clients_file.write_text(
        f"# team\n{K[5]} 10.42.42.2 thief\nthis is not valid\n{K[6]} 10.42.42.201 bob\n")
    report = svc.reconcile_once(ctx_for(settings, fake, api))
    assert str(K[5]) not in fake.peers and str(K[6]) in fake.peers
    status = report.status
    assert status["registry_problems"][0]["line"] == 3
    assert status["conflicts"][0]["kind"] == "ip" and "thief" in status["conflicts"][0]["message"]
    assert fake.peers[str(K[0])]["ips"] == "10.42.42.2/32"  # the device keeps its IP


def test_daemon_checks_server_key_and_runs_once(env: tuple[ServerSettings, FakeWg,
                                                           FakeApi]) -> None:
    settings, fake, api = env
    private, _ = ensure_key_file(settings.private_key)
    other = KeyPair.generate().public
    api.config = [ConfigEntry("t", "r", (ConfigFile(
        "wireguard-server", ServerConfigFile("vpn.example:5555", A("10.42.42.1"), other).render()),
    ))]
    with pytest.raises(PermanentError, match="announces public key"):
        svc.Daemon(ctx_for(settings, fake, api)).run(once=True)
    api.config = [ConfigEntry("t", "r", (ConfigFile(
        "wireguard-server",
        ServerConfigFile("vpn.example:5555", A("10.42.42.1"), public_key(private)).render()),
    ))]
    assert svc.Daemon(ctx_for(settings, fake, api)).run(once=True) == 0
    assert settings.ip_forward_file.read_text().strip() == "1"
    assert any(c[:3] == ("wg", "set", "fvtest0") and "private-key" in c
               for c, _ in fake.runner.calls)
    assert all(str(private) not in " ".join(c) for c, _ in fake.runner.calls)
    api.fail = ApiTemporaryError("down")
    assert svc.Daemon(ctx_for(settings, fake, api)).run(once=True) == 1


def test_daemon_creates_missing_interface(env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:
    settings, fake, api = env
    fake.exists = False

    def create(argv: Sequence[str], _input: str | None) -> str:
        fake.exists = True
        return ""
    fake.runner.on("ip", "link", "add", reply=lambda a, i: (2, "Error: Unknown device type."))
    fake.runner.on("wireguard-go", reply=create)
    fake.runner.on("setsid", "wireguard-go", reply=create)
    assert svc.Daemon(ctx_for(settings, fake, api)).run(once=True) == 0
    # wireguard-go runs in its own session: stopping the daemon leaves tunnels up
    assert [c[-2:] for c, _ in fake.runner.calls if "wireguard-go" in c] == [
        ("wireguard-go", "fvtest0")]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.01)


def test_daemon_backoff_and_clients_file_wakeup(env: tuple[ServerSettings, FakeWg,
                                                           FakeApi]) -> None:
    settings, fake, api = env
    clock = Clock()
    ctx = ctx_for(settings, fake, api)
    daemon = svc.Daemon(ctx, sleep=clock.sleep, monotonic=clock.monotonic)
    times: list[float] = []
    real = svc.reconcile_once

    def spy(c: svc.ServerContext, **kw: bool) -> svc.ReconcileReport:
        times.append(clock.now)
        if len(times) == 2:
            api.fail = ApiTemporaryError("500")
        if len(times) == 5:
            api.fail = None
            settings.clients_file.write_text(f"{K[5]} 10.42.42.200 alice\n")
        if len(times) == 7:
            daemon.stop()
        return real(c, **kw)

    svc_reconcile = daemon_module.reconcile_once
    daemon_module.reconcile_once = spy  # type: ignore[assignment]
    try:
        assert daemon.run() == 0
    finally:
        daemon_module.reconcile_once = svc_reconcile  # type: ignore[assignment]
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(times)]
    # 60 s interval; then failures retry after 5, 10, 20 s; a clients-file edit
    # wakes the daemon within a second of the write
    assert gaps[0] == pytest.approx(60, abs=0.6)
    assert gaps[1:4] == [pytest.approx(5, abs=0.6), pytest.approx(10, abs=0.6),
                         pytest.approx(20, abs=0.6)]
    assert gaps[4] <= 1.0
    assert str(K[5]) in fake.peers


def test_enable_publishes_server_file_and_unit_without_secrets(
        env: tuple[ServerSettings, FakeWg, FakeApi], tmp_path: Path) -> None:
    settings, _fake, api = env
    config = tmp_path / "etc" / "server.toml"
    data = svc.enable(settings, api, endpoint="vpn.example.com", config_path=config,
                      env={"FIOVPN_API_TOKEN": "s3cret-token"})
    ((_reason, (file,)),) = api.patches
    assert file.name == "wireguard-server" and file.unencrypted
    assert file.on_changed == ("/usr/share/fioconfig/handlers/factory-config-vpn",)
    assert file.value == (f"endpoint=vpn.example.com:5555\nserver_address=10.42.42.1\n"
                          f"pubkey={data['public_key']}")
    assert stat.S_IMODE(settings.private_key.stat().st_mode) == 0o600
    unit = (tmp_path / "units" / "fiovpn-acme.service").read_text()
    assert f"server daemon --config {config}" in unit and "KillMode=process" in unit
    assert "s3cret" not in unit and "s3cret" not in config.read_text()
    token_file = config.parent / "api-token"
    assert token_file.read_text().strip() == "s3cret-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert f'api-token-file = "{token_file}"' in config.read_text()
    from fiovpn.settings import load_server
    loaded = load_server({}, config, env={})
    assert loaded.factory == "acme" and loaded.endpoint == "vpn.example.com:5555"
    # disable keeps the rest and adds enabled=0
    svc.disable(settings, api)
    assert api.patches[-1][1][0].value.endswith("\nenabled=0")
    assert data["key_created"] is True


def test_enable_warns_when_the_daemon_would_not_see_an_env_token(
        env: tuple[ServerSettings, FakeWg, FakeApi], tmp_path: Path) -> None:
    settings, _fake, api = env
    config = tmp_path / "server.toml"
    config.write_text(f'factory = "acme"\nprivate-key = "{settings.private_key}"\n')
    data = svc.enable(settings, api, endpoint="vpn.example.com", config_path=config,
                      env={"FIOVPN_API_TOKEN": "s3cret-token"})
    (warning,) = data["warnings"]
    assert "sets no api-token-file" in warning and "s3cret" not in warning
    config.write_text(config.read_text() + 'api-token-file = "/etc/fiovpn/api-token"\n')
    data = svc.enable(settings, api, endpoint="vpn.example.com", config_path=config,
                      env={"FIOVPN_API_TOKEN": "s3cret-token"})
    assert data["warnings"] == []


@pytest.mark.parametrize("change", [{"port": 6000}, {"address": "10.42.42.9"},
                                    {"private_key": Path("/elsewhere/server.key")}])
def test_enable_refuses_what_the_daemon_would_not_use(
        env: tuple[ServerSettings, FakeWg, FakeApi], tmp_path: Path,
        change: dict[str, object]) -> None:
    """The daemon reads only the settings file: announcing another port, address
    or key in the factory would leave every device unable to connect."""
    import dataclasses

    from fiovpn.errors import BadInput

    settings, _fake, api = env
    config = tmp_path / "server.toml"
    config.write_text(f'# mine\nfactory = "acme"\nprivate-key = "{settings.private_key}"\n')
    before = config.read_bytes()
    given = dataclasses.replace(settings, **change)  # type: ignore[arg-type]
    with pytest.raises(BadInput, match="differs from what the daemon uses") as info:
        svc.enable(given, api, endpoint="vpn.example.com", config_path=config, env={})
    assert info.value.code == "config_mismatch"
    assert api.patches == [] and config.read_bytes() == before
    assert not settings.private_key.exists() and not (tmp_path / "units").exists()
    # the same values as the file: published
    svc.enable(settings, api, endpoint="vpn.example.com", config_path=config, env={})
    assert len(api.patches) == 1


def test_unreadable_registry_changes_no_peer(env: tuple[ServerSettings, FakeWg,
                                                        FakeApi]) -> None:
    """Without the registry every client would look removed: nothing changes, and
    the daemon keeps running with the error in its status."""
    settings, fake, api = env
    settings.clients_file.write_text(f"{K[5]} 10.42.42.200 alice\n")
    ctx = ctx_for(settings, fake, api)
    svc.reconcile_once(ctx)
    settings.clients_file.unlink()
    settings.clients_file.mkdir()
    api.rows = []
    calls = len(fake.wg_sets)
    report = svc.reconcile_once(ctx)
    assert not report.ok and "cannot read the client registry" in (report.error or "")
    assert len(fake.wg_sets) == calls and str(K[5]) in fake.peers and str(K[0]) in fake.peers
    assert "cannot read the client registry" in report.status["last_error"]
    assert {p["public_key"] for p in report.status["peers"]} >= {str(K[5]), str(K[0])}


@pytest.mark.parametrize(("value", "code"), [
    ("garbage", "server_file_malformed"),
    ("endpoint=vpn.example:5555\nserver_address=10.42.42.9\npubkey={key}",
     "server_address_mismatch"),
])
def test_daemon_refuses_a_server_file_devices_cannot_use(
        env: tuple[ServerSettings, FakeWg, FakeApi], value: str, code: str) -> None:
    """Exit 1 (not 2: nobody typed this) with a message naming the factory's file,
    before the interface is touched."""
    settings, fake, api = env
    private, _ = ensure_key_file(settings.private_key)
    api.config = [ConfigEntry("t", "r", (ConfigFile(
        "wireguard-server", value.format(key=public_key(private))),))]
    with pytest.raises(PermanentError, match="the factory's wireguard-server file") as info:
        svc.Daemon(ctx_for(settings, fake, api)).run(once=True)
    assert info.value.code == code and info.value.exit_code == 1
    assert fake.wg_sets == [] and "enable" in str(info.value)


def test_a_damaged_server_key_is_never_echoed(env: tuple[ServerSettings, FakeWg,
                                                         FakeApi]) -> None:
    """The error lands in the daemon's log: it names the file, not its content."""
    from fiovpn.errors import BadInput

    settings, fake, api = env
    secret = str(KeyPair.generate().private)
    settings.private_key.write_text(secret[:40] + "\n")  # truncated
    with pytest.raises(BadInput) as info:
        svc.Daemon(ctx_for(settings, fake, api)).run(once=True)
    assert str(settings.private_key) in str(info.value)
    assert "expected 44 base64 characters, got 40" in str(info.value)
    assert secret[:20] not in str(info.value)


def test_hosts_file_with_bytes_that_are_not_utf8(env: tuple[ServerSettings, FakeWg,
                                                            FakeApi]) -> None:
    """/etc/hosts is not ours: a latin-1 comment passes through unchanged (it
    used to stop the daemon with a traceback)."""
    settings, fake, api = env
    settings.hosts_file.write_bytes(b"127.0.0.1\tlocalhost\n# caf\xe9\n")
    report = svc.reconcile_once(ctx_for(settings, fake, api))
    assert report.ok and report.hosts_changed
    raw = settings.hosts_file.read_bytes()
    assert raw.startswith(b"127.0.0.1\tlocalhost\n# caf\xe9\n")
    assert b"10.42.42.2\tdev-a\n" in raw


def test_sigterm_stops_the_daemon_during_a_slow_api_call(
        env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:
    """With the factory unreachable one pass can take a minute of timeouts and
    retries: SIGTERM (systemctl stop, Ctrl-C) still ends the daemon at once,
    exit 0, leaving the interface alone."""
    import os
    import signal
    import threading
    import time

    settings, fake, _api = env
    # the hanging call ends when the test is over, so its thread never outlives the
    # test (a thread failing later would be blamed on another test)
    release = threading.Event()

    @dataclass
    class HangingApi(FakeApi):
        def wireguard_ips(self) -> list[WireguardIp]:
            os.kill(os.getpid(), signal.SIGTERM)
            release.wait(30)
            return []

    started = time.monotonic()
    try:
        assert svc.Daemon(ctx_for(settings, fake, HangingApi())).run() == 0
        assert time.monotonic() - started < 5
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        assert not any(c[:2] == ("ip", "link") and "down" in c
                       for c, _ in fake.runner.calls)
    finally:
        release.set()


def test_unit_quotes_a_settings_path_with_spaces_percent_and_dollar(tmp_path: Path) -> None:
    """systemd splits ExecStart on spaces and expands %x specifiers and $VARS:
    the daemon must still get the settings path exactly."""
    settings = ServerSettings(factory="acme", unit_dir=tmp_path)
    config = Path('/srv/fio vpn/100% "mine" $HOME.toml')
    unit = svc.render_unit(settings, config)
    exec_start = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    assert exec_start.endswith(
        ' server daemon --config "/srv/fio vpn/100%% \\"mine\\" $$HOME.toml"')
    plain = svc.render_unit(settings, Path("/etc/fiovpn/server.toml"))
    assert "server daemon --config /etc/fiovpn/server.toml\n" in plain


def test_forwarding_waits_for_the_firewall(env: tuple[ServerSettings, FakeWg,
                                                      FakeApi]) -> None:
    """Fail closed: while the policy table cannot be applied the namespace does
    not forward (devices would otherwise reach clients unfiltered)."""
    settings, fake, api = env
    private, _ = ensure_key_file(settings.private_key)
    broken = {"on": True}

    def nft(argv: Sequence[str], text: str | None) -> tuple[int, str]:
        return (1, "Error: syntax error") if broken["on"] else (0, "")
    fake.runner.handlers.insert(0, (("nft", "-f", "-"), nft))  # first match answers
    ctx = ctx_for(settings, fake, api)
    assert svc.Daemon(ctx).run(once=True) == 1
    assert settings.ip_forward_file.read_text().strip() == "0"
    assert "applying the firewall failed" in (ctx.state.load_status() or {})["last_error"]
    broken["on"] = False
    assert svc.reconcile_once(ctx).ok
    assert settings.ip_forward_file.read_text().strip() == "1"
    assert public_key(private) == ctx.server_key


def test_a_second_daemon_on_the_same_state_dir_is_refused(
        env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:
    """A hand-started daemon next to the systemd one would fight over the same
    interface and status file: it stops before touching anything."""
    settings, fake, api = env
    running = ctx_for(settings, fake, api)
    with running.state.daemon_lock():
        with pytest.raises(PermanentError, match="already running") as info:
            svc.Daemon(ctx_for(settings, fake, api)).run(once=True)
        assert info.value.code == "daemon_running" and fake.wg_sets == []
    assert svc.Daemon(ctx_for(settings, fake, api)).run(once=True) == 0  # released


def test_a_server_key_that_cannot_be_written_is_one_clear_error(
        env: tuple[ServerSettings, FakeWg, FakeApi], tmp_path: Path) -> None:
    import dataclasses

    settings, fake, api = env
    (tmp_path / "blocker").write_text("")
    settings = dataclasses.replace(settings, private_key=tmp_path / "blocker" / "server.key")
    with pytest.raises(PermanentError, match=r"cannot write private key .*server.key") as info:
        svc.Daemon(ctx_for(settings, fake, api)).run(once=True)
    assert info.value.code == "key_unwritable" and fake.wg_sets == []


def test_enable_with_an_unwritable_unit_dir_is_one_clear_error(
        env: tuple[ServerSettings, FakeWg, FakeApi], tmp_path: Path) -> None:
    import dataclasses

    settings, _fake, api = env
    (tmp_path / "blocker").write_text("")
    settings = dataclasses.replace(settings, unit_dir=tmp_path / "blocker" / "units")
    with pytest.raises(PermanentError, match=r"blocker/units/fiovpn-acme.service cannot be "
                                             r"written.*run `fiovpn server enable` again"):
        svc.enable(settings, api, endpoint="vpn.example.com",
                   config_path=tmp_path / "etc" / "server.toml", env={})


def test_registry_edit_applies_within_2s_while_the_factory_read_hangs(
        env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:
    """SPEC 3: the daemon notices a clients-file edit within 2 s, even while a
    factory call is stuck in its timeouts and retries."""
    import threading

    settings, fake, api = env
    private, _ = ensure_key_file(settings.private_key)
    api.config = [ConfigEntry("t", "r", (ConfigFile(
        "wireguard-server",
        ServerConfigFile("vpn.example:5555", A("10.42.42.1"), public_key(private)).render()),
    ))]
    ctx = ctx_for(settings, fake, api)
    assert svc.reconcile_once(ctx).ok  # devices known and cached
    release = threading.Event()
    entered = threading.Event()
    answer = api.wireguard_ips

    def hanging() -> list[WireguardIp]:
        entered.set()
        release.wait(30)
        return answer()

    api.wireguard_ips = hanging  # type: ignore[method-assign]
    daemon = svc.Daemon(ctx, poll=0.05)
    runner = threading.Thread(target=daemon.run, daemon=True)
    runner.start()
    try:
        assert entered.wait(5), "the daemon never read the factory"
        settings.clients_file.write_text(f"{K[5]} 10.42.42.200 alice\n")
        edited = time.monotonic()
        while str(K[5]) not in fake.peers and time.monotonic() - edited < 2.0:
            time.sleep(0.02)
        assert str(K[5]) in fake.peers, "registry edit waited for the hanging factory read"
        assert str(K[0]) in fake.peers  # devices kept from the cache meanwhile
    finally:
        daemon.stopping = True
        release.set()
        runner.join(10)
    assert not runner.is_alive()


def test_a_peer_change_reaches_the_firewall_as_element_deltas(
        env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:
    settings, fake, api = env
    ctx = ctx_for(settings, fake, api)
    svc.reconcile_once(ctx)
    assert fake.rulesets[-1].startswith("add table inet fiovpn\ndelete table inet fiovpn\n")
    api.rows[1] = row("dev-b", 9, K[1])  # dev-b moves to 10.42.42.9
    report = svc.reconcile_once(ctx)
    assert report.firewall_applied
    assert fake.rulesets[-1] == ("delete element inet fiovpn device_ips { 10.42.42.3 }\n"
                                 "add element inet fiovpn device_ips { 10.42.42.9 }\n")
    # the kernel refuses a delta (someone changed the table): the whole table again
    refused = {"on": True}

    def nft(argv: Sequence[str], text: str | None) -> tuple[int, str]:
        if refused["on"] and text is not None and text.startswith("delete element"):
            refused["on"] = False
            return 1, "Error: Could not process rule: No such file or directory"
        fake.rulesets.append(text or "")
        return 0, ""
    fake.runner.handlers.insert(0, (("nft", "-f", "-"), nft))
    api.rows[1] = row("dev-b", 10, K[1])
    report = svc.reconcile_once(ctx)
    assert report.ok and report.firewall_applied
    assert fake.rulesets[-1].startswith("add table inet fiovpn\ndelete table inet fiovpn\n")
    assert "10.42.42.10" in fake.rulesets[-1]


def test_status_follows_the_interface_while_an_unchanged_dump_is_reused(
        env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:
    """An idle interface gives the same dump text pass after pass (reused, not parsed
    again); the first handshake or byte that moves shows in the next status."""
    settings, fake, api = env
    server = KeyPair.generate().public
    plain = fake._dump

    def steady(argv: Sequence[str], text: str | None) -> str:
        # the fake's dump with one server key throughout: the same text while idle
        return "\n".join([f"(none)\t{server}\t5555\toff", *plain(argv, text).split("\n")[1:]])
    fake.runner.handlers.insert(0, (("wg", "show"), steady))
    ctx = ctx_for(settings, fake, api)
    svc.reconcile_once(ctx)
    first = svc.reconcile_once(ctx).status
    again = svc.reconcile_once(ctx).status
    assert again["peers"] == first["peers"]
    assert all(p["latest_handshake"] is None for p in again["peers"])
    fake.peers[str(K[0])]["hs"] = "1700000123"
    moved = svc.reconcile_once(ctx).status
    by_name = {p["name"]: p for p in moved["peers"]}
    assert by_name["dev-a"]["latest_handshake"] == 1700000123
    assert by_name["dev-b"]["latest_handshake"] is None
    on_disk = json.loads((settings.state_dir / "status.json").read_text())
    assert {p["name"]: p["latest_handshake"] for p in on_disk["peers"]}["dev-a"] == 1700000123


def test_the_scrape_snapshot_is_the_last_pass_aged_to_now_with_the_current_role(
        env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:
    """What /metrics reads in the daemon: the last pass's document (no new `wg show
    dump`), its device-list age counted to now, and the HA role as it is now (a
    server that just became standby raises no "no handshake" alarm)."""
    settings, fake, api = env
    ctx = ctx_for(settings, fake, api)
    svc.reconcile_once(ctx)
    assert ctx.last_status is not None
    ctx.last_status = {**ctx.last_status, "last_success": "2020-01-01T00:00:00Z",
                       "device_list_age_s": 0}
    dumps = sum(1 for c, _ in fake.runner.calls if c[:2] == ("wg", "show"))
    snap = daemon_module._snapshot(ctx)
    assert snap["peers"] == ctx.last_status["peers"]
    assert snap["device_list_age_s"] > 365 * 86400  # counted to now, not the 0 stored
    assert snap["role"] == "single"

    class Standby:
        def status_fields(self) -> dict[str, object]:
            return {"role": "standby", "vip": "198.18.0.100", "ha_peer": None,
                    "peer_sync_age_s": 1, "expect_handshakes": False}
    ctx.ha = Standby()  # type: ignore[assignment]
    snap = daemon_module._snapshot(ctx)
    assert snap["role"] == "standby" and snap["expect_handshakes"] is False
    assert sum(1 for c, _ in fake.runner.calls if c[:2] == ("wg", "show")) == dumps


def test_the_interface_is_read_while_the_desired_peers_are_worked_out(
        env: tuple[ServerSettings, FakeWg, FakeApi], monkeypatch: pytest.MonkeyPatch) -> None:
    """`wg show dump` at 50,000 peers is wireguard-go's work on the other core: the
    reconcile works out the desired peers meanwhile, not after it."""
    settings, fake, api = env
    planning = threading.Event()
    real_desired = reconcile_module.desired_peers

    def desired(*args: Any, **kw: Any) -> Any:
        planning.set()
        return real_desired(*args, **kw)

    monkeypatch.setattr(reconcile_module, "desired_peers", desired)
    seen: list[bool] = []
    dump = fake._dump

    def slow_dump(argv: Sequence[str], text: str | None) -> str:
        seen.append(planning.wait(timeout=5.0))  # the dump still running
        return dump(argv, text)

    fake.runner.handlers.insert(0, (("wg", "show"), slow_dump))
    report = svc.reconcile_once(ctx_for(settings, fake, api))
    assert report.ok and len(report.changes) == 2
    assert seen == [True]


def many_devices(n: int) -> list[WireguardIp]:
    return [WireguardIp(f"dev-{i:04d}", A(int(A("10.42.1.0")) + i), True,
                        KeyPair.generate().public) for i in range(n)]


def test_a_large_first_sync_puts_the_firewall_in_place_while_the_peers_are_set(
        env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:
    settings, fake, api = env
    settings = dataclasses.replace(settings, subnet="10.42.0.0/16")
    api.rows = many_devices(reconcile_module.BACKGROUND_APPLY + 1)
    firewall = fake.signal_nft()
    seen: list[bool] = []
    wg_set = fake._set

    def set_reply(argv: Sequence[str], text: str | None) -> str:
        seen.append(firewall.wait(timeout=5.0))
        return wg_set(argv, text)

    fake.runner.handlers.insert(0, (("wg", "set"), set_reply))
    ctx = ctx_for(settings, fake, api)
    report = svc.reconcile_once(ctx)
    assert report.ok and len(report.changes) == len(api.rows)
    assert seen and seen[0] is True  # the table came while the first `wg set` ran
    assert len(fake.peers) == len(api.rows)
    journal = (settings.state_dir / "journal.jsonl").read_text().splitlines()
    assert sum('"peer_add"' in line for line in journal) == len(api.rows)


def test_a_large_sync_whose_wg_set_fails_reports_it_and_journals_nothing(
        env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:
    settings, fake, api = env
    settings = dataclasses.replace(settings, subnet="10.42.0.0/16")
    api.rows = many_devices(reconcile_module.BACKGROUND_APPLY + 1)
    fake.runner.handlers.insert(0, (("wg", "set"), lambda a, i: (1, "Unable to modify")))
    report = svc.reconcile_once(ctx_for(settings, fake, api))
    assert not report.ok and report.changes == []
    assert any("peer change(s) failed" in e for e in report.errors)
    assert fake.rulesets  # the firewall still follows the desired peers
    journal = settings.state_dir / "journal.jsonl"
    assert not journal.exists() or '"peer_add"' not in journal.read_text()
    status = json.loads((settings.state_dir / "status.json").read_text())
    assert status["last_changes"] == []


@pytest.fixture
def gc_thresholds() -> Any:
    import gc
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield gc
    gc.set_threshold(*before)


def test_a_reconcile_leaves_the_process_gc_settings_alone(
        env: tuple[ServerSettings, FakeWg, FakeApi], gc_thresholds: Any) -> None:
    """The CLI, the MCP server and tests reconcile too: only the daemon's entry
    point tunes its process."""
    settings, fake, api = env
    assert svc.reconcile_once(ctx_for(settings, fake, api)).ok
    assert gc_thresholds.get_threshold() == (700, 10, 10)


def test_the_daemon_tunes_its_process_at_start(
        env: tuple[ServerSettings, FakeWg, FakeApi], gc_thresholds: Any) -> None:
    settings, fake, api = env
    assert svc.Daemon(ctx_for(settings, fake, api)).run(once=True) == 0
    assert gc_thresholds.get_threshold() == daemon_module.GC_THRESHOLDS


def test_a_reader_editing_the_last_status_rows_changes_no_later_pass(
        env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:
    """The status rows of an unchanged pass are reused: what the web page or a
    scrape does with the rows it reads must not reach the next status file."""
    settings, fake, api = env
    ctx = ctx_for(settings, fake, api)
    svc.reconcile_once(ctx)
    assert ctx.last_status is not None
    for row in ctx.last_status["peers"]:
        row["name"] = "edited"
        row["latest_handshake"] = 1
    svc.reconcile_once(ctx)  # an idle pass: the same peers, the same dump
    on_disk = json.loads((settings.state_dir / "status.json").read_text())
    assert {p["name"] for p in on_disk["peers"]} == {"dev-a", "dev-b"}
    assert {p["name"] for p in ctx.last_status["peers"]} == {"dev-a", "dev-b"}


def test_the_daemons_status_page_shows_the_last_pass_without_a_dump_of_its_own(
        env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:
    settings, fake, api = env
    ctx = ctx_for(settings, fake, api)
    svc.reconcile_once(ctx)
    # that pass added the peers: its dump (read before) is not the interface now
    before = len(fake.runner.calls)
    first = daemon_module._status_now(ctx)
    assert ("wg", "show", "fvtest0", "dump") in [c for c, _ in fake.runner.calls[before:]]
    assert {p["name"]: p["on_interface"] for p in first["peers"]} == {"dev-a": True,
                                                                      "dev-b": True}
    svc.reconcile_once(ctx)  # nothing to change
    before = len(fake.runner.calls)
    doc = daemon_module._status_now(ctx)
    assert fake.runner.calls[before:] == []  # no `wg show dump`, no `ip link show`
    assert doc["interface_up"] is True
    assert {p["name"]: p["on_interface"] for p in doc["peers"]} == {"dev-a": True,
                                                                    "dev-b": True}
    # the same document `server status --json` gives (which reads the interface)
    live = svc.status(settings, runner=fake.runner)
    assert live["peers"] == doc["peers"]
    # (FakeWg's dump names a new interface key each time)
    skip = {"daemon_running", "public_key"}
    assert {k: v for k, v in live.items() if k not in skip} == {
        k: v for k, v in doc.items() if k not in skip}

    # handshakes and counters go on between passes: a pass's dump older than
    # STATUS_DUMP_MAX_AGE is not shown; the interface is read again, once for the
    # polls that follow while that read is fresh
    fake.peers[str(K[0])]["hs"] = "1700000123"
    later = daemon_module.STATUS_DUMP_MAX_AGE + 1  # as if that long had passed
    ctx.last_dump_at -= later
    assert ctx.web_dump is not None  # the first page's read, older still
    ctx.web_dump = (ctx.web_dump[0] - later, ctx.web_dump[1])
    before = len(fake.runner.calls)
    fresh = daemon_module._status_now(ctx)
    again = daemon_module._status_now(ctx)
    dumps = [c for c, _ in fake.runner.calls[before:] if c[:2] == ("wg", "show")]
    assert len(dumps) == 1
    hs = {p["name"]: p["latest_handshake"] for p in fresh["peers"]}
    assert hs["dev-a"] == 1700000123 and again["peers"] == fresh["peers"]
    # a pass that ends after that read makes it old: its own dump is shown again
    svc.reconcile_once(ctx)
    before = len(fake.runner.calls)
    daemon_module._status_now(ctx)
    assert fake.runner.calls[before:] == []


class KernelTable:
    """The generation token of the table the fake kernel holds: the one in the last
    whole-table ruleset (``made_again`` stands for a table deleted and made anew)."""

    def __init__(self, fake: FakeWg) -> None:
        self.fake = fake
        self.gone = False
        self.made_again = False
        fake.runner.handlers.insert(0, (("nft", "-j", "list", "set", "inet", "fiovpn",
                                         "generation"), self.reply))

    def reply(self, argv: Sequence[str], _input: str | None) -> tuple[int, str]:
        import re
        full = [r for r in self.fake.rulesets if "delete table" in r]
        found = re.search(r'set generation \{[^}]*comment "([0-9a-f]+)"', full[-1]) \
            if full else None
        if self.gone or found is None:
            return 1, "Error: No such file or directory"
        token = "0" * 16 if self.made_again else found.group(1)
        return 0, json.dumps({"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {
            "family": "inet", "name": "generation", "table": "fiovpn", "type": "ipv4_addr",
            "handle": 2, "comment": token}}]})


def test_a_new_process_changes_the_firewall_by_elements_from_the_saved_model(
        env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:
    """A `--once` pass (or a restarted daemon) brings the table it finds to the new
    peers by element deltas, when the table is the one the saved model went to."""
    settings, fake, api = env
    kernel = KernelTable(fake)
    assert svc.reconcile_once(ctx_for(settings, fake, api)).ok
    assert "delete table inet fiovpn" in fake.rulesets[-1]  # the first: whole
    saved = json.loads((settings.state_dir / "firewall.json").read_text())
    assert f'comment "{saved["generation"]}"' in fake.rulesets[-1]

    api.rows[1] = row("dev-b", 9, K[1])  # dev-b moves to 10.42.42.9
    assert svc.reconcile_once(ctx_for(settings, fake, api)).ok
    delta = fake.rulesets[-1]
    assert "delete table" not in delta
    assert "delete element inet fiovpn device_ips { 10.42.42.3 }" in delta
    assert "add element inet fiovpn device_ips { 10.42.42.9 }" in delta

    # the table was deleted and made again since (another token): replaced whole
    kernel.made_again = True
    api.rows[1] = row("dev-b", 10, K[1])
    assert svc.reconcile_once(ctx_for(settings, fake, api)).ok
    assert "delete table inet fiovpn" in fake.rulesets[-1]
    assert "elements = { 10.42.42.2, 10.42.42.10 }" in fake.rulesets[-1]
    kernel.made_again = False

    # no table at all: replaced whole too
    kernel.gone = True
    api.rows[1] = row("dev-b", 11, K[1])
    assert svc.reconcile_once(ctx_for(settings, fake, api)).ok
    assert "delete table inet fiovpn" in fake.rulesets[-1]
    kernel.gone = False
    # an unreadable model: replaced whole
    (settings.state_dir / "firewall.json").write_text("{not json")
    api.rows[1] = row("dev-b", 12, K[1])
    assert svc.reconcile_once(ctx_for(settings, fake, api)).ok
    assert "delete table inet fiovpn" in fake.rulesets[-1]


def test_no_model_is_left_behind_when_the_firewall_change_fails(
        env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:
    settings, fake, api = env
    KernelTable(fake)
    ctx = ctx_for(settings, fake, api)
    assert svc.reconcile_once(ctx).ok
    assert (settings.state_dir / "firewall.json").exists()
    fake.runner.handlers.insert(0, (("nft", "-f", "-"), lambda a, i: (1, "Error: boom")))
    api.rows[1] = row("dev-b", 9, K[1])
    report = svc.reconcile_once(ctx)
    assert any("firewall" in e for e in report.errors)
    # the kernel may hold either table: the next process must replace it whole
    assert not (settings.state_dir / "firewall.json").exists()


def test_after_a_good_factory_answer_the_firewall_is_applied_while_wg_reads_the_interface(
        env: tuple[ServerSettings, FakeWg, FakeApi]) -> None:
    """At 50,000 peers `wg show dump` takes a while: the firewall and hosts file for
    the factory's devices need not wait for it."""
    settings, fake, api = env
    ctx = ctx_for(settings, fake, api)
    assert svc.reconcile_once(ctx).ok
    api.rows[1] = row("dev-b", 9, K[1])
    firewall = fake.signal_nft()
    seen: list[bool] = []
    wait_s = [5.0]
    dump = fake._dump

    cached: list[bool] = []

    def slow_dump(argv: Sequence[str], text: str | None) -> str:
        seen.append(firewall.wait(timeout=wait_s[0]))
        cached.append("10.42.42.9" in (settings.state_dir / "devices.json").read_text())
        return dump(argv, text)

    fake.runner.handlers.insert(0, (("wg", "show"), slow_dump))
    report = svc.reconcile_once(ctx)
    assert report.ok and [c.action for c in report.changes] == ["update"]
    assert seen == [True] and cached == [True]  # the device cache is written meanwhile too
    assert "add element inet fiovpn device_ips { 10.42.42.9 }" in fake.rulesets[-1]
    assert "10.42.42.9\tdev-b" in settings.hosts_file.read_text()
    assert fake.peers[str(K[1])]["ips"] == "10.42.42.9/32"

    # the factory failing: what stays depends on the interface, read first
    api.fail = ApiTemporaryError("factory API answered 503", delay=1.0)
    firewall.clear()
    seen.clear()
    wait_s[0] = 0.5
    api.rows[1] = row("dev-b", 10, K[1])
    svc.reconcile_once(ctx)
    assert seen == [False]  # no firewall before the dump came
