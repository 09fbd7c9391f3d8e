"""FactoryClient against a real sandbox factory on 127.0.0.1, over real HTTP."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fiovpn.adapters import fioctl
from fiovpn.adapters.factory import (
    Credentials,
    FactoryClient,
    FioctlLogin,
    build_factory_client,
    load_credentials,
    resolve_api_url,
    resolve_factory,
)
from fiovpn.adapters.factory_api import ConfigFile, current_file
from fiovpn.core.factory_files import VPN_HANDLER
from fiovpn.errors import (
    ApiError,
    ApiNotFound,
    ApiTemporaryError,
    AuthError,
    BadInput,
    BadResponse,
)
from fiovpn.sandbox.server import SandboxServer
from fiovpn.settings import ClientSettings, ServerSettings

TOKEN = "t0ken-for-tests"
SERVER_VALUE = ("endpoint=vpn.example.test:5555\nserver_address=10.42.42.1\n"
                "pubkey=zGUGd1W4qgrNx1dJvA4nE7nSBXrk9wqQOgEGLTyT2Uk=")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(token=TOKEN, devices=1200) as server:
        yield server


def control(sandbox: SandboxServer, method: str, name: str, body: Any = None) -> Any:
    r = httpx.request(method, f"{sandbox.url}/_sandbox/{name}", json=body,
                      headers={"OSF-TOKEN": TOKEN}, timeout=5)
    r.raise_for_status()
    return r.json()


def served(sandbox: SandboxServer) -> int:
    return int(control(sandbox, "GET", "requests")["requests"])


@pytest.fixture(autouse=True)
def _clear_faults(sandbox: SandboxServer) -> Iterator[None]:
    yield
    control(sandbox, "POST", "clear")


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_client(sandbox: SandboxServer, **options: Any) -> FactoryClient:
    options.setdefault("sleep", Sleeps())
    options.setdefault("timeout", 5.0)
    return FactoryClient(options.pop("factory", sandbox.factory_name),
                         options.pop("credentials", Credentials(TOKEN, "the test token")),
                         base_url=sandbox.url, **options)


def test_lists_every_device_across_pages(sandbox: SandboxServer) -> None:
    client = make_client(sandbox, page_limit=500)
    before = served(sandbox)
    devices = client.list_devices()
    assert len(devices) == 1200
    assert len({d.name for d in devices}) == 1200
    assert devices[0].name == "device-0001" and devices[-1].name == "device-1200"
    assert all(d.uuid and d.status == "OK" and d.last_seen for d in devices)
    assert served(sandbox) - before == 3  # pages of 500, 500, 200


def test_device_fields_and_server_side_filters(sandbox: SandboxServer) -> None:
    client = make_client(sandbox, page_limit=500)
    lab = client.list_devices(group="lab")  # generated: even devices are in group lab
    assert len(lab) == 600 and all(d.device_group == "lab" for d in lab)
    assert all(d.tag == "devel" and d.owner for d in lab)
    tagged = client.list_devices(tag="main", group="field")
    assert len(tagged) == 600 and {d.device_group for d in tagged} == {"field"}
    assert client.list_devices(group="no-such-group") == []
    one = client.get_device("device-0003")  # a single GET sends a `group` object
    assert "group" in one.raw and "device-group" not in one.raw
    assert (one.device_group, one.tag, one.is_prod, one.up_to_date) == ("field", "main",
                                                                        True, True)


def test_reads_and_patches_factory_config(sandbox: SandboxServer) -> None:
    client = make_client(sandbox)
    server_file = ConfigFile("wireguard-server", SERVER_VALUE, True, (VPN_HANDLER,))
    client.patch_factory_config("Enable VPN server", [server_file])
    client.patch_factory_config("Unrelated", [ConfigFile("other", "x=1")])
    history = client.factory_config()
    assert history[0].reason == "Unrelated" and history[1].reason == "Enable VPN server"
    assert current_file(history, "wireguard-server") == server_file  # kept by the merge
    assert current_file(history, "other") is not None
    assert history[0].created_at


def test_reads_and_patches_device_config(sandbox: SandboxServer) -> None:
    client = make_client(sandbox)
    before = current_file(client.device_config("device-0007"), "wireguard-client")
    assert before is not None and before.value.startswith("enabled=0\npubkey=")
    assert before.on_changed == ()  # a fresh device's own file has no handler
    pubkey = before.value.removeprefix("enabled=0\npubkey=")
    value = f"address=10.42.42.9\npubkey={pubkey}"
    client.patch_device_config("device-0007", "Set Wireguard configuration - enable",
                               [ConfigFile("wireguard-client", value, True, (VPN_HANDLER,))])
    after = client.device_config("device-0007")
    assert after[0].reason == "Set Wireguard configuration - enable"
    assert current_file(after, "wireguard-client") == ConfigFile(
        "wireguard-client", value, True, (VPN_HANDLER,))
    ips = {w.name: w for w in client.wireguard_ips()}
    assert str(ips["device-0007"].ip) == "10.42.42.9" and ips["device-0007"].enabled
    assert str(ips["device-0007"].pubkey) == pubkey
    assert client.get_device("device-0007").name == "device-0007"


def test_500_is_retried_then_raises_temporary_error(sandbox: SandboxServer) -> None:
    sleeps = Sleeps()
    client = make_client(sandbox, attempts=4, backoff=0.25, sleep=sleeps)
    control(sandbox, "POST", "fail", {"status": 500, "count": -1})
    before = served(sandbox)
    with pytest.raises(ApiTemporaryError, match="HTTP 500") as info:
        client.wireguard_ips()
    assert served(sandbox) - before == 4
    assert sleeps == [0.25, 0.5, 1.0]
    assert "4 attempts" in str(info.value)


def test_a_passing_outage_is_ridden_out(sandbox: SandboxServer) -> None:
    client = make_client(sandbox, attempts=4)
    control(sandbox, "POST", "fail", {"status": 503, "count": 2})
    before = served(sandbox)
    assert len(client.wireguard_ips()) >= 2
    assert served(sandbox) - before == 3


def test_timeouts_are_retried_then_raise_temporary_error(sandbox: SandboxServer) -> None:
    client = make_client(sandbox, attempts=2, timeout=0.2)
    control(sandbox, "POST", "slow", {"seconds": 3, "count": -1})
    before = served(sandbox)
    with pytest.raises(ApiTemporaryError, match="timed out"):
        client.factory_config()
    assert served(sandbox) - before == 2


def test_401_raises_auth_error_at_once_without_the_token(sandbox: SandboxServer) -> None:
    sleeps = Sleeps()
    client = make_client(sandbox, credentials=Credentials("wrong-secret", "$FIOVPN_API_TOKEN"),
                         sleep=sleeps)
    before = served(sandbox)
    with pytest.raises(AuthError) as info:
        client.list_devices()
    assert served(sandbox) - before == 1
    assert sleeps == []
    message = str(info.value)
    assert "$FIOVPN_API_TOKEN" in message and "401" in message
    assert "wrong-secret" not in message


def test_fioctl_oauth_token_is_sent_as_bearer(sandbox: SandboxServer) -> None:
    client = make_client(sandbox, credentials=Credentials(TOKEN, "fioctl", bearer=True))
    assert client.get_device("device-0001").name == "device-0001"


def test_404_names_the_factory_or_device(sandbox: SandboxServer) -> None:
    with pytest.raises(ApiNotFound, match="factory 'no-such-factory'"):
        make_client(sandbox, factory="no-such-factory").factory_config()
    with pytest.raises(ApiNotFound, match="device 'ghost'"):
        make_client(sandbox).device_config("ghost")


def test_429_honours_retry_after(sandbox: SandboxServer) -> None:
    sleeps = Sleeps()
    client = make_client(sandbox, attempts=4, backoff=0.01, sleep=sleeps)
    control(sandbox, "POST", "fail", {"status": 429, "count": 2, "retry_after": 2})
    before = served(sandbox)
    assert client.get_device("device-0002").name == "device-0002"
    assert sleeps == [2.0, 2.0]
    assert served(sandbox) - before == 3


def test_other_errors_carry_the_api_message_and_are_not_retried(
        sandbox: SandboxServer) -> None:
    client = make_client(sandbox)
    control(sandbox, "POST", "fail", {"status": 400, "count": 1,
                                      "message": "files[0] is not allowed"})
    before = served(sandbox)
    with pytest.raises(ApiError, match="HTTP 400: files\\[0\\] is not allowed") as info:
        client.patch_device_config("device-0001", "r", [ConfigFile("x", "y")])
    assert type(info.value) is ApiError
    assert served(sandbox) - before == 1


def test_connection_refused_is_temporary() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = Sleeps()
    client = FactoryClient("f", Credentials("t", "test"), base_url=f"http://127.0.0.1:{port}",
                           attempts=3, sleep=sleeps)
    with pytest.raises(ApiTemporaryError, match="connection failed"):
        client.wireguard_ips()
    assert len(sleeps) == 2


def test_bad_names_are_refused_before_any_request(sandbox: SandboxServer) -> None:
    before = served(sandbox)
    with pytest.raises(BadInput):
        make_client(sandbox).device_config("a/../b")
    with pytest.raises(BadInput):
        make_client(sandbox, factory="f;rm -rf")
    assert served(sandbox) == before


def _mock(handler: Any) -> FactoryClient:
    return FactoryClient("f", Credentials("t", "test"), base_url="https://api.test",
                         transport=httpx.MockTransport(handler), sleep=Sleeps())


@pytest.mark.parametrize("body", [b"<html>oops</html>", b'{"config": "nope"}',
                                  b'{"config": [{"files": [{"value": "no name"}]}]}'])
def test_malformed_answers_raise_bad_response(body: bytes) -> None:
    client = _mock(lambda _req: httpx.Response(200, content=body))
    with pytest.raises(BadResponse):
        client.factory_config()


def test_next_pointing_elsewhere_is_not_followed() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"devices": [{"name": "a"}], "total": 2,
                                         "next": "https://evil.test/ota/devices/?page=2"})

    with pytest.raises(BadResponse, match="another server"):
        _mock(handler).list_devices()
    assert len(seen) == 1


def test_relative_next_is_followed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("page") == "1":
            assert request.url.params["factory"] == "f"
            return httpx.Response(200, json={"devices": [{"name": "a"}], "total": 2,
                                             "next": "/ota/devices/?factory=f&page=2"})
        return httpx.Response(200, json={"devices": [{"name": "b"}], "total": 2, "next": None})

    assert [d.name for d in _mock(handler).list_devices()] == ["a", "b"]


def test_a_bad_row_in_wireguard_ips_does_not_hide_the_others() -> None:
    rows = [{"name": "good", "ip": "10.42.42.2", "enabled": True,
             "pubkey": "zGUGd1W4qgrNx1dJvA4nE7nSBXrk9wqQOgEGLTyT2Uk="},
            {"name": "bad", "ip": "10.42.42.999", "enabled": True, "pubkey": "short"}]
    ips = _mock(lambda _req: httpx.Response(200, json=rows)).wireguard_ips()
    assert str(ips[0].ip) == "10.42.42.2" and ips[0].pubkey is not None
    assert ips[1].name == "bad" and ips[1].ip is None and ips[1].pubkey is None


# -- credentials and factory ----------------------------------------------------------------

FIOCTL_YAML = """\
clientcredentials:
    access_token: oauth-access
    client_id: abc
    refresh_token: "refresh"
factory: fioctl-factory
token: ''
server:
    url: http://fioctl-server.test:8000
"""


def test_reads_fioctl_config_as_fioctl(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.yaml"
    path.write_text(FIOCTL_YAML)
    cfg = fioctl.load({"HOME": str(tmp_path), "FIOCTL_CONFIG": str(path)})
    assert cfg.path == path and cfg.exists
    assert cfg.factory == "fioctl-factory" and cfg.token is None
    assert cfg.server_url == "http://fioctl-server.test:8000"
    assert cfg.login is not None and cfg.login.access_token == "oauth-access"
    assert cfg.login.url == fioctl.OAUTH_URL  # fioctl's default token endpoint base
    over = fioctl.load({"HOME": str(tmp_path), "FIOCTL_CONFIG": str(path),
                        "FIOCTL_TOKEN": "t-env", "FIOCTL_FACTORY": "f-env"})
    assert (over.token, over.token_source) == ("t-env", "$FIOCTL_TOKEN")
    assert (over.factory, over.factory_source) == ("f-env", "$FIOCTL_FACTORY")
    assert "t-env" not in repr(over)
    missing = fioctl.load({"HOME": str(tmp_path)})
    assert missing.path == tmp_path / ".config" / "fioctl.yaml" and not missing.exists
    path.write_text("factory: [unclosed\n")
    with pytest.raises(BadInput, match="not valid YAML"):
        fioctl.load({"FIOCTL_CONFIG": str(path)})


def test_token_sources_in_order(tmp_path: Path) -> None:
    (tmp_path / ".config").mkdir()
    (tmp_path / ".config" / "fioctl.yaml").write_text(FIOCTL_YAML)
    env = {"HOME": str(tmp_path)}
    login = load_credentials(None, env)
    assert isinstance(login, FioctlLogin) and "fioctl.yaml" in login.source
    assert login.login.access_token == "oauth-access"
    assert login.headers() == {"Authorization": "Bearer b2F1dGgtYWNjZXNz"}  # base64, no expiry
    creds = load_credentials(None, {**env, "FIOCTL_TOKEN": "from-fioctl-env"})
    assert isinstance(creds, Credentials) and creds.source == "$FIOCTL_TOKEN"
    (tmp_path / ".config" / "fioctl.yaml").write_text("factory: f\ntoken: plain\n")
    creds = load_credentials(None, env)
    assert isinstance(creds, Credentials)
    assert not creds.bearer and creds.headers() == {"OSF-TOKEN": "plain"}
    creds = load_credentials(None, {**env, "FIOCTL_TOKEN": "fioctl-env"})
    assert creds.headers() == {"OSF-TOKEN": "fioctl-env"}  # FIOCTL_TOKEN beats the file
    creds = load_credentials(None, {**env, "FIOVPN_API_TOKEN": "from-env",
                                    "FIOCTL_TOKEN": "fioctl-env"})
    assert isinstance(creds, Credentials)
    assert creds.token == "from-env" and creds.source == "$FIOVPN_API_TOKEN"
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    creds = load_credentials(token_file, {**env, "FIOVPN_API_TOKEN": "from-env"})
    assert isinstance(creds, Credentials)
    assert creds.token == "from-file" and str(token_file) in creds.source
    assert "from-file" not in repr(creds)


def test_missing_token_says_where_to_put_one(tmp_path: Path) -> None:
    with pytest.raises(AuthError, match="no FoundriesFactory API token") as info:
        load_credentials(None, {"HOME": str(tmp_path)})
    assert "--api-token-file" in str(info.value)
    with pytest.raises(BadInput, match="does not exist"):
        load_credentials(tmp_path / "nope", {"HOME": str(tmp_path)})
    pasted = tmp_path / "pasted"
    pasted.write_text("two words\n")
    with pytest.raises(BadInput, match="characters a token cannot have") as bad:
        load_credentials(pasted, {"HOME": str(tmp_path)})
    assert "two words" not in str(bad.value)


def test_factory_from_settings_env_or_fioctl(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    with pytest.raises(BadInput, match="no factory"):
        resolve_factory(None, env)
    (tmp_path / ".config").mkdir()
    (tmp_path / ".config" / "fioctl.yaml").write_text("factory: from-fioctl\n")
    assert resolve_factory(None, env) == "from-fioctl"
    assert resolve_factory(None, {**env, "FIOCTL_FACTORY": "fioctl-env"}) == "fioctl-env"
    assert resolve_factory(None, {**env, "FIOVPN_FACTORY": "from-env",
                                  "FIOCTL_FACTORY": "fioctl-env"}) == "from-env"
    assert resolve_factory("from-flag", env) == "from-flag"


def test_api_url_from_settings_else_fioctl_server_url(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    assert resolve_api_url(None, env) == "https://api.foundries.io"
    (tmp_path / ".config").mkdir()
    (tmp_path / ".config" / "fioctl.yaml").write_text("server:\n  url: http://fioctl.test\n")
    assert resolve_api_url(None, env) == "http://fioctl.test"
    assert resolve_api_url("http://flag.test", env) == "http://flag.test"


@pytest.mark.parametrize("settings_cls", [ServerSettings, ClientSettings])
def test_build_factory_client_from_settings(sandbox: SandboxServer, tmp_path: Path,
                                            settings_cls: type[Any]) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    settings = settings_cls(factory=sandbox.factory_name, api_url=sandbox.url,
                            api_token_file=token_file)
    with build_factory_client(settings, env={"HOME": str(tmp_path)}) as client:
        assert client.get_device("device-0003").name == "device-0003"
