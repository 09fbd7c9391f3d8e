"""Lab records: one JSON file per lab (``<lab-dir>/<prefix>.json``) listing its
namespaces, processes, dirs and roles, so a kept (or crashed) lab can be
entered (`fiovpn lab exec`) and removed (`fiovpn lab down`) later.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from fiovpn.adapters.fs import atomic_write
from fiovpn.errors import BadInput, NotFound
from fiovpn.lab.net import remove_everything
from fiovpn.lab.proc import alive

LAB_DIR_ENV = "FIOVPN_LAB_DIR"
DEFAULT_LAB_DIR = Path("/run/fiovpn-lab")


def lab_dir(value: Path | None = None) -> Path:
    if value is not None:
        return value
    env = os.environ.get(LAB_DIR_ENV)
    return Path(env) if env else DEFAULT_LAB_DIR


def write(record_dir: Path, data: dict[str, Any]) -> Path:
    path = record_dir / f"{data['prefix']}.json"
    atomic_write(path, json.dumps(data, indent=2), mode=0o600)
    return path


def load_all(record_dir: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if not record_dir.is_dir():
        return out
    for path in sorted(record_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "prefix" in data:
            data["_path"] = str(path)
            out.append(data)
    return out


def find(record_dir: Path, prefix: str | None) -> dict[str, Any]:
    """The record of lab ``prefix``; without one, the only lab there is."""
    labs = load_all(record_dir)
    if prefix is not None:
        for data in labs:
            if data["prefix"] == prefix:
                return data
        raise NotFound(f"no lab {prefix!r} in {record_dir}"
                       + (f" (labs: {', '.join(d['prefix'] for d in labs)})" if labs else ""))
    if not labs:
        raise NotFound(f"no kept lab in {record_dir} (start one with `fiovpn demo --keep`)")
    if len(labs) > 1:
        raise BadInput(f"several labs in {record_dir}: {', '.join(d['prefix'] for d in labs)}; "
                       "name one with --lab PREFIX")
    return labs[0]


def role(data: dict[str, Any], name: str) -> dict[str, Any]:
    """A role by its lab name (server, factory, device1, engineer1) or device name."""
    roles: dict[str, dict[str, Any]] = data.get("roles", {})
    if name in roles:
        return roles[name]
    for entry in roles.values():
        if entry.get("device_name") == name:
            return entry
    raise NotFound(f"lab {data['prefix']} has no role {name!r} "
                   f"(roles: {', '.join(roles)})")


def enter_argv(entry: dict[str, Any]) -> list[str]:
    """The argv prefix entering a role; refuses a dead mount-namespace holder."""
    argv = [str(a) for a in entry["enter"]]
    if argv[:1] == ["nsenter"]:
        pid = int(argv[2])
        if not alive(pid, entry.get("holder_started")):
            raise NotFound(f"the namespace holder of {entry['ns']} (pid {pid}) is gone; "
                           "remove the lab with `fiovpn lab down`")
    return argv


def is_running(data: dict[str, Any]) -> bool:
    return any(alive(int(pid), started) for pid, started in data.get("pids", []))


def destroy(data: dict[str, Any]) -> list[str]:
    """Remove everything the record names; returns what could not be removed."""
    pids = [(int(pid), None if started is None else int(started))
            for pid, started in data.get("pids", [])]
    problems = remove_everything(str(data["prefix"]), list(data.get("namespaces", [])), pids)
    lab_path = data.get("dir")
    if lab_path and Path(lab_path).is_dir():
        shutil.rmtree(lab_path, ignore_errors=True)
        if Path(lab_path).exists():
            problems.append(f"directory {lab_path} could not be removed")
    rec = data.get("_path")
    if rec and not problems:
        Path(rec).unlink(missing_ok=True)
    return problems
