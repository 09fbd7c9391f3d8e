"""Section 11 end to end, in one namespace lab: who may reach which device (the
factory's device groups), for how long (grants that end in the kernel, client
expiry), admins without a root shell (a forced command), and the journal.

Every probe runs inside a lab namespace. Tests run in order on one lab.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from fiovpn.adapters.fs import atomic_write
from fiovpn.core.keys import KeyPair
from fiovpn.core.timespec import parse_timestamp
from fiovpn.lab import DeviceSpec, Engineer, Lab, wait_for
from fiovpn.lab.roles import Server
from fiovpn.settings import render_toml

pytestmark = pytest.mark.e2e

INTERVAL = 2


@pytest.fixture(scope="module")
def lab(make_lab: Callable[..., Lab]) -> Lab:
    lab = make_lab(devices=[DeviceSpec("lab-1", group="lab"), DeviceSpec("prod-1", group="prod")],
                   engineers=2, admins=1, server_settings={"interval": INTERVAL})
    server = lab.server
    # `server admins` manages the lab sshd's authorized_keys (a setting, never ~root)
    server.settings["authorized-keys"] = str(server.home / "sshd" / "authorized_keys")
    atomic_write(server.config_path, render_toml(server.settings), mode=0o600)
    lab.start_vpn()
    return lab


def ip_of(lab: Lab, device: str) -> str:
    return str(lab.device(device).vpn_ip)


def server_json(lab: Lab, *args: str, check: bool = True) -> Any:
    return lab.server.fiovpn_json("server", *args, "--config", str(lab.server.config_path),
                                  check=check)


def join_restricted(lab: Lab, eng: Engineer, name: str, groups: str) -> str:
    init = eng.fiovpn_json("client", "init")
    added = server_json(lab, "clients", "add", "--public-key", str(init["public_key"]),
                        "--name", name, "--groups", groups)
    eng.fiovpn("client", "init", "--address", added["ip"])
    eng.fiovpn("connect")
    assert eng.ping(Server.vpn_ip, timeout=20)
    return str(added["ip"])


@pytest.fixture(scope="module")
def restricted(lab: Lab) -> Engineer:
    """engineer2 as client `contractor` with groups=lab."""
    eng = lab.engineers[1]
    join_restricted(lab, eng, "contractor", "lab")
    return eng


def reaches(eng: Engineer, ip: str) -> bool:
    return eng.ping_once(ip, wait=1)


def wait_reach(eng: Engineer, ip: str, want: bool, timeout: float, what: str) -> float:
    start = time.monotonic()
    wait_for(lambda: reaches(eng, ip) is want, timeout=timeout, what=what, interval=0.3)
    return time.monotonic() - start


def journal(lab: Lab) -> list[dict[str, Any]]:
    data = server_json(lab, "journal")
    assert isinstance(data, list)
    return data


def nft_table(lab: Lab) -> str:
    return lab.server.run(["nft", "list", "table", "inet", "fiovpn"]).stdout


def test_group_policy_follows_the_factory(lab: Lab, restricted: Engineer) -> None:
    lab_ip, prod_ip = ip_of(lab, "lab-1"), ip_of(lab, "prod-1")
    assert wait_reach(restricted, lab_ip, True, 15, "contractor reaches lab-1") >= 0
    assert not reaches(restricted, prod_ip), "groups=lab must not reach a prod device"
    eng1 = lab.engineers[0]
    lab.join(eng1, name="eng1")
    assert reaches(eng1, prod_ip) and reaches(eng1, lab_ip)  # no groups=: every device
    # moved in the factory: changes after one reconcile (interval 2 s)
    assert lab.factory is not None
    lab.factory.set_device("prod-1", group="lab")
    lab.factory.set_device("lab-1", group="prod")
    wait_reach(restricted, prod_ip, True, 4 * INTERVAL + 5, "prod-1 now in group lab")
    wait_reach(restricted, lab_ip, False, 4 * INTERVAL + 5, "lab-1 now in group prod")
    lab.factory.set_device("prod-1", group="prod")
    lab.factory.set_device("lab-1", group="lab")
    wait_reach(restricted, prod_ip, False, 4 * INTERVAL + 5, "prod-1 back in prod")
    wait_reach(restricted, lab_ip, True, 4 * INTERVAL + 5, "lab-1 back in lab")


def ends_at(text: str) -> float:
    return float(parse_timestamp(text))


def wait_refused_at(eng: Engineer, ip: str, end: float, what: str) -> None:
    """Refused around ``end`` (wall clock): not more than 1.5 s early, at most 5 s late.
    Windows are measured against the end the command answered, so a slow
    (loaded) machine does not make the test lie either way."""
    wait_reach(eng, ip, False, max(0.0, end - time.time()) + 10, what)
    at = time.time()
    assert end - 1.5 <= at <= end + 5, (at - end, what)


def test_grant_ends_in_the_kernel_with_the_daemon_stopped(lab: Lab,
                                                          restricted: Engineer) -> None:
    prod_ip = ip_of(lab, "prod-1")
    lab.server.stop_daemon()
    try:
        # 5 s in the issue; 10 s so a loaded machine still sees the window open
        granted = server_json(lab, "access", "grant", "--name", "contractor", "--device",
                              "prod-1", "--for", "10s")
        end = ends_at(granted["expires"])
        assert granted["client"] == "contractor" and granted["device"] == "prod-1"
        line = next(ln for ln in nft_table(lab).splitlines() if f". {prod_ip}" in ln)
        assert "timeout" in line and "expires" in line, line  # the kernel ends it
        assert seconds(line, "expires") <= end - time.time() + 1.5, line
        assert reaches(restricted, prod_ip), "a grant works at once"
        wait_refused_at(restricted, prod_ip, end, "the grant to end, daemon stopped")
        assert server_json(lab, "access", "list") == []
    finally:
        lab.server.start_daemon()
        lab.server.wait_synced()


def seconds(text: str, word: str) -> float:
    """``timeout 13s240ms`` -> 13.24 (nft's notation, under a minute)."""
    m = re.search(word + r" (\d+)s(?:(\d+)ms)?", text)
    assert m is not None, text
    return int(m[1]) + int(m[2] or 0) / 1000


def restart(lab: Lab) -> None:
    """kill -9 and start again; wait for the new daemon's own first pass."""
    lab.server.kill_daemon()
    before = str(lab.server.status().get("last_sync"))
    time.sleep(1.1)  # last_sync has whole seconds
    lab.server.start_daemon()
    lab.server.wait_synced(after=before)


def test_restart_inside_a_grant_keeps_the_rest_and_no_more(lab: Lab,
                                                           restricted: Engineer) -> None:
    prod_ip = ip_of(lab, "prod-1")
    # long enough for a kill -9 and a restart on a loaded machine
    granted = server_json(lab, "access", "grant", "--name", "contractor", "--group", "prod",
                          "--for", "30s")
    end = ends_at(granted["expires"])
    listed = server_json(lab, "access", "list")
    assert [(g["client"], g["group"]) for g in listed] == [("contractor", "prod")]
    assert 0 < listed[0]["remaining_s"] <= 30
    assert reaches(restricted, prod_ip)
    time.sleep(2)
    restart(lab)
    grants = nft_table(lab).split("set grp_prod_grants")[1].split("}")[0]
    left = end - time.time()
    assert "timeout " in grants, (grants, left)
    timeout, expires = (seconds(grants, word) for word in ("timeout", "expires"))
    # ending when the grant ends, not a fresh 30 s from the restart: the restarted
    # daemon left the element as it was (its saved model says the kernel has it)
    # or re-applied it with what remained
    assert timeout <= 30 and abs(expires - left) <= 2, (grants, left)
    assert reaches(restricted, prod_ip)
    wait_refused_at(restricted, prod_ip, end, "the grant to end after the restart")
    restart(lab)  # an ended grant is never re-applied
    assert not reaches(restricted, prod_ip)
    assert "elements" not in nft_table(lab).split("set grp_prod_grants")[1].split("}")[0]


def test_expiry_then_renew(lab: Lab, restricted: Engineer) -> None:
    lab_ip = ip_of(lab, "lab-1")
    # 3 s in the issue; 6 s so a loaded machine still pings before it
    renewed = server_json(lab, "clients", "renew", "--name", "contractor", "--expires", "6s")
    end = ends_at(renewed["expires"])
    assert reaches(restricted, lab_ip)
    wait_refused_at(restricted, lab_ip, end, "the client to expire")
    listed = {c["name"]: c for c in server_json(lab, "clients", "list")}
    assert listed["contractor"]["expired"] is True
    key = listed["contractor"]["public_key"]
    wait_for(lambda: key not in lab.server.peers(), timeout=10, what="off the interface")
    server_json(lab, "clients", "renew", "--name", "contractor", "--expires", "1h")
    wait_reach(restricted, lab_ip, True, 15, "renew to bring it back")
    assert server_json(lab, "clients", "list")[-1]["expired"] is False
    actions = [ln["action"] for ln in journal(lab) if ln["target"] == "contractor"]
    assert {"client_add", "renew", "grant", "expire"} <= set(actions)


def test_admin_without_a_root_shell(lab: Lab, restricted: Engineer) -> None:
    key_file = lab.server.home / "carol.pub"
    key_file.write_text(restricted.ssh_public_key + "\n")
    added = server_json(lab, "admins", "add", "--ssh-public-key", str(key_file),
                        "--name", "carol")
    assert added["name"] == "carol"
    assert [a["name"] for a in server_json(lab, "admins", "list")] == ["carol"]
    newbie = str(KeyPair.generate().public)
    registered = restricted.fiovpn_json("register", "--public-key", newbie, "--name", "newbie",
                                        "--groups", "lab")
    assert registered["name"] == "newbie" and registered["groups"] == ["lab"]
    line = next(ln for ln in journal(lab) if ln["action"] == "client_add"
                and ln["target"] == "newbie")
    assert line["actor"] == "carol"
    check = restricted.fiovpn_json("check-registered", "--public-key", newbie)
    assert check["in_registry"] is True
    before = lab.server.clients_file.read_bytes()
    for command in ("id", "sh", "sh -c id",
                    f"fiovpn server clients add --public-key {newbie} --name a;id",
                    "fiovpn server clients add --public-key K --name $(id)",
                    "fiovpn server daemon"):
        r = restricted.ssh(Server.vpn_ip, command, port=Server.ssh_port, check=False)
        assert r.returncode != 0 and "uid=" not in r.stdout, (command, r.stdout)
        assert "admins may run only" in r.stderr, (command, r.stderr)
    assert lab.server.clients_file.read_bytes() == before
    refused = [ln for ln in journal(lab) if ln["action"] == "refused"]
    assert len(refused) == 6 and {ln["actor"] for ln in refused} == {"carol"}


def test_bad_input_changes_nothing(lab: Lab) -> None:
    before = lab.server.clients_file.read_bytes()
    key = str(KeyPair.generate().public)
    for args in (("clients", "add", "--public-key", key, "--groups", "nosuch"),
                 ("clients", "add", "--public-key", key, "--expires", "5x"),
                 ("clients", "add", "--public-key", key, "--expires", "2020-01-01T00:00:00Z"),
                 ("clients", "renew", "--name", "ghost", "--expires", "1h"),
                 ("access", "grant", "--name", "ghost", "--group", "lab", "--for", "5s"),
                 ("access", "grant", "--name", "contractor", "--group", "nosuch", "--for",
                  "5s"),
                 ("access", "grant", "--name", "contractor", "--group", "lab", "--for", "5x")):
        r = lab.server.fiovpn("server", *args, "--config", str(lab.server.config_path),
                              "--json", check=False)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert json.loads(r.stdout)["error"]["message"]
    assert lab.server.clients_file.read_bytes() == before


def test_mcp_guardrails_and_the_engineers_journal(lab: Lab) -> None:
    eng = lab.engineers[0]

    def params(*flags: str) -> StdioServerParameters:
        enter = list(eng.enter)
        env = [f"{k}={v}" for k, v in sorted(eng.env.items())]
        return StdioServerParameters(command=enter[0], args=[
            *enter[1:], "env", "-i", *env, lab.fiovpn_path, "mcp", *flags])

    async def read_only() -> list[tuple[str, Any]]:
        async with Client(params("--read-only"), read_timeout_seconds=60) as client:
            return [(t.name, t.annotations) for t in (await client.list_tools()).tools]

    async def allow_lab() -> tuple[bool, str]:
        async with Client(params("--allow-devices", "lab-*"), read_timeout_seconds=60) as c:
            r = await c.call_tool("ssh_to_device", {"device": "prod-1", "command": "id"})
            return r.is_error, " ".join(getattr(x, "text", "") for x in r.content)

    listed = anyio.run(read_only)
    assert listed and all(a is not None and a.read_only_hint for _, a in listed)
    assert not {"ssh_to_device", "disable_foundries_vpn_device"} & {n for n, _ in listed}
    is_error, text = anyio.run(allow_lab)
    assert is_error and "refused" in text and "prod-1" in text
    assert eng.fiovpn("ssh", "lab-1", "--", "true").returncode == 0
    path = eng.home / ".local" / "state" / "fiovpn" / "journal.jsonl"
    lines = [json.loads(t) for t in path.read_text().splitlines()]
    assert [(ln["action"], ln["target"], ln["detail"]["via"]) for ln in lines][-2:] == [
        ("ssh_to_device", "prod-1", "mcp"), ("ssh", "lab-1", "cli")]
    assert lines[-2]["detail"]["allowed"] is False
