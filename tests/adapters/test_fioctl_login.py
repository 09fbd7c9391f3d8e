"""fioctl's settings and logins, for real: fiovpn commands (subprocesses, no FIOVPN_*
variables, HOME in a temp dir) against the sandbox on 127.0.0.1, with fioctl-format
configs in both the ``token:`` and the ``clientcredentials`` (``fioctl login``) form,
and OAuth tokens that expire in seconds (the sandbox's token endpoint)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fiovpn.adapters import fioctl
from fiovpn.sandbox.server import SandboxServer

TOKEN = "fioctl-api-token"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(token=TOKEN, devices=3, token_ttl=2) as server:
        yield server


def control(sandbox: SandboxServer, name: str, body: Any = None) -> Any:
    r = httpx.request("GET" if body is None else "POST", f"{sandbox.url}/_sandbox/{name}",
                      json=body, headers={"OSF-TOKEN": TOKEN}, timeout=5)
    r.raise_for_status()
    return r.json()


def token_requests(sandbox: SandboxServer) -> int:
    return int(control(sandbox, "requests")["token_requests"])


def env_for(home: Path, **extra: str) -> dict[str, str]:
    """A user's environment: HOME in the test's dir, no FIOVPN_* (nor the caller's
    FIOCTL_*) variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIOVPN_", "FIOCTL_"))}
    return {**env, "HOME": str(home), **extra}


def fiovpn(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fiovpn", *args], env=env, text=True,
                          capture_output=True, timeout=60, check=False)


def devices_list(env: dict[str, str]) -> list[str]:
    proc = fiovpn(env, "devices", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    return sorted(d["name"] for d in json.loads(proc.stdout))


def login_yaml(sandbox: SandboxServer, answer: dict[str, Any], *, created: str | None = None,
               factory: str = "sandbox") -> str:
    """A fioctl.yaml as `fioctl login` leaves it, with comments and other keys around."""
    created = created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return (
        "# written by fioctl login\n"
        "clientcredentials:\n"
        f"    access_token: {answer['access_token']}\n"
        f"    client_id: {answer['client_id']}\n"
        f"    client_secret: {answer['client_secret']}\n"
        f"    created: \"{created}\"\n"
        f"    expires_in: {answer['expires_in']}\n"
        f"    refresh_token: {answer['refresh_token']}\n"
        f"    token_type: {answer['token_type']}\n"
        f"    url: {sandbox.url}/oauth\n"
        f"factory: {factory}\n"
        "server:\n"
        f"    url: {sandbox.url}   # the sandbox, not api.foundries.io\n"
        "verbose: false\n"
    )


def unchanged_lines(before: str, after: str) -> list[str]:
    """The lines of ``before`` that are not one of the values a refresh rewrites."""
    rewritten = ("access_token:", "refresh_token:", "created:", "expires_in:", "token_type:")
    kept = [line for line in before.splitlines() if not line.strip().startswith(rewritten)]
    assert [line for line in after.splitlines()
            if not line.strip().startswith(rewritten)] == kept
    return kept


def test_token_form_with_server_url_and_fioctl_overrides(sandbox: SandboxServer,
                                                         tmp_path: Path) -> None:
    (tmp_path / ".config").mkdir()
    config = tmp_path / ".config" / "fioctl.yaml"
    config.write_text(f"factory: sandbox\ntoken: {TOKEN}\nserver:\n  url: {sandbox.url}\n")
    env = env_for(tmp_path)
    assert devices_list(env) == ["device-01", "device-02", "device-03"]
    # FIOCTL_CONFIG: the file elsewhere; FIOCTL_TOKEN / FIOCTL_FACTORY beat the file
    other = tmp_path / "other.yaml"
    other.write_text(f"factory: not-this-one\ntoken: wrong-token\nserver:\n  url: {sandbox.url}\n")
    env = env_for(tmp_path, FIOCTL_CONFIG=str(other))
    refused = fiovpn(env, "devices", "list")
    assert refused.returncode != 0 and "wrong-token" not in refused.stderr
    assert devices_list({**env, "FIOCTL_TOKEN": TOKEN, "FIOCTL_FACTORY": "sandbox"}) \
        == ["device-01", "device-02", "device-03"]
    wrong_factory = fiovpn({**env, "FIOCTL_TOKEN": TOKEN}, "devices", "list")
    assert wrong_factory.returncode != 0 and "not-this-one" in wrong_factory.stderr
    # fiovpn's own settings still come first
    assert devices_list({**env, "FIOCTL_TOKEN": "wrong", "FIOVPN_API_TOKEN": TOKEN,
                         "FIOVPN_FACTORY": "sandbox"}) == ["device-01", "device-02",
                                                           "device-03"]


def test_expiring_login_is_refreshed_once_and_written_back(sandbox: SandboxServer,
                                                            tmp_path: Path) -> None:
    answer = control(sandbox, "oauth/login", {})
    assert answer["expires_in"] == 2
    (tmp_path / ".config").mkdir()
    config = tmp_path / ".config" / "fioctl.yaml"
    before = login_yaml(sandbox, answer)
    config.write_text(before)
    config.chmod(0o644)  # as fioctl writes it
    env = env_for(tmp_path)
    start = token_requests(sandbox)
    assert devices_list(env) == ["device-01", "device-02", "device-03"]
    if token_requests(sandbox) == start:  # the fresh token was used as it was
        assert config.read_text() == before
        time.sleep(2.2)  # now it has expired
        assert devices_list(env) == ["device-01", "device-02", "device-03"]
    assert token_requests(sandbox) - start == 1
    after = config.read_text()
    new = fioctl.load({"HOME": str(tmp_path)}).login
    assert new is not None
    assert new.access_token != answer["access_token"]
    assert new.refresh_token != answer["refresh_token"]  # rotated, and kept
    assert new.client_id == answer["client_id"] and new.expires_in == 2
    assert (config.stat().st_mode & 0o777) == 0o644
    assert "# written by fioctl login" in unchanged_lines(before, after)
    # the old tokens are spent: the new ones in the file are what works now
    r = httpx.post(f"{sandbox.url}/oauth/token/", timeout=5, data={
        "grant_type": "refresh_token", "client_id": answer["client_id"],
        "client_secret": answer["client_secret"], "refresh_token": answer["refresh_token"]})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_two_processes_refreshing_at_once_leave_a_working_file(sandbox: SandboxServer,
                                                               tmp_path: Path) -> None:
    answer = control(sandbox, "oauth/login", {})
    (tmp_path / ".config").mkdir()
    config = tmp_path / ".config" / "fioctl.yaml"
    config.write_text(login_yaml(sandbox, answer, created="2020-01-01T00:00:00Z"))  # expired
    env = env_for(tmp_path)
    start = token_requests(sandbox)
    procs = [subprocess.Popen([sys.executable, "-m", "fiovpn", "devices", "list", "--json"],
                              env=env, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _out, err in outs]
    # under the lock the second one read the first one's refresh instead of spending
    # the rotated refresh token again
    assert token_requests(sandbox) - start == 1
    login = fioctl.load({"HOME": str(tmp_path)}).login
    assert login is not None and login.access_token != answer["access_token"]
    time.sleep(2.2)
    assert devices_list(env) == ["device-01", "device-02", "device-03"]  # refreshes again


def test_a_login_that_cannot_be_refreshed_is_one_error_naming_fioctl_login(
        sandbox: SandboxServer, tmp_path: Path) -> None:
    answer = control(sandbox, "oauth/login", {})
    (tmp_path / ".config").mkdir()
    config = tmp_path / ".config" / "fioctl.yaml"
    text = login_yaml(sandbox, answer, created="2020-01-01T00:00:00Z")
    config.write_text(text)
    control(sandbox, "oauth/revoke", {})
    proc = fiovpn(env_for(tmp_path), "devices", "list")
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) <= 2, proc.stderr  # the error, and at most its hint
    assert "`fioctl login`" in proc.stderr and str(config) in proc.stderr
    assert answer["access_token"] not in proc.stderr + proc.stdout
    assert answer["client_secret"] not in proc.stderr + proc.stdout
    assert config.read_text() == text  # nothing written
    proc = fiovpn(env_for(tmp_path), "devices", "list", "--json")
    assert json.loads(proc.stdout)["error"]["code"] == "login_expired"


def test_refreshed_values_are_edited_in_place() -> None:
    old = fioctl.OAuthLogin(access_token="a1", refresh_token="r1", client_id="c",
                            client_secret="s", created="2020-01-01T00:00:00Z", expires_in=60,
                            url="http://x/oauth")
    text = ("# top comment\nfactory: f   # mine\nclientcredentials:\n  access_token: a1\n"
            "  client_id: c\n  # a comment inside\n  client_secret: s\n"
            "  created: \"2020-01-01T00:00:00Z\"\n  expires_in: 60\n  refresh_token: r1\n"
            "  url: http://x/oauth\nserver:\n  url: http://api\n")
    new = old.refreshed({"access_token": "a 2:x", "refresh_token": "r2",
                         "token_type": "bearer", "expires_in": 3600})
    out = fioctl.render_refreshed(text, new, "test")
    assert unchanged_lines(text, out)
    assert "  access_token: \"a 2:x\"\n" in out and "  refresh_token: r2\n" in out
    assert "  token_type: bearer\n" in out  # missing before: added inside the block
    back = fioctl.parse_text(out, "test")
    assert back["clientcredentials"]["access_token"] == "a 2:x"
    assert back["server"] == {"url": "http://api"} and back["factory"] == "f"
    # a block in flow style cannot be edited in place: the mapping is dumped again
    flow = "clientcredentials: {access_token: a1, client_id: c}\nfactory: f\n"
    redumped = fioctl.parse_text(fioctl.render_refreshed(flow, new, "test"), "test")
    assert redumped["factory"] == "f" and redumped["clientcredentials"]["client_id"] == "c"
    assert redumped["clientcredentials"]["refresh_token"] == "r2"
