"""The sandbox answers the requests fioctl makes, in fioctl's shapes: device fields,
list filters and sorting, by-uuid, users, device PATCH, config POST/DELETE, and the
control endpoints the lab uses to set groups/tags and check devices in. Loopback only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from fiovpn.sandbox.server import SandboxServer

TOKEN = "sandbox-fioctl-token"
PUBKEY = "zGUGd1W4qgrNx1dJvA4nE7nSBXrk9wqQOgEGLTyT2Uk="


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:  # one client: a new one per call is slow
        yield client


@dataclass
class Sandbox:
    server: SandboxServer
    http: httpx.Client


@pytest.fixture
def sandbox(http: httpx.Client) -> Iterator[Sandbox]:
    with SandboxServer(token=TOKEN, devices=6) as server:
        yield Sandbox(server, http)


def call(sandbox: Sandbox, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    url = path if path.startswith("http") else sandbox.server.url + path
    return sandbox.http.request(method, url, json=body,
                                headers={"OSF-TOKEN": TOKEN, **(headers or {})})


def names(server: Sandbox, query: str) -> list[str]:
    r = call(server, "GET", f"/ota/devices/?factory=sandbox&{query}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == len(body["devices"])
    return [d["name"] for d in body["devices"]]


def test_list_filters_as_fioctl_sends_them(sandbox: Sandbox) -> None:
    # generated: odd devices group field / tag main, even lab / devel; every 3rd is prod
    assert names(sandbox, "group=lab") == ["device-02", "device-04", "device-06"]
    assert names(sandbox, "match_tag=main") == ["device-01", "device-03", "device-05"]
    assert names(sandbox, "prod=1") == ["device-03", "device-06"]
    assert names(sandbox, "prod=0") == ["device-01", "device-02", "device-04", "device-05"]
    assert names(sandbox, "name=device-0%5B12%5D") == ["device-01", "device-02"]  # glob [12]
    assert names(sandbox, "name=*-0?") == names(sandbox, "") and len(names(sandbox, "")) == 6
    assert names(sandbox, "name=device-1*") == []
    assert names(sandbox, "name_ilike=DEVICE-0%25") == names(sandbox, "")  # old fioctl
    target = call(sandbox, "GET", "/ota/devices/device-04/").json()["target-name"]
    assert "device-04" in names(sandbox, f"target_name={target}")
    uuid = call(sandbox, "GET", "/ota/devices/device-05/").json()["uuid"]
    assert names(sandbox, f"uuid={uuid}") == ["device-05"]
    assert names(sandbox, "group=lab&match_tag=devel&prod=1") == ["device-06"]
    assert names(sandbox, "mine=1") == names(sandbox, "")  # the token's user owns them
    assert names(sandbox, "group=nope") == []
    bad = call(sandbox, "GET", "/ota/devices/?prod=yes")
    assert bad.status_code == 400 and "prod" in bad.json()["message"]


def test_sortby_and_filters_survive_pagination(sandbox: Sandbox) -> None:
    assert names(sandbox, "sortby=-name")[0] == "device-06"
    call(sandbox, "POST", "/_sandbox/devices/device-02", {"last-seen": "2020-01-01T00:00:00+00:00"})
    assert names(sandbox, "sortby=last_seen")[0] == "device-02"
    assert names(sandbox, "sortby=-last_seen")[-1] == "device-02"
    bad = call(sandbox, "GET", "/ota/devices/?sortby=color")
    assert bad.status_code == 400 and "color" in bad.json()["message"]
    first = call(sandbox, "GET", "/ota/devices/?factory=sandbox&group=lab&limit=2").json()
    assert first["total"] == 3 and len(first["devices"]) == 2
    assert "group=lab" in first["next"]
    rest = call(sandbox, "GET", first["next"]).json()
    assert [d["name"] for d in rest["devices"]] == ["device-06"] and rest["next"] is None


def test_by_uuid_on_every_device_url(sandbox: Sandbox) -> None:
    uuid = call(sandbox, "GET", "/ota/devices/device-03/").json()["uuid"]
    one = call(sandbox, "GET", f"/ota/devices/{uuid}/?factory=sandbox&by-uuid=1")
    assert one.status_code == 200 and one.json()["name"] == "device-03"
    config = call(sandbox, "GET", f"/ota/devices/{uuid}/config/?factory=sandbox&by-uuid=1")
    assert config.status_code == 200 and config.json()["config"]
    # without by-uuid=1 the path is a name
    assert call(sandbox, "GET", f"/ota/devices/{uuid}/?factory=sandbox").status_code == 404
    missing = call(sandbox, "GET", "/ota/devices/device-03/?by-uuid=1")
    assert missing.status_code == 404


def test_users_and_owner(sandbox: Sandbox) -> None:
    r = call(sandbox, "GET", "/ota/factories/sandbox/users/")
    assert r.status_code == 200
    users = r.json()
    assert isinstance(users, list) and users
    assert all(set(u) == {"polis-id", "name", "role"} for u in users)
    device = call(sandbox, "GET", "/ota/devices/device-01/").json()
    assert device["owner"] in {u["polis-id"] for u in users}  # fioctl's owner column
    assert call(sandbox, "GET", "/ota/factories/other/users/").status_code == 404
    assert call(sandbox, "POST", "/ota/factories/sandbox/users/").status_code == 405


def test_device_patch_rename_group_owner(sandbox: Sandbox) -> None:
    r = call(sandbox, "PATCH", "/ota/devices/device-01/?factory=sandbox", {"group": "lab"})
    assert r.status_code == 200
    assert call(sandbox, "GET", "/ota/devices/device-01/").json()["group"]["name"] == "lab"
    # like the API: a group must exist first (fioctl config device-group create)
    r = call(sandbox, "PATCH", "/ota/devices/device-01/", {"group": "ghost-group"})
    assert r.status_code == 400 and "ghost-group" in r.json()["message"]
    r = call(sandbox, "PATCH", "/ota/devices/device-01/", {"owner": "not-a-user"})
    assert r.status_code == 400
    assert call(sandbox, "PATCH", "/ota/devices/device-01/", {"color": "red"}).status_code == 400
    r = call(sandbox, "PATCH", "/ota/devices/device-01/", {"name": "renamed"})
    assert r.status_code == 200 and r.json()["name"] == "renamed"
    assert call(sandbox, "GET", "/ota/devices/device-01/").status_code == 404
    assert call(sandbox, "PATCH", "/ota/devices/renamed/", {"name": "device-02"}
                ).status_code == 409
    assert call(sandbox, "DELETE", "/ota/devices/renamed/?factory=sandbox").status_code == 200
    assert "renamed" not in names(sandbox, "")


def test_config_post_replaces_and_delete_removes_one_file(sandbox: Sandbox) -> None:
    path = "/ota/devices/device-01/config/?factory=sandbox"
    before = call(sandbox, "GET", path).json()["config"][0]["files"]
    assert [f["name"] for f in before] == ["wireguard-client"]
    r = call(sandbox, "POST", path, {"reason": "new file", "files": [
        {"name": "z-app.toml", "value": "a=1", "unencrypted": True}]})
    assert r.status_code == 201
    current = call(sandbox, "GET", path).json()["config"][0]
    assert current["reason"] == "new file"
    assert current["files"] == [{"name": "z-app.toml", "value": "a=1", "unencrypted": True,
                                 "on-changed": []}]
    call(sandbox, "PATCH", path, {"reason": "back", "files": before})
    r = call(sandbox, "DELETE", "/ota/devices/device-01/config/z-app.toml/?factory=sandbox")
    assert r.status_code in (200, 202)
    after = call(sandbox, "GET", path).json()
    assert [f["name"] for f in after["config"][0]["files"]] == ["wireguard-client"]
    assert call(sandbox, "DELETE", "/ota/devices/device-01/config/z-app.toml/"
                ).status_code == 404
    # the factory's config the same way
    fpath = "/ota/factories/sandbox/config/"
    assert call(sandbox, "POST", fpath, {"reason": "r", "files": [
        {"name": "a", "value": "1"}, {"name": "b", "value": "2"}]}).status_code == 201
    assert call(sandbox, "DELETE", fpath + "a/").status_code in (200, 202)
    files = call(sandbox, "GET", fpath).json()["config"][0]["files"]
    assert [f["name"] for f in files] == ["b"]
    assert call(sandbox, "POST", fpath, {"reason": "r", "files": []}).status_code == 400


def test_control_sets_group_tag_and_checks_in(sandbox: Sandbox) -> None:
    r = call(sandbox, "POST", "/_sandbox/devices/device-03",
             {"device-group": "east", "tag": "beta", "is-prod": True, "up-to-date": False,
              "network-info": {"local_ipv4": "198.18.0.33"}})
    assert r.status_code == 200
    listed = r.json()
    assert (listed["device-group"], listed["tag"], listed["is-prod"], listed["up-to-date"]) \
        == ("east", "beta", True, False)
    assert listed["network-info"]["local_ipv4"] == "198.18.0.33"
    assert listed["network-info"]["hostname"] == "device-03"
    assert names(sandbox, "group=east") == ["device-03"]
    assert names(sandbox, "match_tag=beta") == ["device-03"]
    assert call(sandbox, "GET", "/ota/devices/device-03/").json()["group"]["name"] == "east"
    # now a real group: fioctl's PATCH may move another device into it
    assert call(sandbox, "PATCH", "/ota/devices/device-01/", {"group": "east"}
                ).status_code == 200
    bad = call(sandbox, "POST", "/_sandbox/devices/device-03", {"tag": 5})
    assert bad.status_code == 400
    assert call(sandbox, "GET", "/ota/devices/device-03/").json()["tag"] == "beta"
    assert call(sandbox, "POST", "/_sandbox/devices/ghost", {"tag": "x"}).status_code == 404
    # a new device with its group and tag at once
    r = call(sandbox, "POST", "/_sandbox/devices", {"name": "fresh", "pubkey": PUBKEY,
                                                    "device-group": "west", "tag": "t1"})
    assert r.status_code == 201 and r.json()["device-group"] == "west"

    # check-ins move last-seen: the control endpoint, and the device's own config GET
    old = "2020-01-01T00:00:00+00:00"
    call(sandbox, "POST", "/_sandbox/devices/device-04", {"last-seen": old})
    call(sandbox, "POST", "/_sandbox/devices/device-05", {"last-seen": old})
    r = call(sandbox, "POST", "/_sandbox/devices/device-04/checkin")
    assert r.status_code == 200 and r.json()["last-seen"] > old
    call(sandbox, "GET", "/ota/devices/device-05/config/")  # an engineer: no check-in
    assert call(sandbox, "GET", "/ota/devices/device-05/").json()["last-seen"] == old
    call(sandbox, "GET", "/ota/devices/device-05/config/", headers={"X-Sandbox-Device":
                                                                   "device-05"})
    seen = call(sandbox, "GET", "/ota/devices/device-05/").json()["last-seen"]
    assert seen[:4] == time.strftime("%Y", time.gmtime())
