"""The sandbox factory API: shapes, auth, pagination, PATCH merging, persistence,
and `fiovpn sandbox serve` as a real process. Loopback only."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fiovpn.core.factory_files import VPN_HANDLER, ClientConfigFile
from fiovpn.errors import BadInput
from fiovpn.sandbox.server import SandboxServer

TOKEN = "sandbox-test-token"
PUBKEY = "zGUGd1W4qgrNx1dJvA4nE7nSBXrk9wqQOgEGLTyT2Uk="


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(token=TOKEN, devices=5) as server:
        yield server


def call(server: SandboxServer, method: str, path: str, body: Any = None,
         token: str | None = TOKEN) -> httpx.Response:
    headers = {"OSF-TOKEN": token} if token is not None else {}
    return httpx.request(method, server.url + path, json=body, headers=headers, timeout=5)


def test_device_list_and_device_shapes(sandbox: SandboxServer) -> None:
    r = call(sandbox, "GET", "/ota/devices/?factory=sandbox")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"devices", "total", "next"}
    assert body["total"] == 5 and body["next"] is None
    device = body["devices"][0]
    for key in ("name", "uuid", "owner", "status", "last-seen", "target-name", "device-group",
                "tag", "public-key", "factory"):
        assert isinstance(device[key], str) and device[key], key
    for key in ("up-to-date", "is-prod"):
        assert isinstance(device[key], bool), key
    assert set(device["network-info"]) == {"hostname", "local_ipv4", "mac"}
    assert device["public-key"].startswith("-----BEGIN PUBLIC KEY-----\n")
    assert "config" not in device and "group" not in device
    # a single GET has fioctl's `group` object instead of the list's `device-group` name
    one = call(sandbox, "GET", f"/ota/devices/{device['name']}/?factory=sandbox").json()
    group = one.pop("group")
    assert set(group) == {"id", "name", "description"} and isinstance(group["id"], int)
    assert group["name"] == device.pop("device-group")
    assert one == device


def test_generated_devices_publish_keys_and_two_are_on_vpn(sandbox: SandboxServer) -> None:
    ips = call(sandbox, "GET", "/ota/factories/sandbox/wireguard-ips/").json()
    # only devices with an address are listed (no `"ip": null` rows)
    assert [row["name"] for row in ips] == ["device-01", "device-02"]
    assert all(set(row) == {"name", "ip", "enabled", "pubkey"} for row in ips)
    assert all(len(row["pubkey"]) == 44 and row["enabled"] for row in ips)
    assert [row["ip"] for row in ips] == ["10.42.42.2", "10.42.42.3"]
    # a fresh device publishes `enabled=0\npubkey=K` with no on-changed handler
    config = call(sandbox, "GET", "/ota/devices/device-03/config/").json()
    wcc = config["config"][0]["files"][0]
    assert wcc["name"] == "wireguard-client" and wcc["on-changed"] == []
    assert re.fullmatch(r"enabled=0\npubkey=[A-Za-z0-9+/]{43}=", wcc["value"])
    parsed = ClientConfigFile.parse(wcc["value"])  # what fioctl and fiovpn read
    assert parsed.address is None and parsed.pubkey is not None and not parsed.enabled


def test_token_is_required(sandbox: SandboxServer) -> None:
    for token in (None, "wrong"):
        for path in ("/ota/devices/", "/ota/factories/sandbox/config/", "/_sandbox/requests"):
            r = call(sandbox, "GET", path, token=token)
            assert r.status_code == 401, (path, token)
            assert isinstance(r.json()["message"], str)


def test_unknown_factory_device_and_path_are_404(sandbox: SandboxServer) -> None:
    assert call(sandbox, "GET", "/ota/factories/other/config/").status_code == 404
    assert call(sandbox, "GET", "/ota/devices/?factory=other").status_code == 404
    r = call(sandbox, "GET", "/ota/devices/ghost/?factory=sandbox")
    assert r.status_code == 404 and "ghost" in r.json()["message"]
    assert call(sandbox, "GET", "/ota/devices/ghost/config/").status_code == 404
    assert call(sandbox, "GET", "/nothing/here").status_code == 404
    assert call(sandbox, "DELETE", "/ota/devices/").status_code == 405


def test_pagination_follows_absolute_next_urls() -> None:
    with SandboxServer(token=TOKEN, devices=23) as server:
        url: str | None = server.url + "/ota/devices/?factory=sandbox&limit=10"
        names: list[str] = []
        pages = 0
        while url:
            body = httpx.get(url, headers={"OSF-TOKEN": TOKEN}, timeout=5).json()
            assert body["total"] == 23
            names += [d["name"] for d in body["devices"]]
            url = body["next"]
            if url:
                assert url.startswith(server.url + "/ota/devices/?")
                assert "limit=10" in url and "factory=sandbox" in url
            pages += 1
        assert pages == 3 and len(set(names)) == 23
        bad = call(server, "GET", "/ota/devices/?limit=zero")
        assert bad.status_code == 400 and bad.json()["errors"]


def test_patch_merges_files_into_a_new_current_entry(sandbox: SandboxServer) -> None:
    path = "/ota/factories/sandbox/config/"
    server_file = {"name": "wireguard-server", "unencrypted": True, "on-changed": [VPN_HANDLER],
                   "value": f"endpoint=h:5555\nserver_address=10.42.42.1\npubkey={PUBKEY}"}
    assert call(sandbox, "PATCH", path, {"reason": "first", "files": [server_file]}
                ).status_code in (200, 201, 202)
    other = {"name": "other", "value": "a", "unencrypted": False}
    call(sandbox, "PATCH", path, {"reason": "second", "files": [other]})
    body = call(sandbox, "GET", path).json()
    assert set(body) == {"config", "total", "next"} and body["total"] == 2
    current = body["config"][0]
    assert current["reason"] == "second" and re.match(r"\d{4}-\d\d-\d\dT", current["created-at"])
    assert {f["name"]: f for f in current["files"]} == {
        "wireguard-server": server_file, "other": {**other, "on-changed": []}}
    assert body["config"][1]["reason"] == "first"


def test_patch_with_a_bad_body_is_400_and_changes_nothing(sandbox: SandboxServer) -> None:
    path = "/ota/devices/device-01/config/?factory=sandbox"
    before = call(sandbox, "GET", path).json()
    r = call(sandbox, "PATCH", path, {"reason": "x", "files": [{"name": "a", "value": 3}]})
    assert r.status_code == 400
    assert r.json()["message"] and r.json()["errors"] == ["files[0].value must be a string"]
    assert call(sandbox, "GET", path).json() == before


def test_control_endpoints(sandbox: SandboxServer) -> None:
    r = call(sandbox, "POST", "/_sandbox/devices", {"name": "keyless"})
    assert r.status_code == 201 and r.json()["name"] == "keyless"
    r = call(sandbox, "POST", "/_sandbox/devices", {"name": "lab-dev", "pubkey": PUBKEY})
    assert r.status_code == 201
    assert call(sandbox, "POST", "/_sandbox/devices", {"name": "lab-dev"}).status_code == 409
    assert call(sandbox, "POST", "/_sandbox/devices", {"name": "a b"}).status_code == 400
    ips = {row["name"]: row for row in
           call(sandbox, "GET", "/ota/factories/sandbox/wireguard-ips/").json()}
    assert "keyless" not in ips and "lab-dev" not in ips  # no address yet
    files = call(sandbox, "GET", "/ota/devices/lab-dev/config/").json()["config"][0]["files"]
    assert files == [{"name": "wireguard-client", "value": f"enabled=0\npubkey={PUBKEY}",
                      "unencrypted": True, "on-changed": []}]

    start = call(sandbox, "GET", "/_sandbox/requests").json()["requests"]
    call(sandbox, "POST", "/_sandbox/fail", {"status": 502, "count": 2, "retry_after": 1})
    first = call(sandbox, "GET", "/ota/devices/")
    assert first.status_code == 502 and first.headers["Retry-After"] == "1"
    assert call(sandbox, "GET", "/ota/devices/").status_code == 502
    assert call(sandbox, "GET", "/ota/devices/").status_code == 200
    call(sandbox, "POST", "/_sandbox/fail", {"status": 500, "count": -1})
    assert call(sandbox, "GET", "/ota/devices/").status_code == 500
    call(sandbox, "POST", "/_sandbox/clear")
    assert call(sandbox, "GET", "/ota/devices/").status_code == 200
    call(sandbox, "POST", "/_sandbox/slow", {"seconds": 0.3, "count": 1})
    t0 = time.monotonic()
    assert call(sandbox, "GET", "/ota/devices/").status_code == 200
    assert time.monotonic() - t0 >= 0.3
    # control calls are not counted, API calls are
    assert call(sandbox, "GET", "/_sandbox/requests").json()["requests"] - start == 6


def test_state_survives_a_restart_and_is_shared(tmp_path: Path) -> None:
    state = tmp_path / "factory.json"
    path = "/ota/devices/device-02/config/?factory=lab"
    with SandboxServer(factory="lab", token=TOKEN, devices=3, state_path=state) as first:
        names = [d["name"] for d in call(first, "GET", "/ota/devices/?factory=lab"
                                         ).json()["devices"]]
        call(first, "PATCH", path, {"reason": "disable", "files": [
            {"name": "wireguard-client", "value": "address=10.42.42.3\npubkey=K\nenabled=0",
             "unencrypted": True, "on-changed": [VPN_HANDLER]}]})
        # a second process on the same state file sees the change
        with SandboxServer(state_path=state) as second:
            assert second.factory_name == "lab" and second.token == TOKEN
            assert call(second, "GET", path).json()["config"][0]["reason"] == "disable"
            call(second, "POST", "/_sandbox/devices", {"name": "added-by-second"})
        assert call(first, "GET", "/ota/devices/added-by-second/?factory=lab").status_code == 200
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    saved = json.loads(state.read_text())
    assert set(saved) == {"factory", "token", "users", "groups", "devices", "factory_config",
                          "oauth"}
    with SandboxServer(state_path=state, devices=50) as restarted:
        body = call(restarted, "GET", "/ota/devices/?factory=lab").json()
        assert [d["name"] for d in body["devices"]] == sorted([*names, "added-by-second"])
        assert call(restarted, "GET", path).json()["config"][0]["reason"] == "disable"
    with pytest.raises(BadInput, match="holds factory 'lab'"):
        SandboxServer(factory="other", state_path=state)


def test_a_lab_seeded_state_file_loads(tmp_path: Path) -> None:
    state = tmp_path / "seed.json"
    state.write_text(json.dumps({
        "factory": "seeded", "token": "seed-token",
        "devices": [{"name": "d1", "uuid": "u1", "status": "OK", "last-seen": "",
                     "target-name": "t", "device-group": "g", "config": [
                         {"created-at": "2026-01-01T00:00:00+00:00", "reason": "seed",
                          "files": [{"name": "wireguard-client", "value": f"pubkey={PUBKEY}",
                                     "unencrypted": True, "on-changed": [VPN_HANDLER]}]}]}],
        "factory_config": [],
    }))
    with SandboxServer(state_path=state) as server:
        assert call(server, "GET", "/ota/devices/").status_code == 401
        r = call(server, "GET", "/ota/factories/seeded/wireguard-ips/", token="seed-token")
        assert r.json() == []  # published a key, has no address: not listed
        d1 = call(server, "GET", "/ota/devices/d1/", token="seed-token").json()
        assert d1["group"]["name"] == "g" and d1["owner"] and d1["up-to-date"] is True
    state.write_text('{"devices": "nope"}')
    with pytest.raises(BadInput, match="'devices' must be a list"):
        SandboxServer(state_path=state)


def test_sandbox_serve_runs_as_a_process(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fiovpn", "sandbox", "serve", "--bind", "127.0.0.1",
         "--port", "0", "--factory", "proc", "--devices", "3", "--state", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "sandbox did not print its ready line within 20 s"
        line = proc.stdout.readline()
        m = re.fullmatch(r"sandbox factory proc listening on (http://127\.0\.0\.1:\d+) "
                         r"\(token sandbox\)\n", line)
        assert m, line
        body = httpx.get(m.group(1) + "/ota/devices/?factory=proc",
                         headers={"OSF-TOKEN": "sandbox"}, timeout=5).json()
        assert body["total"] == 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert json.loads(state.read_text())["factory"] == "proc"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
