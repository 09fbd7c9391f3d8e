"""``fiovpn demo [--keep]``: a new user's first command (as root, on one machine)."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType

import click

from fiovpn.cli.output import Result, command, stderr
from fiovpn.demo import Demo, DemoOptions, exit_code, preflight
from fiovpn.demo.view import LiveReporter, summary


def register(cli: click.Group) -> None:
    """Add this module's commands to the root group."""
    cli.add_command(demo_cmd)


@click.command("demo")
@command
@click.option("--keep", is_flag=True,
              help="Leave the lab running (enter it with `fiovpn lab exec ROLE -- CMD`, "
                   "remove it with `fiovpn lab down`).")
@click.option("--output-dir", "output_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("."), show_default=True,
              help="Where to write the topology picture (fiovpn-demo-topology.svg).")
def demo_cmd(keep: bool, output_dir: Path) -> Result:
    """Show fiovpn doing its whole job, for real, on this machine (needs root).

    Builds a lab of network namespaces: a sandbox FoundriesFactory with 3
    devices, the WireGuard server running `fiovpn server daemon`, the devices as
    wireguard-go peers with sshd, and two engineers. Then walks every flow with
    fiovpn commands: first-admin bootstrap, engineer onboarding over SSH,
    enabling VPN on devices, device-to-device, ssh to a device by name. Every
    step is checked; exit 0 only when all were. No packet leaves the lab's
    namespaces (underlay 198.18.0.0/24); the host's network, /etc and ~ are not
    touched; everything is removed at the end unless --keep.
    """
    preflight.check()
    options = DemoOptions(output_dir=output_dir, keep=keep)
    # SIGTERM tears the lab down like Ctrl-C does
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with LiveReporter(stderr) as reporter:
            outcome = Demo(options, reporter).run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    data = outcome.to_json()
    return Result(data, summary(data), exit_code(outcome.results))


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
