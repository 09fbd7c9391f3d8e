"""Engineers reach devices with the tools they already use (SPEC section 12), for real in
the namespace lab: `fiovpn ssh` as OpenSSH behaves (stdin, bytes streamed, exit 255),
the ssh-config fragment for plain ssh/scp/rsync, `fiovpn cp`, `fiovpn forward`, and
`fiovpn exec` over several devices. One lab for the whole module; every command that
opens a connection runs inside a lab namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fiovpn.lab import DeviceSpec, Engineer, Lab

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fleet(make_lab: Callable[..., Lab]) -> Lab:
    """The VPN running with device1..3 on it and device4 not yet; engineer1 (admin)
    connected."""
    lab = make_lab(devices=[DeviceSpec("device1"), DeviceSpec("device2"),
                            DeviceSpec("device3"), DeviceSpec("device4", vpn=False)],
                   engineers=1, admins=1, server_settings={"interval": 2})
    lab.start_vpn()
    lab.join(lab.engineers[0])
    return lab


def fiovpn_bytes(eng: Engineer, *args: str, input: bytes | None = None,
                 timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
    """``fiovpn ARGS`` in the engineer's namespace, stdin and output as bytes."""
    argv = [*eng.enter, "env", "-i", *(f"{k}={v}" for k, v in sorted(eng.env.items())),
            eng.lab.fiovpn_path, *args]
    return subprocess.run(argv, input=input, capture_output=True, timeout=timeout,
                          check=False, stdin=None if input is not None else subprocess.DEVNULL)


def device_path(lab: Lab, name: str) -> Path:
    """A scratch directory a device sees at the same path (its home in the lab)."""
    path = lab.device(name).home / "scratch"
    path.mkdir(exist_ok=True)
    return path


# --- fiovpn ssh as OpenSSH ----------------------------------------------------------------


def test_ssh_passes_stdin_to_the_remote_command(fleet: Lab) -> None:
    eng = fleet.engineers[0]
    result = fiovpn_bytes(eng, "ssh", "device1", "--", "cat", input=b"data\n")
    assert (result.returncode, result.stdout) == (0, b"data\n"), result.stderr


def test_ssh_binary_output_and_input_arrive_byte_identical(fleet: Lab) -> None:
    eng = fleet.engineers[0]
    blob = os.urandom(1 << 20)
    src = device_path(fleet, "device1") / "blob.bin"
    src.write_bytes(blob)
    out = fiovpn_bytes(eng, "ssh", "device1", "--", "cat", str(src))
    assert out.returncode == 0, out.stderr
    assert out.stdout == blob, f"{len(out.stdout)} bytes came back, not the 1 MiB sent"
    dst = src.with_name("uploaded.bin")
    up = fiovpn_bytes(eng, "ssh", "device1", "--", "sh", "-c", 'cat > "$0"', str(dst),
                      input=blob)
    assert up.returncode == 0, up.stderr
    assert dst.read_bytes() == blob
    # Random bytes (issue 9 item 2): no traceback, and --json escapes and says so.
    raw = fiovpn_bytes(eng, "ssh", "device1", "--", "head", "-c", "1000", "/dev/urandom")
    assert raw.returncode == 0 and len(raw.stdout) == 1000 and b"Traceback" not in raw.stderr
    data = json.loads(fiovpn_bytes(eng, "ssh", "--json", "device1", "--", "head", "-c",
                                   "1000", "/dev/urandom").stdout)
    assert data["exit_code"] == 0 and data["stdout_escaped"] is True


def test_ssh_remote_exit_255_is_fiovpns_exit_code(fleet: Lab) -> None:
    eng = fleet.engineers[0]
    result = fiovpn_bytes(eng, "ssh", "device1", "--", "sh", "-c", "echo bye >&2; exit 255")
    assert result.returncode == 255
    assert result.stderr == b"bye\n", "the remote stderr, and nothing of fiovpn's"


def test_ssh_streams_output_before_the_command_ends(fleet: Lab) -> None:
    eng = fleet.engineers[0]
    argv = [*eng.enter, "env", "-i", *(f"{k}={v}" for k, v in sorted(eng.env.items())),
            fleet.fiovpn_path, "ssh", "device1", "--", "sh", "-c",
            "for i in 1 2 3; do echo line$i; sleep 1; done"]
    start = time.monotonic()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        first_at = time.monotonic() - start
        rest = proc.stdout.read()
        proc.wait(timeout=30)
    total = time.monotonic() - start
    assert first == b"line1\n" and rest == b"line2\nline3\n"
    assert proc.returncode == 0
    assert first_at < total - 1.5, f"first line after {first_at:.1f}s of {total:.1f}s"


def test_ssh_timeout_stops_waiting(fleet: Lab, tmp_path: Path) -> None:
    eng = fleet.engineers[0]
    argv = [*eng.enter, "env", "-i", *(f"{k}={v}" for k, v in sorted(eng.env.items())),
            fleet.fiovpn_path, "ssh", "--timeout", "2", "device1", "--", "sleep", "30"]
    # Output to files, not pipes: the shared SSH connection keeps the session's stdio
    # until the remote command ends (as OpenSSH's own multiplexing does).
    err = tmp_path / "stderr"
    start = time.monotonic()
    with err.open("wb") as fh:
        code = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=fh, timeout=60, check=False).returncode
    assert time.monotonic() - start < 15
    assert code == 1 and "did not finish within 2s" in err.read_text()


def test_ssh_bad_input_runs_nothing(fleet: Lab) -> None:
    eng = fleet.engineers[0]
    for args, code in ((["no-such-device"], "unknown_device"),
                       (["device4"], "vpn_disabled"),
                       (["192.168.1.10"], "not_vpn_ip")):
        result = fiovpn_bytes(eng, "ssh", "--json", *args, "--", "true")
        assert result.returncode == 2, (args, result.stderr)
        assert json.loads(result.stdout)["error"]["code"] == code

