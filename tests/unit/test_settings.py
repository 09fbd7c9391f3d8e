"""Settings: flags > env > TOML > defaults, validated once, bad values refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from fiovpn.errors import BadInput
from fiovpn.settings import ClientSettings, ServerSettings, load_client, load_server


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_from_an_empty_file(tmp_path: Path) -> None:
    s = load_server({}, config=write(tmp_path / "server.toml", ""), env={})
    assert isinstance(s, ServerSettings)
    assert s.port == 5555 and s.interface == "factory" and s.subnet == "10.42.42.0/24"


def test_precedence_flags_over_env_over_toml(tmp_path: Path) -> None:
    toml = write(tmp_path / "server.toml",
                 'factory = "from-toml"\napi-url = "http://toml"\ninterval = 30\n'
                 'clients-file = "/tmp/x/clients.conf"\nallow-device-to-device = true\n')
    env = {"FIOVPN_FACTORY": "from-env", "FIOVPN_API_URL": "http://env"}
    s = load_server({"factory": "from-flag", "api_url": None}, config=toml, env=env)
    assert s.factory == "from-flag"          # flag beats env and TOML
    assert s.api_url == "http://env"         # env beats TOML
    assert s.interval == 30.0                # TOML beats default
    assert s.clients_file == Path("/tmp/x/clients.conf")
    assert s.allow_device_to_device is True


def test_config_file_from_env_and_server_table(tmp_path: Path) -> None:
    toml = write(tmp_path / "s.toml", '[server]\nport = 6000\n')
    s = load_server({}, env={"FIOVPN_SERVER_CONFIG": str(toml)})
    assert s.port == 6000


@pytest.mark.parametrize("body,match", [
    ("port = true", "invalid value True for port"),
    ("port = 5555.7", "invalid value 5555.7 for port"),
    ("port = 70000", "invalid port 70000"),
    ("clients-file = 3", "invalid value 3 for clients-file"),
    ("interface = [\"a\"]", "invalid value"),
    ("interface = \"way-too-long-name\"", "invalid interface name"),
    ("nft-table = \"x;y\"", "invalid nft table name"),
    ("subnet = \"10.42.42.0/33\"", "invalid subnet"),
    ("colour = \"blue\"", "unknown setting 'colour'"),
    ("port = ", "not valid TOML"),
])
def test_bad_server_settings_are_one_clear_error(tmp_path: Path, body: str, match: str) -> None:
    toml = write(tmp_path / "server.toml", body + "\n")
    with pytest.raises(BadInput, match=match):
        load_server({}, config=toml, env={})


def test_a_named_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        load_server({}, config=tmp_path / "missing.toml", env={})


def test_client_settings_from_toml_env_and_flags(tmp_path: Path) -> None:
    toml = write(tmp_path / "config.toml",
                 'identity-file = "~/.ssh/id_vpn"\n'
                 'ssh-options = ["GlobalKnownHostsFile=/dev/null"]\n'
                 'user = "toml-user"\n')
    env = {"FIOVPN_CLIENT_SETTINGS": str(toml), "FIOVPN_DEVICE_USER": "env-user",
           "HOME": str(tmp_path)}
    s = load_client({"server_ssh": "admin@10.42.42.1:5025"}, env=env)
    assert isinstance(s, ClientSettings)
    assert s.user == "env-user"
    assert s.identity_file is not None and s.identity_file.name == "id_vpn"
    assert s.ssh_options == ("GlobalKnownHostsFile=/dev/null",)
    assert s.server_ssh == "admin@10.42.42.1:5025"
    with pytest.raises(BadInput, match="invalid value"):
        write(toml, "ssh-options = [1, 2]\n")
        load_client({}, env=env)
