"""``fiovpn lab``: look at, enter and remove kept labs (``fiovpn demo --keep``)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import click

from fiovpn.cli.output import Result, command, progress
from fiovpn.errors import BadInput, PermanentError
from fiovpn.lab import record

lab_dir_option = click.option(
    "--lab-dir", "lab_dir", type=click.Path(path_type=Path), default=None,
    help=f"Where lab records live (env {record.LAB_DIR_ENV}; default {record.DEFAULT_LAB_DIR}).")


def register(cli: click.Group) -> None:
    cli.add_command(lab)


@click.group()
def lab() -> None:
    """Kept namespace labs: status, exec ROLE -- CMD, down.

    Roles: server, factory, device1.., engineer1.. (or a device's name).
    """


def _need_root() -> None:
    if os.geteuid() != 0:
        raise PermanentError("the namespace lab needs root: run it with sudo", code="lab")


def _summary(data: dict[str, Any]) -> dict[str, Any]:
    return {"prefix": data["prefix"], "dir": data.get("dir"), "created": data.get("created"),
            "running": record.is_running(data), "factory": data.get("factory"),
            "api_url": data.get("api_url"),
            "roles": {name: {"ns": r.get("ns"), "underlay_ip": r.get("underlay_ip"),
                             **({"device_name": r["device_name"]} if "device_name" in r else {})}
                      for name, r in data.get("roles", {}).items()}}


@lab.command("status")
@command
@lab_dir_option
def status_cmd(lab_dir: Path | None) -> Result:
    """List kept labs and their roles."""
    labs = [_summary(d) for d in record.load_all(record.lab_dir(lab_dir))]
    if not labs:
        return Result([], "No kept lab.")
    lines = []
    for item in labs:
        state = "running" if item["running"] else "stopped (remove with `fiovpn lab down`)"
        lines.append(f"[bold]{item['prefix']}[/] {state}, dir {item['dir']}")
        for name, r in item["roles"].items():
            alias = f" ({r['device_name']})" if "device_name" in r else ""
            lines.append(f"  {name}{alias}: namespace {r['ns']}, underlay {r['underlay_ip']}")
    return Result(labs, "\n".join(lines))


@lab.command("down")
@command
@click.argument("prefix", required=False)
@click.option("--all", "all_labs", is_flag=True, help="Remove every lab with a record.")
@lab_dir_option
def down_cmd(prefix: str | None, all_labs: bool, lab_dir: Path | None) -> Result:
    """Remove a kept lab: its processes, namespaces, sockets and files."""
    _need_root()
    directory = record.lab_dir(lab_dir)
    if all_labs and prefix:
        raise BadInput("give a lab PREFIX or --all, not both")
    targets = record.load_all(directory) if all_labs else [record.find(directory, prefix)]
    removed, problems = [], []
    for data in targets:
        progress(f"removing lab {data['prefix']}")
        left = record.destroy(data)
        if left:
            problems.append(f"{data['prefix']}: {'; '.join(left)}")
        else:
            removed.append(data["prefix"])
    if problems:
        raise PermanentError("lab removal left things behind: " + " | ".join(problems),
                             code="lab")
    human = f"Removed lab {', '.join(removed)}." if removed else "No lab to remove."
    return Result({"removed": removed}, human)


@lab.command("exec", context_settings={"ignore_unknown_options": True,
                                       "allow_interspersed_args": False})
@command
@click.option("--lab", "prefix", default=None, help="The lab's prefix (when several are kept).")
@lab_dir_option
@click.argument("role")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_cmd(prefix: str | None, lab_dir: Path | None, role: str,
             argv: tuple[str, ...]) -> Result:
    """Run a command inside a role's namespace with that role's environment.

    \b
    Example: fiovpn lab exec engineer1 -- fiovpn verify
             fiovpn lab exec device1 -- wg show
    """
    _need_root()
    data = record.find(record.lab_dir(lab_dir), prefix)
    entry = record.role(data, role)
    args = list(argv[1:] if argv and argv[0] == "--" else argv)
    if not args:
        raise BadInput("no command given: fiovpn lab exec ROLE -- CMD ...")
    env = {str(k): str(v) for k, v in entry.get("env", {}).items()}
    if "TERM" in os.environ:
        env["TERM"] = os.environ["TERM"]
    try:
        proc = subprocess.run([*record.enter_argv(entry), *args], env=env, check=False)
    except FileNotFoundError as exc:
        raise PermanentError(f"cannot run {args[0]}: {exc}", code="lab") from None
    return Result({"role": role, "exit_code": proc.returncode}, None, proc.returncode)
