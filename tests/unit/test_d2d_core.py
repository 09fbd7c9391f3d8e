"""Device-to-device, the pure part, and the two sh scripts the device runs: fiovpn's
dispatcher hook (with a recording ``wg`` on PATH) and the lab's stand-in for the
factory VPN handler (with a recording ``nmcli``)."""

from __future__ import annotations

import os
import stat
import subprocess
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from fiovpn.core import d2d
from fiovpn.core.factory_files import ServerConfigFile
from fiovpn.core.keys import KeyPair
from fiovpn.errors import BadInput
from fiovpn.lab.handler import handler_script
from fiovpn.lab.roles import handler_keyfile

SUBNET = IPv4Network("10.42.42.0/24")
SERVER = IPv4Address("10.42.42.1")
PEER = "+ROwjfXn/J3nfDA0WDG9zpqkWx9hwz5vhoUhVO3XTBU="
OTHER = "sO3oaa8JZ3yW0B7oZAV+2HgOn3woxDtFMgxKKJDLPEQ="


def test_parse_live_allowed_ips() -> None:
    text = f"{PEER}\t10.42.42.1/32 10.42.42.0/24\n{OTHER}\t(none)\n"
    assert d2d.parse_allowed_ips(text) == {
        PEER: (IPv4Network("10.42.42.1/32"), SUBNET), OTHER: ()}
    with pytest.raises(BadInput):
        d2d.parse_allowed_ips(f"{PEER}\tnot-a-net\n")


def test_server_peer_is_the_only_one_or_the_one_routing_the_server() -> None:
    one = {PEER: ()}
    assert d2d.server_peer(one, SERVER, SUBNET) == PEER
    two = {OTHER: (IPv4Network("192.168.7.0/24"),), PEER: (IPv4Network("10.42.42.1/32"),)}
    assert d2d.server_peer(two, SERVER, SUBNET) == PEER
    assert d2d.server_peer({}, SERVER, SUBNET) is None


def test_status_says_on_off_and_lasting() -> None:
    on = d2d.D2dStatus("dev", IPv4Address("10.42.42.2"), (SUBNET,), SUBNET, SUBNET)
    assert on.to_json() == {"name": "dev", "d2d": True, "allowed_ips": ["10.42.42.0/24"],
                            "persistent": True, "vpn_ip": "10.42.42.2"}
    assert "lasts" in on.summary()
    other_subnet = d2d.D2dStatus("dev", IPv4Address("10.42.42.2"), (SUBNET,), SUBNET,
                                 IPv4Network("10.9.0.0/16"))
    assert other_subnet.persistent is False  # a hook for another subnet does not count


def test_hook_subnet_is_read_from_its_marker() -> None:
    assert d2d.hook_subnet(d2d.render_hook(SUBNET, SERVER)) == SUBNET
    assert d2d.hook_subnet("#!/bin/sh\nexit 0\n") is None
    assert d2d.hook_subnet(None) is None


def _fake_tool(path: Path, name: str, log: Path, stdout: str = "") -> None:
    """A recording ``name`` on PATH: appends its argv to ``log`` and prints ``stdout``
    for ``show`` commands."""
    script = path / name
    script.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n'
                      f'case "$1 $3" in "show peers") printf "%s\\n" {_q(stdout.split()[:1])} ;;'
                      f' "show allowed-ips") printf "%b" {_q([stdout])} ;; esac\n')
    script.chmod(0o755)


def _q(items: list[str]) -> str:
    return " ".join("'" + i.replace("'", "'\\''") + "'" for i in items) or "''"


def run_hook(tmp_path: Path, args: list[str], env: dict[str, str], live: str,
             subnet: IPv4Network = SUBNET) -> list[str]:
    hook = tmp_path / d2d.HOOK_NAME
    hook.write_text(d2d.render_hook(subnet, SERVER))
    hook.chmod(0o755)
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    _fake_tool(bindir, "wg", log, live)
    _fake_tool(bindir, "ip", log)
    subprocess.run([str(hook), *args], env={"PATH": f"{bindir}:/usr/bin:/bin", **env},
                   check=True, timeout=10)
    return log.read_text().splitlines() if log.exists() else []


def test_hook_widens_the_server_peer_on_up_of_factory_vpn0(tmp_path: Path) -> None:
    calls = run_hook(tmp_path, ["factory-vpn0", "up"], {"CONNECTION_ID": "factory-vpn0"},
                     f"{PEER}\t10.42.42.1/32\n")
    assert f"wg set factory-vpn0 peer {PEER} allowed-ips 10.42.42.0/24" in calls


@pytest.mark.parametrize("args,conn", [(["factory-vpn0", "down"], "factory-vpn0"),
                                       (["eth0", "up"], "Wired connection 1"),
                                       (["factory-vpn0", "pre-up"], "factory-vpn0")])
def test_hook_ignores_other_actions_and_connections(tmp_path: Path, args: list[str],
                                                    conn: str) -> None:
    calls = run_hook(tmp_path, args, {"CONNECTION_ID": conn}, f"{PEER}\t10.42.42.1/32\n")
    assert not [c for c in calls if c.startswith("wg set")]


def test_hook_for_a_subnet_larger_than_the_address_prefix_adds_the_route(
        tmp_path: Path) -> None:
    calls = run_hook(tmp_path, ["factory-vpn0", "up"], {"CONNECTION_ID": "factory-vpn0"},
                     f"{PEER}\t10.42.42.1/32\n", subnet=IPv4Network("10.42.0.0/16"))
    assert "ip route replace 10.42.0.0/16 dev factory-vpn0" in calls


def test_hook_is_plain_sh(tmp_path: Path) -> None:
    text = d2d.render_hook(SUBNET, SERVER)
    assert text.startswith("#!/bin/sh\n")
    path = tmp_path / "hook"
    path.write_text(text)
    subprocess.run(["sh", "-n", str(path)], check=True, timeout=10)  # parses as POSIX sh
    for bashism in ("[[", "function ", "local ", "$(("):
        assert bashism not in text


# --- the lab's factory-config-vpn stand-in --------------------------------------------------


def run_handler(tmp_path: Path, server: str | None, client: str | None,
                existing: bool = False) -> tuple[str | None, list[str]]:
    secrets = tmp_path / "secrets"
    nmdir = tmp_path / "nm"
    secrets.mkdir(exist_ok=True)
    nmdir.mkdir(exist_ok=True)
    for name, text in (("wireguard-server", server), ("wireguard-client", client)):
        if text is not None:
            (secrets / name).write_text(text)
    keyfile = nmdir / "factory-vpn0.nmconnection"
    if existing:
        keyfile.write_text("[connection]\nid=factory-vpn0\n")
    priv = tmp_path / "wg-priv"
    priv.write_text(f"{KEY.private}\n")
    script = tmp_path / "factory-config-vpn"
    script.write_text(handler_script(private_key=priv, secrets_dir=str(secrets),
                                     connections_dir=str(nmdir)))
    script.chmod(0o755)
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    log = tmp_path / "nmcli.log"
    _fake_tool(bindir, "nmcli", log)
    subprocess.run([str(script)], env={"PATH": f"{bindir}:/usr/bin:/bin"}, check=True,
                   timeout=10, capture_output=True)
    calls = log.read_text().splitlines() if log.exists() else []
    text = keyfile.read_text() if keyfile.exists() else None
    if text is not None:
        assert stat.S_IMODE(os.stat(keyfile).st_mode) == 0o600
    return text, calls


KEY = KeyPair.generate()
SERVER_FILE = ServerConfigFile("198.18.0.1:5555", SERVER, KeyPair.generate().public)


def test_handler_writes_the_handlers_keyfile_then_loads_and_ups(tmp_path: Path) -> None:
    text, calls = run_handler(tmp_path, SERVER_FILE.render(),
                              f"address=10.42.42.7\npubkey={KEY.public}")
    assert text == handler_keyfile("factory-vpn0", KEY.private, SERVER_FILE,
                                   IPv4Address("10.42.42.7"))
    assert calls == [f"nmcli conn load {tmp_path}/nm/factory-vpn0.nmconnection",
                     "nmcli conn up factory-vpn0"]


def test_handler_client_file_overrides_and_keepalive(tmp_path: Path) -> None:
    # keys are sourced as shell, the client's last: its endpoint wins; keepalive honoured
    text, _ = run_handler(tmp_path, SERVER_FILE.render() + "\nkeepalive=7",
                          f"address=10.42.42.7\npubkey={KEY.public}\nendpoint=198.18.0.9:1")
    assert text is not None
    assert "endpoint=198.18.0.9:1\n" in text and "persistent-keepalive=7\n" in text
    assert "address1=10.42.42.7\n" in text  # no prefix: NetworkManager makes it a /24


@pytest.mark.parametrize("server,client", [
    (SERVER_FILE.render() + "\nenabled=0", "address=10.42.42.7"),
    (SERVER_FILE.render(), "address=10.42.42.7\nenabled=0"),
    (None, "address=10.42.42.7"),
    (SERVER_FILE.render(), None),
], ids=["server-disabled", "client-disabled", "no-server-file", "no-client-file"])
def test_handler_deletes_the_connection(tmp_path: Path, server: str | None,
                                        client: str | None) -> None:
    text, calls = run_handler(tmp_path, server, client, existing=True)
    assert text is None and calls == ["nmcli conn reload"]
