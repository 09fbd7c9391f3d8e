"""How the demo looks: a live progress display on stderr while steps run, then the
peer table, the topology path and what to do next."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from rich.text import Text

from fiovpn.core.topology import handshake_text, human_bytes
from fiovpn.demo.steps import StepResult


class LiveReporter:
    """Each step as a spinner line with its current command and elapsed time (on a
    terminal), then one permanent line: ✓/✗, name, duration, detail, commands run."""

    def __init__(self, console: Console, *, show_commands: bool = True) -> None:
        self.console = console
        self.show_commands = show_commands
        self.live = console.is_terminal
        # one line per running step, however long the command: cut, never wrapped
        description = TextColumn("{task.description}",
                                 table_column=Column(no_wrap=True, overflow="ellipsis",
                                                     ratio=1))
        self.progress = Progress(SpinnerColumn(), description, TimeElapsedColumn(),
                                 console=console, transient=True, expand=True)
        self.task: TaskID | None = None
        self.name = ""

    def __enter__(self) -> LiveReporter:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def started(self, name: str) -> None:
        self.name = name
        if self.live:
            self.task = self.progress.add_task(f"[bold]{name}[/]", total=None)
        else:
            self.console.print(f"[dim]▶[/] {name} …", highlight=False)

    def activity(self, text: str) -> None:
        if self.live and self.task is not None:
            self.progress.update(self.task, description=f"[bold]{self.name}[/]  [dim]{text}[/]")

    def finished(self, result: StepResult) -> None:
        if self.live and self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        mark = "[green]✓[/]" if result.ok else "[red]✗[/]"
        line = Text.from_markup(f"{mark} [bold]{result.name}[/] "
                                f"[cyan]{result.seconds:.1f}s[/]  ")
        line.append(result.detail, style="" if result.ok else "red")
        out = self.progress.console if self.live else self.console
        out.print(line, highlight=False)
        if self.show_commands:
            for cmd, seconds in result.commands:
                out.print(Text(f"    {cmd}  ({seconds:.1f}s)", style="dim"), highlight=False)


def peer_table(peers: list[dict[str, Any]], *, now: float | None = None) -> Table:
    now = time.time() if now is None else now
    table = Table(title=f"{len(peers)} peers on the server (fiovpn server status)",
                  title_justify="left")
    for col in ("kind", "name", "ip", "handshake", "rx", "tx"):
        table.add_column(col, justify="right" if col in ("rx", "tx") else "left")
    for p in peers:
        hs = p.get("latest_handshake")
        table.add_row(str(p.get("kind") or "-"), str(p.get("name") or "-"),
                      str(p.get("ip") or "-"),
                      handshake_text(hs if isinstance(hs, int) and hs > 0 else None,
                                     now).removeprefix("handshake "),
                      human_bytes(int(p.get("rx") or 0)), human_bytes(int(p.get("tx") or 0)))
    return table


def keep_instructions(prefix: str) -> str:
    return "\n".join([
        f"The lab {prefix} is still running. Try:",
        "  fiovpn lab status",
        "  fiovpn lab exec engineer1 -- fiovpn devices list",
        "  fiovpn lab exec engineer2 -- fiovpn ssh device1 -- ip -brief addr",
        "  fiovpn lab exec server -- fiovpn server status",
        "  fiovpn lab exec device2 -- ping -c1 10.42.42.2",
        f"Remove it with: fiovpn lab down   (with several kept labs: --lab {prefix})",
    ])


def summary(data: dict[str, Any]) -> RenderableType:
    """The human ending: the table, the picture's path, and the verdict."""
    parts: list[RenderableType] = []
    if data.get("peers"):
        parts.append(peer_table(data["peers"]))
    if data.get("topology"):
        parts.append(Text.from_markup(f"Topology: [bold]{data['topology']}[/] "
                                        "(open it in a web browser)"))
    steps = data.get("steps", [])
    if data.get("ok"):
        parts.append(Text.from_markup(
            f"[bold green]All {len(steps)} steps verified[/] in {data.get('seconds', 0)}s."))
    else:
        failed = data.get("failed_step") or "?"
        parts.append(Text.from_markup(f"[bold red]Step failed:[/] {failed}"))
        step = next((s for s in steps if s["name"] == failed), None)
        if step is not None:
            parts.append(Text(f"  {step['detail']}", style="red"))
        if data.get("log_tail"):
            parts.append(Text(data["log_tail"], style="dim"))
    lab = data.get("lab") or {}
    if not data.get("ok") and not lab.get("kept"):
        parts.append(Text("To look around in the lab after a failure: fiovpn demo --keep, "
                          "then fiovpn lab exec ROLE -- CMD"))
    if lab.get("kept") and lab.get("prefix"):
        parts.append(Text(keep_instructions(str(lab["prefix"]))))
    return Group(*parts)
