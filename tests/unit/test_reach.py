"""ssh-config rendering, cp operands and forward specs: pure checks, no network."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from fiovpn.adapters.factory_api import WireguardIp
from fiovpn.adapters.runner import FakeRunner
from fiovpn.core import sshconfig
from fiovpn.errors import BadInput
from fiovpn.services import ssh_config, transfer
from fiovpn.settings import ClientSettings


def rows() -> list[WireguardIp]:
    return [WireguardIp("dev-b", IPv4Address("10.42.42.3"), True, None),
            WireguardIp("dev-a", IPv4Address("10.42.42.2"), True, None),
            WireguardIp("dev-off", IPv4Address("10.42.42.4"), False, None),
            WireguardIp("dev-new", None, False, None)]


def settings(tmp_path: Path, **kw: object) -> ClientSettings:
    return ClientSettings(config=tmp_path / "wg.conf", user="root",
                          hosts_file=tmp_path / "hosts", **kw)  # type: ignore[arg-type]


def test_fragment_has_a_block_per_vpn_enabled_device_with_fiovpns_options() -> None:
    text = sshconfig.render(
        [sshconfig.HostEntry("dev-b", IPv4Address("10.42.42.3")),
         sshconfig.HostEntry("dev-a", IPv4Address("10.42.42.2"))],
        sshconfig.HostOptions(user="fio", known_hosts=Path("/h/my known_hosts"),
                              identity_file=Path("/h/.ssh/id_%x"),
                              extra=("GlobalKnownHostsFile=/dev/null",)))
    blocks = text.split("\nHost ")[1:]
    assert [b.splitlines()[0] for b in blocks] == ["dev-a", "dev-b"]
    a = blocks[0].splitlines()
    assert "    HostName 10.42.42.2" in a and "    User fio" in a
    assert '    UserKnownHostsFile "/h/my known_hosts"' in a  # quoted: a space
    assert "    IdentityFile /h/.ssh/id_%%x" in a  # ssh expands %-tokens
    assert "    StrictHostKeyChecking yes" in a and "    GlobalKnownHostsFile /dev/null" in a
    assert "StrictHostKeyChecking no" not in text


def test_written_0600_only_when_changed_and_never_the_users_ssh_config(tmp_path: Path,
                                                                      monkeypatch:
                                                                      pytest.MonkeyPatch
                                                                      ) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    s = settings(tmp_path, known_hosts=tmp_path / "kh")
    first = ssh_config.write_ssh_config(s, rows())
    assert first.path == tmp_path / ".config" / "fiovpn" / "ssh_config"
    assert first.path.stat().st_mode & 0o777 == 0o600 and first.changed
    assert [h.name for h in first.hosts] == ["dev-a", "dev-b"]
    assert first.to_json()["include"] == f"Include {first.path}"
    assert ssh_config.write_ssh_config(s, rows()).changed is False
    assert not (tmp_path / ".ssh" / "config").exists()
    default = ssh_config.write_ssh_config(settings(tmp_path), rows(),
                                          output=tmp_path / "o")
    assert f"UserKnownHostsFile {tmp_path}/.ssh/known_hosts" in default.path.read_text()


def test_ssh_config_refuses_what_fiovpn_ssh_refuses(tmp_path: Path) -> None:
    with pytest.raises(BadInput):
        ssh_config.write_ssh_config(
            settings(tmp_path, ssh_options=("StrictHostKeyChecking=no",)), rows(),
            output=tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("spec", "device", "path"), [
    ("dev-a:/etc/x", "dev-a", "/etc/x"), ("dev-a:", "dev-a", "."), ("./a:b", None, "./a:b"),
    ("/x:y", None, "/x:y"), ("plain", None, "plain"), ("10.42.42.2:/tmp", "10.42.42.2", "/tmp"),
])
def test_cp_operands_read_as_scp_does(spec: str, device: str | None, path: str) -> None:
    loc = transfer.Location.parse(spec)
    assert (loc.device, loc.path) == (device, path)


@pytest.mark.parametrize(("srcs", "dst"), [
    (["a", "b"], "c"), (["dev-a:/x"], "dev-b:/y"), (["dev-a:/x", "dev-b:/y"], "."),
    (["dev-a:/x", "local"], "."), (["d$(id):/x"], "."), ([":x"], "dev-a:/y"),
])
def test_cp_bad_operands_run_nothing(tmp_path: Path, srcs: list[str], dst: str) -> None:
    runner = FakeRunner()
    with pytest.raises(BadInput):
        transfer.copy(settings(tmp_path), runner, srcs, dst, api=lambda: _api())
    assert runner.calls == []


def test_cp_uses_scp_with_fiovpns_ssh_options(tmp_path: Path) -> None:
    runner = FakeRunner()
    (tmp_path / "kh").write_text("")
    data = transfer.copy(settings(tmp_path, known_hosts=tmp_path / "kh"), runner,
                         ["a.txt", "b.txt"], "dev-a:/tmp/", recursive=True,
                         api=lambda: _api())
    [(argv, _)] = runner.calls
    assert argv[0] == "scp" and "-r" in argv and "StrictHostKeyChecking=yes" in argv
    assert f"UserKnownHostsFile={tmp_path / 'kh'}" in argv
    assert argv[-3:] == ("a.txt", "b.txt", "root@10.42.42.2:/tmp/") and argv[-4] == "--"
    assert data["direction"] == "upload" and data["device"] == "dev-a"


@pytest.mark.parametrize(("spec", "parsed"), [
    ("8080:127.0.0.1:80", (None, 8080, "127.0.0.1", 80)),
    ("127.0.0.2:8080:db.lan:5432", ("127.0.0.2", 8080, "db.lan", 5432)),
    ("8080:[::1]:80", (None, 8080, "::1", 80)),
    ("localhost:1:h:2", ("localhost", 1, "h", 2)),
])
def test_forward_specs(spec: str, parsed: tuple[object, ...]) -> None:
    f = transfer.Forward.parse(spec)
    assert (f.bind, f.port, f.host, f.host_port) == parsed
    assert transfer.Forward.parse(str(f)) == f


@pytest.mark.parametrize("spec", ["80", "1:2", "0:h:80", "8080:h:70000", "x:1:h:2",
                                  "8080:h;id:80", "8080::80", "a:b:c:d:e", "8080:-oX:80"])
def test_bad_forward_specs(spec: str) -> None:
    with pytest.raises(BadInput):
        transfer.Forward.parse(spec)


class _Api:
    factory = "f"

    def wireguard_ips(self) -> list[WireguardIp]:
        return rows()


def _api() -> _Api:
    return _Api()
