"""``fiovpn demo``: fiovpn's whole job, for real, in a namespace lab on this machine."""

from fiovpn.demo.scenario import Demo, DemoOptions, DemoOutcome
from fiovpn.demo.steps import StepFailed, StepResult, StepRunner, exit_code

__all__ = ["Demo", "DemoOptions", "DemoOutcome", "StepFailed", "StepResult", "StepRunner",
           "exit_code"]
