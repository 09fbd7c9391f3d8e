from __future__ import annotations

import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fiovpn.adapters.factory_api import ConfigEntry, ConfigFile, WireguardIp
from fiovpn.adapters.runner import Completed, FakeRunner
from fiovpn.core import wgquick
from fiovpn.core.keys import Key, KeyPair, public_key
from fiovpn.errors import BadInput, NotFound, PermanentError
from fiovpn.services import client as svc
from fiovpn.services.keys import generate_key_file
from fiovpn.settings import ClientSettings

SERVER = KeyPair.generate()
NOW = 1_760_000_000.0


class FakeFactory:
    """The part of FactoryApi the client uses; counts calls."""

    factory = "acme"

    def __init__(self, server_file: str | None) -> None:
        self.files = [] if server_file is None else [ConfigFile("wireguard-server",
                                                                server_file)]
        self.calls = 0

    def factory_config(self) -> list[ConfigEntry]:
        self.calls += 1
        return [ConfigEntry("2026-01-01T00:00:00", "test", tuple(self.files))]

    def wireguard_ips(self) -> list[WireguardIp]:
        return []


def server_file(enabled: bool = True) -> str:
    text = f"endpoint=vpn.acme.example:5555\nserver_address=10.42.42.1\npubkey={SERVER.public}"
    return text if enabled else text + "\nenabled=0"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def settings(home: Path) -> ClientSettings:
    return ClientSettings(config=home / ".config" / "wireguard" / "foundries.conf")


def init(home: Path, **kw: object) -> svc.InitResult:
    api = FakeFactory(server_file())
    return svc.init_client(settings(home), api=lambda: api, **kw)  # type: ignore[arg-type]


def config_key(home: Path) -> Key:
    view = wgquick.client_view(svc.load_config(settings(home).config))
    assert view.private_key is not None
    return view.private_key


# --- client init --------------------------------------------------------------------------


def test_init_uses_the_key_from_keys_generate(home: Path) -> None:
    pub = generate_key_file(home / ".config" / "wireguard" / "foundries.key")
    res = init(home)
    assert res.created
    assert res.public_key == pub
    assert public_key(config_key(home)) == pub
    assert stat.S_IMODE(settings(home).config.stat().st_mode) == 0o600
    assert f"fiovpn register --public-key {pub}" in res.next_step


def test_init_without_a_key_file_makes_a_new_key_and_reads_the_factory(home: Path) -> None:
    api = FakeFactory(server_file())
    res = svc.init_client(settings(home), api=lambda: api)
    assert api.calls == 1
    view = wgquick.client_view(svc.load_config(settings(home).config))
    assert view.server_public_key == SERVER.public
    assert view.endpoint == "vpn.acme.example:5555"
    assert str(view.allowed_ips[0]) == "10.42.42.0/24"
    assert str(view.server_address) == "10.42.42.1"
    assert view.address is None and res.address is None
    assert res.to_json().keys() >= {"public_key", "config", "address"}


def test_given_server_values_need_no_factory(home: Path) -> None:
    def no_api() -> FakeFactory:
        raise AssertionError("the factory must not be asked")

    res = svc.init_client(settings(home), server_endpoint="198.18.0.1",
                          server_public_key=str(SERVER.public), address="10.42.42.200",
                          api=no_api)  # type: ignore[arg-type,return-value]
    view = wgquick.client_view(svc.load_config(settings(home).config))
    assert view.endpoint == "198.18.0.1:5555"
    assert str(view.addresses[0]) == "10.42.42.200/32"
    assert res.address == "10.42.42.200"


def test_init_never_replaces_the_key_without_force(home: Path) -> None:
    first = init(home)
    key = config_key(home)
    again = init(home)
    assert not again.created and again.changed == ()
    assert config_key(home) == key
    assert again.public_key == first.public_key


def test_address_change_keeps_the_key_and_the_rest(home: Path) -> None:
    init(home)
    path = settings(home).config
    path.write_text(path.read_text() + "# my own note\n")
    key = config_key(home)
    res = init(home, address="10.42.42.205")
    assert res.changed == ("address",)
    assert config_key(home) == key
    text = path.read_text()
    assert "Address = 10.42.42.205/32" in text
    assert text.endswith("# my own note\n")


def test_force_starts_over_with_a_new_key(home: Path) -> None:
    key_file = home / ".config" / "wireguard" / "foundries.key"
    generate_key_file(key_file)
    init(home, address="10.42.42.205")
    old = config_key(home)
    res = init(home, force=True)
    new = config_key(home)
    assert new != old
    assert res.public_key == public_key(new)
    assert key_file.read_text().strip() == str(new)  # key file and config agree
    assert res.address == "10.42.42.205"  # the assigned address survives


@pytest.mark.parametrize("kw", [
    {"address": "10.42.42.999"},
    {"address": "8.8.8.8"},  # outside the VPN subnet
    {"address": "10.42.42.0"},  # the subnet's network address
    {"address": "10.42.42.255"},  # its broadcast address
    {"address": "10.42.42.1"},  # the server's own address
    {"server_endpoint": "vpn;reboot:5555"},
    {"server_public_key": "nope"},
])
def test_bad_input_changes_nothing(home: Path, kw: dict[str, str]) -> None:
    init(home)
    before = settings(home).config.read_bytes()
    with pytest.raises(BadInput):
        init(home, **kw)
    assert settings(home).config.read_bytes() == before


@pytest.mark.parametrize("address", ["8.8.8.8", "10.42.42.0", "10.42.42.1"])
def test_a_new_config_refuses_an_address_outside_the_vpn(home: Path, address: str) -> None:
    with pytest.raises(BadInput, match=f"--address {address}"):
        init(home, address=address)
    assert not settings(home).config.exists()


def test_force_says_the_new_key_must_be_registered(home: Path) -> None:
    init(home, address="10.42.42.205")
    old = public_key(config_key(home))
    res = init(home, force=True)
    assert "new key" in res.next_step
    assert f"fiovpn register --public-key {res.public_key}" in res.next_step
    assert "--ip 10.42.42.205" in res.next_step
    assert f"fiovpn unregister --public-key {old}" in res.next_step
    assert not res.next_step.startswith("Connect")


def test_factory_without_vpn_is_a_clear_error_and_writes_nothing(home: Path) -> None:
    api = FakeFactory(None)
    with pytest.raises(NotFound, match="VPN is not enabled"):
        svc.init_client(settings(home), api=lambda: api)
    assert not settings(home).config.exists()
    api2 = FakeFactory(server_file(enabled=False))
    with pytest.raises(Exception, match="disabled"):
        svc.init_client(settings(home), api=lambda: api2)
    assert not settings(home).config.exists()


def test_config_name_must_make_an_interface_name(home: Path) -> None:
    bad = ClientSettings(config=home / "this-name-is-too-long.conf")
    with pytest.raises(BadInput):
        svc.init_client(bad, api=lambda: FakeFactory(server_file()))


# --- the live interface, through a fake host ----------------------------------------------


@dataclass
class FakeHost:
    """wg / wg-quick / ping / nmcli as a machine would answer them."""

    client_key: Key
    up: bool = False
    handshake: int = 0  # unix time of the server's latest handshake
    server_answers: bool = True  # registered and reachable
    stale_session: bool = False  # the server forgot our session (restarted, re-added us)
    nm: bool = False
    rx: int = 0
    log: list[str] = field(default_factory=list)

    def runner(self) -> FakeRunner:
        r = FakeRunner()
        r.on("wg", "show", reply=self.wg_show)
        r.on("wg-quick", "up", reply=self.cmd("up"))
        r.on("wg-quick", "down", reply=self.cmd("down"))
        r.on("nmcli", "-t", "-f", "RUNNING", reply=lambda a, i: "running\n" if self.nm
             else (8, "Error: NetworkManager is not running."))
        r.on("nmcli", "connection", "up", reply=self.cmd("up"))
        r.on("nmcli", "connection", "down", reply=self.cmd("down"))
        r.on("ping", reply=self.ping)
        r.on("wg", "set", reply=self.wg_set)
        return r

    def wg_set(self, argv: Sequence[str], _input: str | None) -> str:
        self.log.append(" ".join(argv))
        if "remove" in argv:  # the peer is new: no session, no counters
            self.handshake, self.rx, self.stale_session = 0, 0, False
        return ""

    def cmd(self, what: str):  # type: ignore[no-untyped-def]
        def run(argv: Sequence[str], _input: str | None) -> str:
            self.log.append(" ".join(argv))
            self.up = what == "up"
            return ""
        return run

    def wg_show(self, argv: Sequence[str], _input: str | None) -> Completed:
        if not self.up:
            return Completed(tuple(argv), 1, "", "Unable to access interface: No such device")
        return Completed(tuple(argv), 0, self.dump(), "")

    def dump(self) -> str:
        # the shape of a real `wg show foundries dump` on a client
        return (f"{self.client_key}\t{public_key(self.client_key)}\t40123\toff\n"
                f"{SERVER.public}\t(none)\t198.18.0.1:5555\t10.42.42.0/24\t"
                f"{self.handshake}\t{self.rx}\t2960\t25\n")

    def ping(self, argv: Sequence[str], _input: str | None) -> tuple[int, str]:
        self.log.append(" ".join(argv))
        if self.up and self.server_answers and not self.stale_session:
            if not self.handshake:
                self.handshake, self.rx = int(NOW) - 3, self.rx + 92  # handshake response
            self.rx += 84  # the echo reply
            return 0, "1 packets transmitted, 1 received"
        return 1, "1 packets transmitted, 0 received"


@pytest.fixture
def host(home: Path) -> FakeHost:
    init(home, address="10.42.42.200")
    return FakeHost(config_key(home))


def test_connect_is_idempotent(home: Path, host: FakeHost) -> None:
    runner = host.runner()
    first = svc.connect(settings(home), runner)
    assert first.changed and first.backend == "wg-quick"
    assert host.log == [f"wg-quick up {settings(home).config}"]
    second = svc.connect(settings(home), runner)
    assert not second.changed and "already connected" in second.message
    assert len(host.log) == 1


WG_QUICK_ROUTE_CLASH = """\
[#] ip link add foundries type wireguard
[#] wg setconf foundries /dev/fd/63
[#] ip -4 address add 10.42.42.200/32 dev foundries
[#] ip link set mtu 1420 up dev foundries
[#] ip -4 route add 10.42.42.0/24 dev foundries
RTNETLINK answers: File exists
[#] ip link delete dev foundries
"""


def test_connect_failure_names_wg_quicks_cause_not_its_cleanup(home: Path,
                                                              host: FakeHost) -> None:
    runner = FakeRunner()
    runner.on("wg", "show", reply=host.wg_show)
    runner.on("wg-quick", "up", reply=lambda a, i: Completed(tuple(a), 2, "",
                                                            WG_QUICK_ROUTE_CLASH))
    with pytest.raises(PermanentError) as err:
        svc.connect(settings(home), runner)
    assert "RTNETLINK answers: File exists" in str(err.value)
    assert "ip link delete" not in str(err.value)
    assert "another VPN config connected" in str(err.value)


def test_connect_through_networkmanager_when_it_runs(home: Path, host: FakeHost) -> None:
    host.nm = True
    runner = host.runner()
    svc.connect(settings(home), runner)
    cmds = [" ".join(c[0]) for c in runner.calls]
    assert f"nmcli connection import type wireguard file {settings(home).config}" in cmds
    assert "nmcli connection up foundries" in cmds
    assert not any(c.startswith("wg-quick") for c in cmds)


def test_disconnect_is_idempotent(home: Path, host: FakeHost) -> None:
    runner = host.runner()
    assert "already disconnected" in svc.disconnect(settings(home), runner).message
    svc.connect(settings(home), runner)
    res = svc.disconnect(settings(home), runner)
    assert res.changed and not host.up
    assert host.log[-1] == f"wg-quick down {settings(home).config}"


def test_verify_when_down(home: Path, host: FakeHost) -> None:
    res = svc.verify(settings(home), host.runner(), now=lambda: NOW)
    assert res.to_json() | {"interface": "x", "server_address": "x"} == {
        "connected": False, "handshake_age_s": None, "server_reachable": False,
        "interface": "x", "server_address": "x"}
    assert not any(line.startswith("ping") for line in host.log)


def test_verify_when_working(home: Path, host: FakeHost) -> None:
    host.up, host.handshake = True, int(NOW) - 42
    res = svc.verify(settings(home), host.runner(), now=lambda: NOW)
    assert (res.connected, res.handshake_age_s, res.server_reachable) == (True, 42, True)
    assert res.ok
    assert "ping -n -c 1 -W 2 10.42.42.1" in host.log


def test_verify_when_not_registered(home: Path, host: FakeHost) -> None:
    host.up, host.server_answers = True, False
    res = svc.verify(settings(home), host.runner(), now=lambda: NOW)
    assert (res.connected, res.handshake_age_s, res.server_reachable) == (True, None, False)
    assert not res.ok


def test_status_reports_peer_and_transfer(home: Path, host: FakeHost) -> None:
    host.up, host.handshake, host.rx = True, int(NOW) - 5, 1234
    data = svc.status(settings(home), host.runner(), now=lambda: NOW)
    assert data["connected"] and data["address"] == "10.42.42.200"
    assert data["peer"]["handshake_age_s"] == 5
    assert (data["peer"]["rx"], data["peer"]["tx"]) == (1234, 2960)
    assert data["peer"]["endpoint"] == "198.18.0.1:5555"


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def kw(self) -> dict[str, Any]:
        return {"monotonic": self.monotonic, "sleep": self.sleep}

    def monotonic(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_check_registered_by_handshake(home: Path, host: FakeHost) -> None:
    clock = Clock()
    data = svc.check_registered_local(settings(home), host.runner(), timeout=5,
                                      now=lambda: NOW, monotonic=clock.monotonic,
                                      sleep=clock.sleep)
    assert data["registered"] is True
    # it connected for the check and put things back as they were
    assert host.log[0].startswith("wg-quick up") and host.log[-1].startswith("wg-quick down")
    assert not host.up


def test_check_registered_says_what_to_do_when_not(home: Path, host: FakeHost) -> None:
    host.server_answers = False
    clock = Clock()
    data = svc.check_registered_local(settings(home), host.runner(), timeout=5,
                                      now=lambda: NOW, monotonic=clock.monotonic,
                                      sleep=clock.sleep)
    pub = public_key(host.client_key)
    assert data["registered"] is False
    assert data["message"].startswith("not registered (or server unreachable)")
    assert f"fiovpn register --public-key {pub}" in data["next_step"]
    assert 4.5 <= clock.t <= 6  # waited until the deadline, not forever
    assert not host.up


def test_check_registered_stale_handshake_is_not_proof(home: Path, host: FakeHost) -> None:
    host.up, host.handshake, host.server_answers = True, int(NOW) - 3600, False
    clock = Clock()
    data = svc.check_registered_local(settings(home), host.runner(), timeout=2,
                                      now=lambda: NOW, monotonic=clock.monotonic,
                                      sleep=clock.sleep)
    assert data["registered"] is False
    assert host.up  # it was up before: left up


def fake_time() -> dict[str, Any]:
    return Clock().kw()


def test_check_registered_right_after_the_key_was_removed_says_no(home: Path,
                                                                host: FakeHost) -> None:
    """A handshake 10 s old, but an admin removed the key since: the server drops what
    this key sends. Old rule: 'registered' (any handshake under 180 s counted)."""
    host.up, host.handshake, host.rx = True, int(NOW) - 10, 5000
    host.server_answers = False
    clock = Clock()
    data = svc.check_registered_local(settings(home), host.runner(), now=lambda: NOW,
                                      **clock.kw())
    assert data["registered"] is False
    assert f"fiovpn register --public-key {public_key(host.client_key)}" in data["next_step"]
    # the old session got no answer, so a fresh handshake was forced: also unanswered
    assert any(" remove peer " in line for line in host.log)
    assert clock.t <= svc.ANSWER_WINDOW_S + svc.HANDSHAKE_WINDOW_S + 1, "a few seconds"
    assert host.up, "it was connected before: left connected"


def test_check_registered_fresh_session_answers_at_once(home: Path, host: FakeHost) -> None:
    host.up, host.handshake, host.rx = True, int(NOW) - 10, 5000
    clock = Clock()
    data = svc.check_registered_local(settings(home), host.runner(), now=lambda: NOW,
                                      **clock.kw())
    assert data["registered"] is True and data["handshake_age_s"] == 10
    assert not any(line.startswith("wg set") for line in host.log), "no session reset"
    assert clock.t == 0


def test_a_stale_session_is_replaced_by_a_fresh_handshake(home: Path, host: FakeHost) -> None:
    """The server restarted (or re-added the key): it answers a new handshake only."""
    host.up, host.handshake, host.rx, host.stale_session = True, int(NOW) - 30, 5000, True
    answer = svc.probe_server(settings(home), host.runner(), now=lambda: NOW,
                              **Clock().kw())
    assert answer.answered and answer.new_session and answer.handshake_age_s == 3
    (reset,) = [line for line in host.log if line.startswith("wg set")]
    assert reset == (f"wg set foundries peer {SERVER.public} remove peer {SERVER.public} "
                     "endpoint 198.18.0.1:5555 allowed-ips 10.42.42.0/24 "
                     "persistent-keepalive 25")


def test_the_session_reset_passes_a_preshared_key_on_stdin(home: Path, host: FakeHost) -> None:
    from fiovpn.core.keys import KeyPair as Pair

    psk = str(Pair.generate().private)
    path = settings(home).config
    path.write_text(path.read_text().replace("[Peer]\n", f"[Peer]\nPresharedKey = {psk}\n"))
    host.up, host.handshake, host.rx, host.stale_session = True, int(NOW) - 30, 5000, True
    runner = host.runner()
    svc.probe_server(settings(home), runner, now=lambda: NOW, **Clock().kw())
    (argv, given) = next((a, i) for a, i in runner.calls if a[:2] == ("wg", "set"))
    assert psk not in " ".join(argv) and argv[-2:] == ("preshared-key", "/dev/stdin")
    assert given == f"{psk}\n"


def test_doctor_right_after_the_key_was_removed(home: Path, host: FakeHost) -> None:
    host.up, host.handshake, host.rx = True, int(NOW) - 10, 5000
    host.server_answers = False
    d = svc.doctor(settings(home), host.runner(), now=lambda: NOW, **fake_time())
    assert outcome(d)["registered"] is False and outcome(d)["handshake"] is False
    assert not d.ok


# --- doctor -------------------------------------------------------------------------------


def outcome(d: svc.Doctor) -> dict[str, bool | None]:
    return {c.name: c.ok for c in d.checks}


def test_doctor_without_config(home: Path) -> None:
    d = svc.doctor(settings(home), FakeRunner())
    assert outcome(d)["config"] is False
    assert "fiovpn client init" in (d.checks[0].next_step or "")
    assert all(c.ok is None for c in d.checks[1:])
    assert not d.ok


def test_doctor_not_connected(home: Path, host: FakeHost) -> None:
    d = svc.doctor(settings(home), host.runner(), now=lambda: NOW, **fake_time())
    assert outcome(d) == {"config": True, "key": True, "address": True, "connected": False,
                          "handshake": None, "server_reachable": None, "registered": None}
    assert d.checks[3].next_step == "run `fiovpn connect`"


def test_doctor_not_registered(home: Path, host: FakeHost) -> None:
    host.up, host.server_answers = True, False
    d = svc.doctor(settings(home), host.runner(), now=lambda: NOW, **fake_time())
    assert outcome(d)["handshake"] is False and outcome(d)["registered"] is False
    step = next(c.next_step for c in d.checks if c.name == "registered")
    assert f"fiovpn register --public-key {public_key(host.client_key)}" in (step or "")
    steps = [c.next_step or "" for c in d.checks]
    assert not any("fiovpn doctor" in s for s in steps), "doctor never says 'run doctor'"
    assert sum("fiovpn register" in s for s in steps) == 1, "the fix is said once"


def test_doctor_all_good(home: Path, host: FakeHost) -> None:
    host.up, host.handshake = True, int(NOW) - 10
    d = svc.doctor(settings(home), host.runner(), now=lambda: NOW, **fake_time())
    assert all(c.ok for c in d.checks) and d.ok
    assert [c.to_json()["name"] for c in d.checks] == list(svc.ALL_CHECKS)


def test_doctor_missing_address(home: Path) -> None:
    init(home)
    d = svc.doctor(settings(home), FakeHost(config_key(home)).runner(), now=lambda: NOW)
    assert outcome(d)["address"] is False
    assert "--address" in (d.checks[2].next_step or "")


def test_factory_unreachable_says_how_to_do_without_it(home: Path) -> None:
    from fiovpn.errors import AuthError

    def no_token() -> FakeFactory:
        raise AuthError("no FoundriesFactory API token found", code="no_token")

    with pytest.raises(AuthError) as exc:
        svc.init_client(settings(home), api=no_token)  # type: ignore[arg-type]
    assert "--server-endpoint" in str(exc.value) and exc.value.code == "no_token"
    assert not settings(home).config.exists()


# --- recorded outputs (a client in the lab: `wg show <if> dump`, `ping -c1 -W2`) ---------

DATA = Path(__file__).parent.parent / "data"


def recorded_runner(ping_file: str) -> FakeRunner:
    r = FakeRunner()
    r.on("wg", "show", reply=lambda a, i: (DATA / "client-wg-show-dump.txt").read_text())
    r.on("ping", reply=lambda a, i: (0 if ping_file == "ping-ok.txt" else 1,
                                     (DATA / ping_file).read_text()))
    return r


def recorded_settings(home: Path) -> ClientSettings:
    """A config whose server peer is the one in the recorded dump."""
    dump = (DATA / "client-wg-show-dump.txt").read_text().splitlines()
    server_pub = dump[1].split("\t")[0]
    s = settings(home)
    svc.init_client(s, server_endpoint="198.18.0.1:5555", server_public_key=server_pub,
                    address="10.42.42.200")
    return s


def test_verify_from_recorded_outputs(home: Path) -> None:
    s = recorded_settings(home)
    handshake = 1795646198
    res = svc.verify(s, recorded_runner("ping-ok.txt"), now=lambda: handshake + 17.4)
    assert res.to_json() | {"interface": "", "server_address": ""} == {
        "connected": True, "handshake_age_s": 17, "server_reachable": True,
        "interface": "", "server_address": ""}
    lost = svc.verify(s, recorded_runner("ping-lost.txt"), now=lambda: handshake + 17.4)
    assert lost.server_reachable is False and not lost.ok
    status = svc.status(s, recorded_runner("ping-ok.txt"), now=lambda: handshake + 5)
    assert (status["peer"]["rx"], status["peer"]["tx"]) == (220, 436)
    assert status["peer"]["allowed_ips"] == ["10.42.42.0/24"]


def test_doctor_from_recorded_outputs(home: Path) -> None:
    s = recorded_settings(home)
    handshake = 1795646198
    fresh = svc.doctor(s, recorded_runner("ping-ok.txt"), now=lambda: handshake + 30,
                       **fake_time())
    assert fresh.ok
    # same dump an hour later and no answer: the server no longer takes this key
    stale = svc.doctor(s, recorded_runner("ping-lost.txt"), now=lambda: handshake + 3600,
                       **fake_time())
    bad = {c.name for c in stale.checks if c.ok is False}
    assert bad == {"handshake", "server_reachable", "registered"}


# --- the client pool (device space is not for clients) ------------------------------------


def test_init_address_in_device_space_warns_and_still_writes(home: Path) -> None:
    res = init(home, address="10.42.42.5")
    assert res.address == "10.42.42.5"  # the admin's word stands: exit 0, written
    assert len(res.warnings) == 1
    warning = res.warnings[0]
    assert "10.42.42.5 is outside the client pool 10.42.42.200-10.42.42.254" in warning
    assert "default for 10.42.42.0/24" in warning and "may differ" in warning
    assert "conflict with a device" in warning
    assert res.to_json()["warnings"] == [warning]
    # changing only the address of an existing config warns the same way
    again = init(home, address="10.42.42.6")
    assert again.changed == ("address",) and "10.42.42.6 is outside" in again.warnings[0]


def test_init_address_in_the_pool_has_no_warning(home: Path) -> None:
    assert init(home, address="10.42.42.200").warnings == ()
    assert init(home, address="10.42.42.254").warnings == ()


def test_init_address_uses_the_client_pool_setting_when_set(home: Path) -> None:
    s = ClientSettings(config=settings(home).config, client_pool="10.42.42.2-10.42.42.9")
    api = FakeFactory(server_file())
    res = svc.init_client(s, address="10.42.42.5", api=lambda: api)
    assert res.warnings == ()
    res = svc.init_client(s, address="10.42.42.220", api=lambda: api)
    assert "outside the client pool 10.42.42.2-10.42.42.9 (your client-pool setting)" \
        in res.warnings[0]
