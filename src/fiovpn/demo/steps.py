"""The demo's step runner: runs named steps in order, times each, stops at the
first failure, and decides the exit code.

A step is a function that returns a one-line detail when it did (and checked)
its job, and raises when it did not. Everything after a failed step is
skipped: later flows build on earlier ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

SKIPPED = "skipped: an earlier step failed"


class StepFailed(Exception):
    """A step's check did not hold. ``log`` is what helps the user see why
    (a command's stderr, the daemon log tail)."""

    def __init__(self, message: str, *, log: str = "") -> None:
        super().__init__(message)
        self.log = log


@dataclass
class StepResult:
    name: str
    ok: bool
    seconds: float
    detail: str
    ran: bool = True
    commands: list[tuple[str, float]] = field(default_factory=list)  # (command, seconds)
    log: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "seconds": round(self.seconds, 2),
                "detail": self.detail,
                "commands": [{"command": c, "seconds": round(s, 2)} for c, s in self.commands]}


class Reporter(Protocol):
    """Shows steps as they run (the CLI's live display; a list in unit tests)."""

    def started(self, name: str) -> None: ...

    def activity(self, text: str) -> None: ...

    def finished(self, result: StepResult) -> None: ...


class Step:
    """What a running step function gets: a way to say what it is doing now
    (shown live, and recorded as the step's transcript)."""

    def __init__(self, reporter: Reporter, clock: Callable[[], float]) -> None:
        self._reporter = reporter
        self._clock = clock
        self._current: tuple[str, float] | None = None
        self.commands: list[tuple[str, float]] = []

    def doing(self, text: str) -> None:
        """Show ``text`` (a command as the user would type it, or what the lab is
        waiting for) as the step's current activity; recorded with how long it
        took, up to the next activity."""
        self.done()
        self._current = (text, self._clock())
        self._reporter.activity(text)

    def done(self) -> None:
        if self._current is not None:
            text, start = self._current
            self.commands.append((text, self._clock() - start))
            self._current = None


StepFn = Callable[[Step], str]


class StepRunner:
    def __init__(self, reporter: Reporter, *, clock: Callable[[], float] = time.monotonic,
                 on_failure: Callable[[], str] | None = None) -> None:
        self.reporter = reporter
        self.clock = clock
        self.on_failure = on_failure  # extra log for a failed step (the daemon log tail)
        self.results: list[StepResult] = []

    @property
    def failed(self) -> StepResult | None:
        return next((r for r in self.results if r.ran and not r.ok), None)

    def run(self, name: str, fn: StepFn, *, always: bool = False) -> bool:
        """Run one step (or record it as skipped after a failure, unless ``always``:
        e.g. the teardown); True when it passed its check."""
        if self.failed is not None and not always:
            self.results.append(StepResult(name, False, 0.0, SKIPPED, ran=False))
            return False
        self.reporter.started(name)
        step = Step(self.reporter, self.clock)
        start = self.clock()
        log = ""
        try:
            detail, ok = fn(step), True
        except StepFailed as exc:
            detail, ok, log = str(exc), False, exc.log
        except Exception as exc:  # any error fails the step, with its message
            detail, ok = str(exc) or type(exc).__name__, False
        if not ok and self.on_failure is not None and not always:
            try:
                extra = self.on_failure()
            except Exception as exc:
                extra = f"(could not read the log: {exc})"
            log = "\n".join(part for part in (log, extra) if part)
        step.done()
        result = StepResult(name, ok, self.clock() - start, detail, commands=step.commands,
                            log=log)
        self.results.append(result)
        self.reporter.finished(result)
        return ok

    def run_all(self, steps: Sequence[tuple[str, StepFn]]) -> bool:
        for name, fn in steps:
            self.run(name, fn)
        return self.ok

    @property
    def ok(self) -> bool:
        return all_verified(self.results)


def all_verified(results: Sequence[StepResult]) -> bool:
    """The demo succeeded only when there were steps and every one ran and passed."""
    return bool(results) and all(r.ran and r.ok for r in results)


def exit_code(results: Sequence[StepResult]) -> int:
    return 0 if all_verified(results) else 1
