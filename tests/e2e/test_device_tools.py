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
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fiovpn.lab import DeviceSpec, Engineer, Lab, wait_for

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


def on_server(lab: Lab, ip: str) -> bool:
    return any(f"{ip}/32" in p.allowed_ips for p in lab.server.peers().values())


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
            fleet.fiovpn_path, "ssh", "--timeout", "2", "device1", "--", "sleep", "120"]
    # Output to files, not pipes: the shared SSH connection keeps the session's stdio
    # until the remote command ends (as OpenSSH's own multiplexing does).
    err = tmp_path / "stderr"
    start = time.monotonic()
    with err.open("wb") as fh:
        code = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=fh, timeout=60, check=False).returncode
    assert time.monotonic() - start < 60, "stopped at --timeout, not when the command ended"
    assert code == 1 and "did not finish within 2s" in err.read_text()


def test_ssh_by_name_again_needs_no_factory_call(fleet: Lab) -> None:
    """A name the factory listed a moment ago is taken from the device cache: with the
    factory API failing, `fiovpn ssh device1` still gets through; without the cache
    it cannot know the name's IP and says why."""
    eng = fleet.engineers[0]
    cache = eng.home / ".cache" / "fiovpn" / "devices.json"
    first = fiovpn_bytes(eng, "ssh", "device1", "--", "true")
    assert first.returncode == 0, first.stderr
    assert cache.stat().st_mode & 0o777 == 0o600
    factory = fleet.factory
    assert factory is not None
    factory.fail(status=500, count=-1)
    try:
        again = fiovpn_bytes(eng, "ssh", "device1", "--", "echo", "cached")
        assert (again.returncode, again.stdout) == (0, b"cached\n"), again.stderr
        cache.unlink()
        cold = fiovpn_bytes(eng, "ssh", "device1", "--", "true")
        assert cold.returncode != 0
        assert b"could not be asked" in cold.stderr, cold.stderr
    finally:
        factory.clear()


def test_ssh_bad_input_runs_nothing(fleet: Lab) -> None:
    eng = fleet.engineers[0]
    # device4 exists but is not on the VPN (the factory lists no VPN address for it)
    for args, codes in ((["no-such-device"], {"unknown_device"}),
                        (["device4"], {"vpn_disabled", "unknown_device"}),
                        (["192.168.1.10"], {"not_vpn_ip"})):
        result = fiovpn_bytes(eng, "ssh", "--json", *args, "--", "true")
        assert result.returncode == 2, (args, result.stderr)
        assert json.loads(result.stdout)["error"]["code"] in codes



# --- ssh-config: plain OpenSSH, scp and rsync by device name -----------------------------


def test_ssh_config_serves_plain_ssh_scp_and_rsync(fleet: Lab) -> None:
    eng = fleet.engineers[0]
    frag = eng.home / "fragment"
    data = eng.fiovpn_json("ssh-config", "--output", str(frag))
    assert [h["name"] for h in data["hosts"]] == ["device1", "device2", "device3"]
    assert data["include"] == f"Include {frag}" and data["path"] == str(frag)
    assert frag.stat().st_mode & 0o777 == 0o600
    assert not (eng.home / ".ssh" / "config").exists(), "never edits ~/.ssh/config"
    assert eng.run(["ssh", "-F", str(frag), "device1", "true"], check=False).returncode == 0
    hello = eng.home / "hello.txt"
    hello.write_text("hello over scp\n")
    to2 = device_path(fleet, "device2") / "by-scp.txt"
    eng.run(["scp", "-F", str(frag), str(hello), f"device2:{to2}"])
    assert to2.read_text() == "hello over scp\n"
    to3 = device_path(fleet, "device3") / "by-rsync.txt"
    eng.run(["rsync", "-a", "-e", f"ssh -F {frag}", str(hello), f"device3:{to3}"])
    assert to3.read_text() == "hello over scp\n"


def test_ssh_config_takes_a_device_enabled_later(fleet: Lab) -> None:
    eng = fleet.engineers[0]
    frag = eng.home / "fragment-later"
    assert "device4" not in [h["name"] for h in
                             eng.fiovpn_json("ssh-config", "--output", str(frag))["hosts"]]
    eng.fiovpn("devices", "enable-vpn", "device4")
    device4 = fleet.device("device4")
    assert device4.apply_factory_config()
    wait_for(lambda: on_server(fleet, str(device4.vpn_ip)), timeout=30,
             what="device4's peer on the server")
    again = eng.fiovpn_json("ssh-config", "--output", str(frag))
    assert "device4" in [h["name"] for h in again["hosts"]] and again["changed"] is True
    wait_for(lambda: eng.run(["ssh", "-F", str(frag), "device4", "true"],
                             check=False).returncode == 0,
             timeout=30, what="plain ssh to device4 by name")


# --- cp and forward ---------------------------------------------------------------------


def test_cp_both_ways_and_a_directory(fleet: Lab) -> None:
    eng = fleet.engineers[0]
    local = eng.home / "cp"
    (local / "tree" / "sub").mkdir(parents=True, exist_ok=True)
    (local / "one.bin").write_bytes(os.urandom(4096))
    (local / "tree" / "sub" / "deep.txt").write_text("deep\n")
    remote = device_path(fleet, "device1") / "cp"
    remote.mkdir(exist_ok=True)
    up = eng.fiovpn_json("cp", str(local / "one.bin"), f"device1:{remote}/one.bin")
    assert up["direction"] == "upload" and up["vpn_ip"] == str(fleet.device("device1").vpn_ip)
    assert (remote / "one.bin").read_bytes() == (local / "one.bin").read_bytes()
    eng.fiovpn("cp", f"device1:{remote}/one.bin", str(local / "back.bin"))
    assert (local / "back.bin").read_bytes() == (local / "one.bin").read_bytes()
    eng.fiovpn("cp", "-r", str(local / "tree"), f"device1:{remote}/")
    assert (remote / "tree" / "sub" / "deep.txt").read_text() == "deep\n"
    eng.fiovpn("cp", "-r", f"device1:{remote}/tree", str(local / "tree-back"))
    assert (local / "tree-back" / "sub" / "deep.txt").read_text() == "deep\n"


def test_cp_and_forward_bad_input_run_nothing(fleet: Lab) -> None:
    eng = fleet.engineers[0]
    for args in (["cp", "a", "b"], ["cp", "nosuch:/x", "."], ["cp", "device1:/a", "device2:/b"],
                 ["forward", "device1", "80:127.0.0.1"], ["forward", "device1", "0:h:80"],
                 ["forward", "nosuch", "8080:127.0.0.1:80"]):
        result = eng.fiovpn(*args, "--json", check=False)
        assert result.returncode == 2, (args, result.stderr)
        assert "error" in json.loads(result.stdout)


def test_forward_reaches_a_service_on_the_devices_localhost(fleet: Lab) -> None:
    eng = fleet.engineers[0]
    device = fleet.device("device2")
    site = device_path(fleet, "device2") / "site"
    site.mkdir(exist_ok=True)
    (site / "index.txt").write_text("served on the device's 127.0.0.1\n")
    server = device.spawn([sys.executable, "-m", "http.server", "18081", "--bind",
                           "127.0.0.1", "--directory", str(site)], name="http.server")
    fwd = None
    try:
        wait_for(lambda: device.listening(18081), timeout=20, what="the device's service")
        assert not eng.listening(18082)
        fwd = eng.spawn([fleet.fiovpn_path, "forward", "device2", "18082:127.0.0.1:18081"],
                        name="fiovpn forward", log=eng.home / "forward.log")
        wait_for(lambda: eng.listening(18082), timeout=30,
                 what="fiovpn forward listening on 127.0.0.1:18082")
        reply = eng.http("GET", "http://127.0.0.1:18082/index.txt")
        assert reply.status == 200 and reply.body == "served on the device's 127.0.0.1\n"
        assert fwd.running(), "runs until interrupted"
    finally:
        if fwd is not None:
            fwd.stop()
        server.stop()
    assert not eng.listening(18082), "the forward ended with fiovpn"


# --- exec over a group, devices by group/tag, enable-vpn --wait ---------------------------


def test_exec_over_a_group_with_one_device_stopped(fleet: Lab) -> None:
    eng = fleet.engineers[0]
    stopped = fleet.device("device3")
    stopped.remove_vpn()  # its tunnel is gone: nothing answers at its VPN address
    try:
        result = eng.fiovpn("exec", "--group", "lab", "--timeout", "8", "--json", "--",
                            "uname", "-n", check=False, timeout=120)
    finally:
        assert stopped.apply_factory_config()
    assert result.returncode == 1, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert sorted(rows) == ["device1", "device2", "device3", "device4"]
    for name in ("device1", "device2", "device4"):
        r = rows[name]
        assert (r["exit_code"], r["stdout"], r["error"]) == (0, f"{name}\n", None), r
        assert r["vpn_ip"] == str(fleet.device(name).vpn_ip)
        assert r["duration_s"] < 8, "the stopped device held nobody"
    dead = rows["device3"]
    assert dead["exit_code"] is None and dead["error"], dead
    # by names, outputs kept apart, exit 0 when all exited 0
    ok = eng.fiovpn("exec", "device1", "device2", "--", "sh", "-c", "echo $0 >&2; hostname",
                    "x y", timeout=120)
    assert ok.returncode == 0
    assert ok.stdout.index("device1 (") < ok.stdout.index("\ndevice1\n") < \
        ok.stdout.index("device2 (") < ok.stdout.index("\ndevice2\n")
    assert ok.stderr.count("x y") == 2


def test_exec_bad_input_runs_nothing(fleet: Lab) -> None:
    eng = fleet.engineers[0]
    for args in (["nosuch", "--", "true"], ["--group", "nosuch", "--", "true"],
                 ["device1"], ["device1", "--parallel", "0", "--", "true"],
                 ["--all", "device1", "--", "true"]):
        result = eng.fiovpn("exec", "--json", *args, check=False, timeout=60)
        assert result.returncode == 2, (args, result.stdout, result.stderr)


def test_devices_list_by_group_tag_and_online(fleet: Lab) -> None:
    assert fleet.factory is not None
    eng = fleet.engineers[0]
    for name in ("device1", "device2"):
        fleet.factory.set_device(name, group="east", tag="beta" if name == "device2" else "")
    east = eng.fiovpn_json("devices", "list", "--group", "east")
    assert [d["name"] for d in east] == ["device1", "device2"]
    assert all(d["group"] == "east" and "online" in d and "last_seen" in d for d in east)
    beta = eng.fiovpn_json("devices", "list", "--tag", "beta")
    assert [(d["name"], d["tag"]) for d in beta] == [("device2", "beta")]
    fleet.device("device1").apply_factory_config()  # a check-in: seen just now
    online = [d["name"] for d in eng.fiovpn_json("devices", "list", "--online")]
    assert "device1" in online
    bad = eng.fiovpn("devices", "list", "--group", "a;b", "--json", check=False)
    assert bad.returncode == 2


def test_enable_vpn_group_wait_reports_when_each_device_answers(fleet: Lab) -> None:
    eng = fleet.engineers[0]
    group = [fleet.device("device1"), fleet.device("device2")]  # group east (above)
    for d in group:
        eng.fiovpn("devices", "disable-vpn", d.device_name)
        assert not d.apply_factory_config()
    argv = [*eng.enter, "env", "-i", *(f"{k}={v}" for k, v in sorted(eng.env.items())),
            fleet.fiovpn_path, "devices", "enable-vpn", "--group", "east", "--wait",
            "--timeout", "60", "--json"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL) as proc:
        try:
            # the devices check in a moment later, as fioconfig would
            time.sleep(1.0)
            for d in group:
                wait_for(d.apply_factory_config, timeout=30, what=f"{d.name}'s VPN config")
            out, err = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["device1", "device2"]
    for r, d in zip(rows, group, strict=True):
        assert r["vpn_ip"] == str(d.vpn_ip) and r["changed"] is True
        assert r["reachable_after_s"] is not None and 0.5 < r["reachable_after_s"] < 60


# --- MCP: exec_on_devices, copy tools, progress, over stdio with the SDK client -------------


def test_mcp_exec_and_copy_tools_with_progress(fleet: Lab) -> None:
    import shutil

    import anyio
    from mcp import Client, StdioServerParameters

    eng = fleet.engineers[0]
    enter = list(eng.enter)
    params = StdioServerParameters(
        command=shutil.which(enter[0]) or enter[0],
        args=[*enter[1:], "env", "-i", *(f"{k}={v}" for k, v in sorted(eng.env.items())),
              fleet.fiovpn_path, "mcp"])
    local = eng.home / "mcp-up.txt"
    local.write_text("via mcp\n")
    remote = device_path(fleet, "device2") / "mcp-up.txt"
    seen: list[tuple[float, float | None, str | None]] = []

    async def progress(p: float, total: float | None, message: str | None) -> None:
        seen.append((p, total, message))

    async def go() -> tuple[Any, Any, Any]:
        with anyio.fail_after(240):
            async with Client(params, read_timeout_seconds=120) as client:
                ran = await client.call_tool(
                    "exec_on_devices", {"command": "hostname; head -c 300 /dev/urandom >&2",
                                        "devices": ["device1", "device2", "device4"]},
                    progress_callback=progress)
                up = await client.call_tool("copy_to_device", {
                    "device": "device2", "local_path": str(local),
                    "remote_path": str(remote)})
                down = await client.call_tool("copy_from_device", {
                    "device": "device2", "remote_path": str(remote),
                    "local_path": str(eng.home / "mcp-down.txt")})
                return ran, up, down

    ran, up, down = anyio.run(go)
    for r in (ran, up, down):
        assert not r.is_error, [getattr(c, "text", c) for c in r.content]
    data = ran.structured_content
    assert data is not None and data["ok"] == 3 and data["failed"] == 0
    assert {r["name"]: r["stdout"] for r in data["results"]} == {
        "device1": "device1\n", "device2": "device2\n", "device4": "device4\n"}
    assert all(r["stderr_escaped"] and r["stderr_bytes"] == 300 for r in data["results"])
    assert [p for p, _t, _m in seen][-1] == 3 and all(t == 3 for _p, t, _m in seen)
    assert remote.read_text() == "via mcp\n"
    assert (eng.home / "mcp-down.txt").read_text() == "via mcp\n"
