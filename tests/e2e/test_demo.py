"""`fiovpn demo` for real, as a user runs it: every step verified, the expected
peers live on the server, the topology picture written, nothing left behind
(by the demo itself, or by `fiovpn lab down` after `--keep`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fiovpn.lab import leftovers

pytestmark = pytest.mark.e2e

CLIENTS = {"admin", "eng2"}
DEVICES = {"device1", "device2", "device3"}
STEPS = [
    "build the lab",
    "server: publish in the factory, start the daemon",
    "first admin: bootstrap on the server",
    "engineer: onboarding through the admin over SSH",
    "devices: enable VPN",
    "device-to-device",
    "ssh to a device by name",
    "status and topology",
    "tear down the lab",
]


def fiovpn(*args: str, records: Path, cwd: Path,
           timeout: float = 300) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "fiovpn"
    env = {**os.environ, "FIOVPN_LAB_DIR": str(records), "COLUMNS": "160"}
    return subprocess.run([str(exe), *args], capture_output=True, text=True, check=False,
                          timeout=timeout, env=env, cwd=cwd)


def readme_demo_sample() -> list[str]:
    """The sample output of `fiovpn demo` in README.md (the block after "--json prints")."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    after = readme[readme.index('prints `{"ok","steps","peers","topology"}`'):]
    block = after[after.index("```\n") + 4:]
    return block[:block.index("```")].strip().splitlines()


def runtime_dirs(records: Path, cwd: Path) -> list[Path]:
    """fiovpn's per-namespace SSH control-socket dirs of a kept lab's namespaces."""
    from fiovpn.adapters.ssh import netns_runtime_dirs

    status = json.loads(fiovpn("lab", "status", "--json", records=records, cwd=cwd).stdout)
    names = {r["ns"] for lab in status for r in lab["roles"].values()}
    return [d for ns in sorted(names) if Path("/run/netns", ns).exists()
            for d in netns_runtime_dirs(Path("/run/netns", ns).stat().st_ino)]


def netns_names() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                          check=True).stdout


def test_demo_json_every_step_verified_and_nothing_left(tmp_path: Path) -> None:
    out = tmp_path / "out"
    records = tmp_path / "records"
    proc = fiovpn("demo", "--json", "--output-dir", str(out), records=records, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    assert data["ok"] is True
    assert [s["name"] for s in data["steps"]] == STEPS
    # the README shows what the demo really prints: its step lines and the verdict
    sample = readme_demo_sample()
    assert [line for line in sample if line.startswith("✓")] and all(
        line.startswith(f"✓ {name} ") for line, name in zip(
            [ln for ln in sample if ln.startswith("✓")], STEPS, strict=True)), sample
    assert sample[-1].startswith(f"All {len(STEPS)} steps verified in ")
    assert all(s["ok"] and s["seconds"] >= 0 for s in data["steps"]), data["steps"]
    # the flows ran as fiovpn commands inside the roles' namespaces
    commands = [c["command"] for s in data["steps"] for c in s["commands"]]
    for expected in ("engineer1$ fiovpn keys generate", "engineer2$ fiovpn check-registered",
                     "engineer1$ fiovpn register --public-key", "engineer2$ fiovpn verify",
                     "engineer1$ fiovpn devices enable-vpn device1",
                     "engineer1$ fiovpn devices enable-d2d device2",
                     "engineer2$ fiovpn ssh device3 -- uname -a"):
        assert any(c.startswith(expected) for c in commands), (expected, commands)

    peers = data["peers"]
    assert {p["name"] for p in peers if p["kind"] == "client"} == CLIENTS
    assert {p["name"] for p in peers if p["kind"] == "device"} == DEVICES
    by_name = {p["name"]: p for p in peers}
    assert by_name["admin"]["ip"] == "10.42.42.200"
    assert by_name["eng2"]["ip"] == "10.42.42.201"
    assert {by_name[d]["ip"] for d in DEVICES} == {"10.42.42.2", "10.42.42.3", "10.42.42.4"}
    for p in peers:  # every peer had a live session, with traffic both ways
        assert p["handshake_age_s"] is not None and p["handshake_age_s"] < 180, p
        assert p["rx"] > 0 and p["tx"] > 0, p

    svg_path = Path(data["topology"])
    assert svg_path.parent == out.resolve() and svg_path.exists()
    root = ET.parse(svg_path).getroot()  # noqa: S314 - the demo wrote it
    words = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert words >= CLIENTS | DEVICES
    assert any((w or "").startswith("10.42.42.1  ·  ") for w in words)  # the server

    prefix = data["lab"]["prefix"]
    assert prefix and data["lab"]["kept"] is False
    assert leftovers(prefix) == []
    assert not list(records.glob("*.json"))


def test_demo_keep_then_lab_down_leaves_nothing(tmp_path: Path) -> None:
    records = tmp_path / "records"
    proc = fiovpn("demo", "--keep", "--output-dir", str(tmp_path), records=records,
                  cwd=tmp_path)
    status = fiovpn("lab", "status", "--json", records=records, cwd=tmp_path)
    labs = json.loads(status.stdout or "[]")
    prefix = labs[0]["prefix"] if labs else None
    try:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        # the human ending: the peer table, the picture, the verdict, how to go on
        for text in ("admin", "eng2", "device3", "10.42.42.201", "fiovpn-demo-topology.svg",
                     "All 8 steps verified", "fiovpn lab exec", "fiovpn lab down"):
            assert text in proc.stdout, (text, proc.stdout)
        assert "✓ device-to-device" in proc.stderr  # the step lines go to stderr
        assert len(labs) == 1 and labs[0]["running"]
        assert prefix is not None and prefix in netns_names()
        # the kept lab still works: the admin's tunnel is up
        verify = fiovpn("lab", "exec", "engineer1", "--", "fiovpn", "verify", "--json",
                        records=records, cwd=tmp_path, timeout=60)
        assert verify.returncode == 0, verify.stderr
        assert json.loads(verify.stdout)["server_reachable"] is True
        made = [d for d in runtime_dirs(records, tmp_path) if d.is_dir()]
        assert made, "the engineers' fiovpn ssh made control-socket dirs"
    finally:
        down = fiovpn("lab", "down", records=records, cwd=tmp_path, timeout=120)
    assert down.returncode == 0, down.stderr
    assert not [d for d in made if d.exists()], "lab down removes /tmp/fiovpn-<uid>/ns-*"
    assert prefix is not None
    assert prefix not in netns_names()
    assert leftovers(prefix) == []  # no namespace, link, process or /run/wireguard socket
    assert not list(Path("/run/wireguard").glob(f"{prefix}*"))
    assert not list(records.glob("*.json"))
