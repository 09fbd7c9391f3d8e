from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from tests.unit.fake_lmp import HOOK, KEYFILE, SERVER_PUB, FakeLmpDevice

from fiovpn.adapters.factory_api import WireguardIp
from fiovpn.adapters.runner import Completed, FakeRunner
from fiovpn.adapters.ssh import SshOptions
from fiovpn.core.keys import KeyPair
from fiovpn.errors import AuthError, BadInput, NotFound, PermanentError
from fiovpn.services import device_access as svc
from fiovpn.settings import ClientSettings

SAMPLE = (Path(__file__).parent.parent / "data" / "factory-vpn0.nmconnection").read_text()
NO_SHARING = SshOptions()


class FakeFactory:
    factory = "acme"

    def __init__(self, rows: list[WireguardIp] | Exception) -> None:
        self.rows = rows

    def wireguard_ips(self) -> list[WireguardIp]:
        if isinstance(self.rows, Exception):
            raise self.rows
        return self.rows


def api(rows: list[WireguardIp] | Exception):  # type: ignore[no-untyped-def]
    fake = FakeFactory(rows)
    return lambda: fake


ROWS = [
    WireguardIp("dev-a", IPv4Address("10.42.42.2"), True, KeyPair.generate().public),
    WireguardIp("dev-off", IPv4Address("10.42.42.3"), False, KeyPair.generate().public),
]


class FakeDevice:
    """A device behind ssh: a file system with the keyfile, and nmcli."""

    def __init__(self, text: str = SAMPLE, user: str = "root") -> None:
        self.files = {KEYFILE: text}
        self.commands: list[list[str]] = []
        self.user = user

    def runner(self) -> FakeRunner:
        r = FakeRunner()
        r.on("ssh", reply=self.handle)
        return r

    def handle(self, argv: Sequence[str], stdin: str | None) -> Completed:
        words = shlex.split(argv[-1])
        if words[:3] == ["sudo", "-n", "--"]:
            words = words[3:]
        self.commands.append(words)
        out, rc, err = "", 0, ""
        if words[0] == "cat":
            if words[1] in self.files:
                out = self.files[words[1]]
            else:
                rc, err = 1, f"cat: {words[1]}: No such file or directory"
        elif words[:4] == ["install", "-m", "600", "/dev/stdin"]:
            self.files[words[4]] = stdin or ""
        elif words[0] == "mv":
            self.files[words[3]] = self.files.pop(words[2])
        elif words[0] == "nmcli":
            pass
        else:
            rc, err = 127, f"{words[0]}: not found"
        return Completed(tuple(argv), rc, out, err)


def settings(tmp_path: Path, **kw: object) -> ClientSettings:
    return ClientSettings(config=tmp_path / "foundries.conf", user="root",
                          hosts_file=tmp_path / "hosts", **kw)  # type: ignore[arg-type]


# --- name resolution ----------------------------------------------------------------------


def test_resolve_by_factory_name(tmp_path: Path) -> None:
    t = svc.resolve_device(settings(tmp_path), "dev-a", api=api(ROWS))
    assert (t.name, t.ip, t.source) == ("dev-a", IPv4Address("10.42.42.2"), "factory")


def test_resolve_by_ip_needs_no_factory(tmp_path: Path) -> None:
    t = svc.resolve_device(settings(tmp_path), "10.42.42.9", api=api(AssertionError("no")))
    assert t.ip == IPv4Address("10.42.42.9")


@pytest.mark.parametrize("ip", ["10.42.43.5", "192.168.1.10", "8.8.8.8"])
def test_an_ip_outside_the_vpn_is_refused_before_any_ssh(tmp_path: Path, ip: str) -> None:
    device = FakeDevice()
    runner = device.runner()
    with pytest.raises(BadInput, match="not a VPN address"):
        svc.run_on_device(settings(tmp_path), runner, ip, ["true"],
                          api=api(AssertionError("no")), options=NO_SHARING)
    assert runner.calls == []


def test_resolve_falls_back_to_the_hosts_block(tmp_path: Path) -> None:
    (tmp_path / "hosts").write_text(
        "127.0.0.1\tlocalhost\n10.42.42.77\tdev-z\n"
        "## Factory(acme) VPN Lookups\n10.42.42.5\tdev-b\n## END Factory(acme) VPN Lookups\n")
    s = settings(tmp_path)
    no_api = api(AuthError("no FoundriesFactory API token found"))
    assert svc.resolve_device(s, "dev-b", api=no_api).ip == IPv4Address("10.42.42.5")
    assert svc.resolve_device(s, "dev-b", api=no_api).source == "hosts"
    # lines outside the factory block do not count
    with pytest.raises(NotFound):
        svc.resolve_device(s, "dev-z", api=no_api)


def test_vpn_disabled_device_says_enable_vpn(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="enable-vpn dev-off"):
        svc.resolve_device(settings(tmp_path), "dev-off", api=api(ROWS))


def test_unknown_device_is_a_clear_error_and_nothing_runs(tmp_path: Path) -> None:
    dev = FakeDevice()
    runner = dev.runner()
    with pytest.raises(NotFound, match="unknown device 'nope'"):
        svc.run_on_device(settings(tmp_path), runner, "nope", ["true"], api=api(ROWS),
                          options=NO_SHARING)
    with pytest.raises(NotFound):
        svc.enable_d2d(settings(tmp_path), runner, "nope", api=api(ROWS), options=NO_SHARING)
    assert runner.calls == []


@pytest.mark.parametrize("bad", ["dev;reboot", "$(id)", "a b", "-oProxyCommand=x", ""])
def test_shell_characters_in_a_name_are_refused(tmp_path: Path, bad: str) -> None:
    runner = FakeDevice().runner()
    with pytest.raises(BadInput):
        svc.run_on_device(settings(tmp_path), runner, bad, ["true"], api=api(ROWS),
                          options=NO_SHARING)
    assert runner.calls == []


# --- fiovpn ssh ---------------------------------------------------------------------------


def test_ssh_passes_exit_code_and_output_through(tmp_path: Path) -> None:
    runner = FakeRunner()
    runner.on("ssh", reply=lambda a, i: Completed(tuple(a), 7, "out\n", "err\n"))
    res = svc.run_on_device(settings(tmp_path), runner, "dev-a", ["sh", "-c", "exit 7"],
                            api=api(ROWS), options=NO_SHARING)
    assert (res.exit_code, res.stdout, res.stderr) == (7, b"out\n", b"err\n")
    argv = runner.calls[0][0]
    assert argv[-2] == "10.42.42.2"
    assert shlex.split(argv[-1]) == ["sh", "-c", "exit 7"]
    assert argv[argv.index("-l") + 1] == "root"


# --- device-to-device ---------------------------------------------------------------------


def lmp(**kw: bool) -> FakeLmpDevice:
    return FakeLmpDevice(SAMPLE, **kw)


def test_enable_d2d_lasts_and_is_idempotent(tmp_path: Path) -> None:
    dev = lmp()
    s = settings(tmp_path)
    runner = dev.runner()
    first = svc.enable_d2d(s, runner, "dev-a", api=api(ROWS), options=NO_SHARING)
    assert first["changed"] is True and first["allowed_ips"] == ["10.42.42.0/24"]
    assert first["persistent"] is True
    assert first["changed_parts"] == ["hook", "keyfile", "interface"]
    assert "reboot" in first["warning"] and "wireguard-server" in first["warning"]
    # the hook: installed 0755, fiovpn's, for this subnet
    assert dev.modes[HOOK] == "755" and "allowed-ips 10.42.42.0/24" in dev.files[HOOK]
    # the keyfile: only the peer line changed; the private key is still there
    assert dev.files[KEYFILE].replace("10.42.42.0/24;", "10.42.42.1") == SAMPLE
    assert ["nmcli", "connection", "load", KEYFILE] in dev.commands
    # the live interface, in place (never `nmcli connection up`: the fake refuses it)
    assert dev.live == {SERVER_PUB: ["10.42.42.0/24"]}

    dev.commands.clear()
    second = svc.enable_d2d(s, runner, "dev-a", api=api(ROWS), options=NO_SHARING)
    assert second["changed"] is False and second["persistent"] is True
    assert dev.written() == []  # read only: nothing written or reloaded


def test_enable_d2d_completes_a_half_done_device(tmp_path: Path) -> None:
    """d2d enabled by an older fiovpn (keyfile widened, no hook), then rebooted."""
    dev = FakeLmpDevice(SAMPLE.replace("allowed-ips=10.42.42.1", "allowed-ips=10.42.42.0/24;"))
    res = svc.enable_d2d(settings(tmp_path), dev.runner(), "dev-a", api=api(ROWS),
                         options=NO_SHARING)
    assert res["changed_parts"] == ["hook", "interface"]
    assert dev.live == {SERVER_PUB: ["10.42.42.0/24"]}


def test_disable_d2d_removes_the_hook_and_restores_the_handlers_route(tmp_path: Path) -> None:
    dev = lmp()
    s = settings(tmp_path)
    runner = dev.runner()
    svc.enable_d2d(s, runner, "dev-a", api=api(ROWS), options=NO_SHARING)
    res = svc.disable_d2d(s, runner, "dev-a", api=api(ROWS), options=NO_SHARING)
    assert res["changed"] and res["allowed_ips"] == ["10.42.42.1/32"]
    assert res["persistent"] is False and res["warning"] is None
    assert dev.files[KEYFILE] == SAMPLE and HOOK not in dev.files
    assert dev.live == {SERVER_PUB: ["10.42.42.1/32"]}
    dev.commands.clear()
    again = svc.disable_d2d(s, runner, "dev-a", api=api(ROWS), options=NO_SHARING)
    assert again["changed"] is False and dev.written() == []


def test_d2d_status_reads_the_live_interface_and_the_hook(tmp_path: Path) -> None:
    dev = lmp()
    s = settings(tmp_path)
    runner = dev.runner()
    st = svc.d2d_status(s, runner, "dev-a", api=api(ROWS), options=NO_SHARING)
    assert st.to_json() == {"name": "dev-a", "d2d": False, "allowed_ips": ["10.42.42.1/32"],
                            "persistent": False, "vpn_ip": "10.42.42.2"}
    svc.enable_d2d(s, runner, "dev-a", api=api(ROWS), options=NO_SHARING)
    dev.commands.clear()
    # a reboot without the hook's help: the handler's narrow route is back live
    dev.live = {SERVER_PUB: ["10.42.42.1/32"]}
    st = svc.d2d_status(s, runner, "dev-a", api=api(ROWS), options=NO_SHARING)
    assert (st.d2d, st.persistent) == (False, True) and "did not run" in st.summary()
    dev.live = {SERVER_PUB: ["10.42.42.0/24"]}
    del dev.files[HOOK]
    st = svc.d2d_status(s, runner, "dev-a", api=api(ROWS), options=NO_SHARING)
    assert (st.d2d, st.persistent) == (True, False) and "NOT lasting" in st.summary()
    assert dev.written() == []  # status only reads


def test_keyfile_content_goes_through_stdin_never_argv(tmp_path: Path) -> None:
    dev = lmp()
    runner = dev.runner()
    svc.enable_d2d(settings(tmp_path), runner, "dev-a", api=api(ROWS), options=NO_SHARING)
    private = next(ln.split("=", 1)[1] for ln in SAMPLE.splitlines()
                   if ln.startswith("private-key="))
    assert all(private not in " ".join(argv) for argv, _ in runner.calls)
    assert any(stdin and private in stdin for _, stdin in runner.calls)


def test_non_root_device_user_goes_through_sudo_n(tmp_path: Path) -> None:
    dev = lmp()
    runner = dev.runner()
    s = ClientSettings(config=tmp_path / "foundries.conf", user="fio",
                       hosts_file=tmp_path / "hosts")
    svc.enable_d2d(s, runner, "dev-a", api=api(ROWS), options=NO_SHARING)
    root_only = [argv for argv, _ in runner.calls
                 if shlex.split(argv[-1])[-1] != HOOK]  # reading the 0755 hook needs no root
    assert all(shlex.split(argv[-1])[:3] == ["sudo", "-n", "--"] for argv in root_only)


def test_user_without_sudo_rights_gets_one_error_and_nothing_changes(tmp_path: Path) -> None:
    dev = lmp(sudo=False)
    s = ClientSettings(config=tmp_path / "foundries.conf", user="fio",
                       hosts_file=tmp_path / "hosts")
    with pytest.raises(PermanentError) as err:
        svc.enable_d2d(s, dev.runner(), "dev-a", api=api(ROWS), options=NO_SHARING)
    assert err.value.code == "sudo_password"
    assert "nothing was changed" in err.value.message
    assert "fio ALL=(root) NOPASSWD: /usr/bin/wg" in str(err.value)
    assert dev.commands == [] and dev.files == {KEYFILE: SAMPLE}


def test_device_without_the_vpn_connection(tmp_path: Path) -> None:
    dev = lmp()
    dev.files.clear()
    with pytest.raises(NotFound, match="factory-vpn0"):
        svc.enable_d2d(settings(tmp_path), dev.runner(), "dev-a", api=api(ROWS),
                       options=NO_SHARING)
    assert dev.written() == []
    dev = lmp()
    dev.live = None  # keyfile there, interface not up
    with pytest.raises(NotFound, match="no live factory-vpn0"):
        svc.enable_d2d(settings(tmp_path), dev.runner(), "dev-a", api=api(ROWS),
                       options=NO_SHARING)
    assert dev.written() == []


def test_an_edit_that_does_not_stick_is_reported(tmp_path: Path) -> None:
    dev = lmp()
    runner = FakeRunner()

    def forgetful(argv: Sequence[str], stdin: str | None) -> Completed:
        words = shlex.split(argv[-1])
        if words[:2] == ["wg", "set"]:  # the live change is lost
            return Completed(tuple(argv), 0, "", "")
        return dev.handle(argv, stdin)

    runner.on("ssh", reply=forgetful)
    with pytest.raises(PermanentError, match="after the change") as err:
        svc.enable_d2d(settings(tmp_path), runner, "dev-a", api=api(ROWS), options=NO_SHARING)
    assert err.value.code == "d2d_not_applied"


def test_output_that_is_not_utf8_is_escaped_and_says_so() -> None:
    raw = b"ok \xff\xfe\x00 end \xc3\xa9"
    text, escaped = svc.decode_output(raw)
    assert escaped is True and text == "ok \\xff\\xfe\x00 end é"
    assert svc.decode_output("é\n".encode()) == ("é\n", False)
    res = svc.SshResult("d", IPv4Address("10.42.42.2"), 0, raw, b"fine")
    data = res.to_json()
    assert data["stdout_escaped"] is True and data["stderr_escaped"] is False
    json.dumps(data)  # JSON-safe


def test_ssh_session_streams_on_our_stdio_and_passes_255_through(tmp_path: Path) -> None:
    runner = FakeRunner()
    runner.on("ssh", reply=lambda a, i: Completed(tuple(a), 255, "", ""))
    code = svc.ssh_session(settings(tmp_path), runner, "dev-a", ["sh", "-c", "exit 255"],
                           tty=False, api=api(ROWS))
    assert code == 255, "a remote exit 255 with ssh silent is the command's own"
    argv = runner.calls[0][0]
    assert "-T" in argv and "-E" in argv, "no terminal for a command; ssh's words to a log"


def test_ssh_session_without_a_command_asks_for_a_terminal(tmp_path: Path) -> None:
    runner = FakeRunner()
    code = svc.ssh_session(settings(tmp_path), runner, "dev-a", [], tty=True, api=api(ROWS))
    argv = runner.calls[0][0]
    assert code == 0 and "-t" in argv and argv[-1] == "10.42.42.2"


def test_ssh_session_bad_timeout_runs_nothing(tmp_path: Path) -> None:
    runner = FakeRunner()
    with pytest.raises(BadInput):
        svc.ssh_session(settings(tmp_path), runner, "dev-a", ["true"], tty=False,
                        timeout=0, api=api(ROWS))
    assert runner.calls == []


def test_device_paths_are_settings(tmp_path: Path) -> None:
    dev = lmp()
    dev.files = {"/data/nm/factory-vpn0.nmconnection": SAMPLE}
    s = settings(tmp_path, device_keyfile_dir=Path("/data/nm"),
                 device_dispatcher_dir=Path("/data/dispatcher.d"))
    svc.enable_d2d(s, dev.runner(), "dev-a", api=api(ROWS), options=NO_SHARING)
    assert "/data/dispatcher.d/90-fiovpn-d2d" in dev.files
    with pytest.raises(BadInput, match="device-keyfile-dir"):
        settings(tmp_path, device_keyfile_dir=Path("relative/dir")).validate()


# --- the device cache (`fiovpn ssh NAME` again within minutes: no API call) ------------------


def test_a_name_the_factory_just_listed_is_taken_from_the_cache(tmp_path: Path) -> None:
    s = settings(tmp_path, device_cache=tmp_path / "cache" / "devices.json")
    assert svc.resolve_device(s, "dev-a", api=api(ROWS), cached=True).source == "factory"
    assert (tmp_path / "cache" / "devices.json").stat().st_mode & 0o777 == 0o600
    t = svc.resolve_device(s, "dev-a", api=api(AssertionError("no API call")), cached=True)
    assert (t.ip, t.source) == (IPv4Address("10.42.42.2"), "cache")
    # a VPN-disabled device is never cached: the factory says why it cannot be reached
    with pytest.raises(BadInput, match="not enabled"):
        svc.resolve_device(s, "dev-off", api=api(ROWS), cached=True)
    # commands other than ssh always ask the factory
    assert svc.resolve_device(s, "dev-a", api=api(ROWS)).source == "factory"


def test_an_old_cache_or_another_factorys_is_not_used(tmp_path: Path) -> None:
    cache = tmp_path / "devices.json"
    s = settings(tmp_path, device_cache=cache, device_cache_ttl=300.0)
    svc.resolve_device(s, "dev-a", api=api(ROWS), cached=True)
    other = settings(tmp_path, device_cache=cache, factory="other")
    moved = [WireguardIp("dev-a", IPv4Address("10.42.42.8"), True, KeyPair.generate().public)]
    t = svc.resolve_device(other, "dev-a", api=api(moved), cached=True)
    assert (t.ip, t.source) == (IPv4Address("10.42.42.8"), "factory")
    data = json.loads(cache.read_text())
    data["written"] -= 301
    cache.write_text(json.dumps(data))
    assert svc.resolve_device(other, "dev-a", api=api(moved), cached=True).source == "factory"
    off = settings(tmp_path, device_cache=tmp_path / "off.json", device_cache_ttl=0)
    svc.resolve_device(off, "dev-a", api=api(ROWS), cached=True)
    assert not (tmp_path / "off.json").exists(), "ttl 0 turns the cache off"


def test_a_negative_cache_ttl_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="device-cache-ttl"):
        settings(tmp_path, device_cache_ttl=-1.0).validate()


def test_a_cached_ip_that_does_not_answer_is_looked_up_again(tmp_path: Path) -> None:
    s = settings(tmp_path, device_cache=tmp_path / "devices.json")
    svc.resolve_device(s, "dev-a", api=api(ROWS), cached=True)  # cached: 10.42.42.2
    moved = [WireguardIp("dev-a", IPv4Address("10.42.42.7"), True, KeyPair.generate().public)]

    def ssh(argv: Sequence[str], _stdin: str | None) -> Completed:
        host = argv[argv.index("--") + 1]
        if host == "10.42.42.2":  # the old address: nobody there any more
            log = Path(argv[argv.index("-E") + 1])
            log.write_text(f"ssh: connect to host {host} port 22: Connection timed out\n")
            return Completed(tuple(argv), 255, "", "")
        return Completed(tuple(argv), 0, "up\n", "")

    runner = FakeRunner()
    runner.on("ssh", reply=ssh)
    code = svc.ssh_session(s, runner, "dev-a", ["true"], tty=False, api=api(moved),
                           cached=True)
    hosts = [c[0][c[0].index("--") + 1] for c in runner.calls]
    assert (code, hosts) == (0, ["10.42.42.2", "10.42.42.7"])
    t = svc.resolve_device(s, "dev-a", api=api(AssertionError("no")), cached=True)
    assert t.ip == IPv4Address("10.42.42.7"), "the fresh list is cached"


def test_a_device_that_is_down_at_its_current_ip_is_not_retried(tmp_path: Path) -> None:
    s = settings(tmp_path, device_cache=tmp_path / "devices.json")
    svc.resolve_device(s, "dev-a", api=api(ROWS), cached=True)

    def down(argv: Sequence[str], _stdin: str | None) -> Completed:
        Path(argv[argv.index("-E") + 1]).write_text("ssh: connect to host 10.42.42.2 port "
                                                    "22: Connection timed out\n")
        return Completed(tuple(argv), 255, "", "")

    runner = FakeRunner()
    runner.on("ssh", reply=down)
    with pytest.raises(Exception, match="cannot connect"):
        svc.ssh_session(s, runner, "dev-a", ["true"], tty=False, api=api(ROWS), cached=True)
    assert len(runner.calls) == 1, "same IP in the factory: one attempt, one clear error"


def test_ssh_command_journals_the_program_only_and_bad_input_journals_nothing(
        tmp_path: Path) -> None:
    s = settings(tmp_path, journal=tmp_path / "journal.jsonl",
                 device_cache=tmp_path / "devices.json")
    runner = FakeRunner()
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(BadInput, match="--timeout must be positive"):
            svc.ssh_command(s, runner, "10.42.42.2", ["true"], timeout=bad)
    assert runner.calls == [] and not (tmp_path / "journal.jsonl").exists()
    assert svc.ssh_command(s, runner, "10.42.42.2", ["cat", "/secret-arg"]) == 0
    line = json.loads((tmp_path / "journal.jsonl").read_text())
    assert (line["action"], line["target"], line["detail"]) == (
        "ssh", "10.42.42.2", {"via": "cli", "program": "cat"})
    assert "/secret-arg" not in (tmp_path / "journal.jsonl").read_text()


def test_a_new_fioctl_login_is_a_new_cache(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    login = tmp_path / "fioctl.yaml"
    login.write_text("factory: acme\n")
    monkeypatch.setenv("FIOCTL_CONFIG", str(login))
    s = settings(tmp_path, device_cache=tmp_path / "devices.json")
    svc.resolve_device(s, "dev-a", api=api(ROWS), cached=True)
    assert svc.resolve_device(s, "dev-a", api=api(AssertionError("no")),
                              cached=True).source == "cache"
    login.write_text("factory: other\n")  # `fioctl login` to another factory
    st = login.stat()
    os.utime(login, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert svc.resolve_device(s, "dev-a", api=api(ROWS), cached=True).source == "factory"
