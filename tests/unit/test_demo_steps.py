"""The demo's step runner and exit code, its preflight, and its summary, with fakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from fiovpn.demo import preflight
from fiovpn.demo.scenario import DemoOutcome, peer_rows
from fiovpn.demo.steps import SKIPPED, Step, StepFailed, StepResult, StepRunner, exit_code
from fiovpn.errors import MissingTool, PermanentError


class FakeReporter:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def started(self, name: str) -> None:
        self.events.append(("started", name))

    def activity(self, text: str) -> None:
        self.events.append(("activity", text))

    def finished(self, result: StepResult) -> None:
        self.events.append(("finished", f"{result.name}:{result.ok}"))


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ok_step(detail: str = "fine", *, clock: FakeClock | None = None, took: float = 0.0):
    def fn(step: Step) -> str:
        step.doing("engineer1$ fiovpn verify")
        if clock is not None:
            clock.now += took
        return detail
    return fn


def failing(exc: Exception):
    def fn(step: Step) -> str:
        raise exc
    return fn


def test_all_steps_pass_exit_0_with_durations_and_commands() -> None:
    clock, rep = FakeClock(), FakeReporter()
    runner = StepRunner(rep, clock=clock)
    assert runner.run_all([("one", ok_step("a", clock=clock, took=1.5)),
                           ("two", ok_step("b", clock=clock, took=0.25))])
    assert exit_code(runner.results) == 0
    one, two = runner.results
    assert (one.name, one.ok, one.seconds, one.detail) == ("one", True, 1.5, "a")
    assert one.commands == [("engineer1$ fiovpn verify", 1.5)]
    assert two.to_json() == {"name": "two", "ok": True, "seconds": 0.25, "detail": "b",
                             "commands": [{"command": "engineer1$ fiovpn verify",
                                           "seconds": 0.25}]}
    assert rep.events[:3] == [("started", "one"), ("activity", "engineer1$ fiovpn verify"),
                              ("finished", "one:True")]


def test_a_failed_step_stops_the_rest_and_exits_1_with_the_log() -> None:
    rep = FakeReporter()
    ran: list[str] = []

    def later(step: Step) -> str:
        ran.append("later")
        return "should not run"
    runner = StepRunner(rep, on_failure=lambda: "daemon log: peer added")
    ok = runner.run_all([("one", ok_step()),
                         ("two", failing(StepFailed("no handshake", log="wg show: none"))),
                         ("three", later)])
    assert not ok
    assert exit_code(runner.results) == 1
    assert ran == []
    one, two, three = runner.results
    assert one.ok and not two.ok and not three.ok
    assert two.detail == "no handshake"
    assert two.log == "wg show: none\ndaemon log: peer added"
    assert (three.ran, three.detail) == (False, SKIPPED)
    assert runner.failed is two
    assert ("started", "three") not in rep.events


def test_any_exception_fails_the_step_with_its_message() -> None:
    runner = StepRunner(FakeReporter())
    runner.run("boom", failing(RuntimeError("lab exploded")))
    runner.run("bare", failing(KeyError()))
    assert runner.results[0].detail == "lab exploded"
    assert runner.results[1].ran is False  # after the first failure nothing else runs
    other = StepRunner(FakeReporter())
    other.run("bare", failing(KeyError()))
    assert other.results[0].detail == "KeyError"
    assert exit_code(runner.results) == 1


def test_always_steps_run_after_a_failure_but_do_not_rescue_it() -> None:
    runner = StepRunner(FakeReporter(), on_failure=lambda: "LOG")
    runner.run("one", failing(StepFailed("bad")))
    assert runner.run("tear down", ok_step("removed"), always=True)
    assert [r.ran for r in runner.results] == [True, True]
    assert exit_code(runner.results) == 1
    assert runner.failed is not None and runner.failed.name == "one"
    # a failing teardown fails the demo too (without the daemon log)
    r2 = StepRunner(FakeReporter(), on_failure=lambda: "LOG")
    r2.run("one", ok_step())
    r2.run("tear down", failing(StepFailed("netns left")), always=True)
    assert exit_code(r2.results) == 1
    assert r2.results[-1].log == ""


def test_a_broken_log_reader_does_not_hide_the_failure() -> None:
    def bad_log() -> str:
        raise OSError("gone")
    runner = StepRunner(FakeReporter(), on_failure=bad_log)
    runner.run("one", failing(StepFailed("bad")))
    assert runner.results[0].detail == "bad"
    assert "could not read the log: gone" in runner.results[0].log


def test_no_steps_is_not_success() -> None:
    assert exit_code([]) == 1


def test_outcome_json_names_the_failed_step_and_its_log() -> None:
    results = [StepResult("one", True, 1.0, "ok"),
               StepResult("two", False, 2.0, "ping failed", log="daemon: error")]
    data = DemoOutcome(results, prefix="fv1234").to_json()
    assert data["ok"] is False
    assert data["failed_step"] == "two"
    assert data["log_tail"] == "daemon: error"
    assert [s["name"] for s in data["steps"]] == ["one", "two"]
    assert data["peers"] == [] and data["topology"] is None
    good = DemoOutcome([StepResult("one", True, 1.0, "ok")], topology=Path("/x.svg"))
    assert good.to_json()["ok"] is True and "failed_step" not in good.to_json()


def test_peer_rows_from_status() -> None:
    status = {"peers": [{"kind": "client", "name": "admin", "ip": "10.42.42.200",
                         "public_key": "K", "latest_handshake": 990, "rx": 5, "tx": None},
                        {"kind": "device", "name": "d", "ip": "10.42.42.2",
                         "public_key": "D", "latest_handshake": None}]}
    rows = peer_rows(status, now=1000)
    assert rows[0]["handshake_age_s"] == 10 and rows[0]["tx"] == 0
    assert rows[1]["handshake_age_s"] is None and rows[1]["rx"] == 0


def test_preflight_not_root() -> None:
    with pytest.raises(PermanentError, match="needs root") as info:
        preflight.check(euid=lambda: 1000, which=lambda t: f"/usr/bin/{t}")
    assert info.value.exit_code == 1


def test_preflight_names_the_install_command_for_missing_tools(tmp_path: Path) -> None:
    tun = tmp_path / "tun"
    tun.touch()
    missing = {"wireguard-go", "nft", "sshd"}
    with pytest.raises(MissingTool) as info:
        preflight.check(euid=lambda: 0, tun=tun,
                        which=lambda t: None if t in missing else f"/usr/bin/{t}")
    msg = str(info.value)
    assert "wireguard-go, nft, sshd" in msg
    assert "apt-get install -y nftables openssh-server wireguard-go" in msg


def test_preflight_needs_the_tun_device(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="tun"):
        preflight.check(euid=lambda: 0, which=lambda t: f"/usr/bin/{t}",
                        tun=tmp_path / "missing")
    tun = tmp_path / "tun"
    tun.touch()
    preflight.check(euid=lambda: 0, which=lambda t: f"/usr/bin/{t}", tun=tun)


def render(data: dict[str, object]) -> str:
    from rich.console import Console

    from fiovpn.demo.view import summary

    console = Console(record=True, width=120)
    console.print(summary(data))
    return console.export_text()


def test_summary_of_a_failure_names_the_step_and_shows_the_log() -> None:
    results = [StepResult("build the lab", True, 1.0, "ok"),
               StepResult("device-to-device", False, 2.0, "device1 cannot ping 10.42.42.3",
                           log="server daemon log, last lines:\npeer added: device2")]
    text = render(DemoOutcome(results, prefix="fv1234").to_json())
    assert "Step failed: device-to-device" in text
    assert "device1 cannot ping 10.42.42.3" in text
    assert "peer added: device2" in text
    assert "fiovpn demo --keep" in text
    assert "verified" not in text


def test_summary_of_a_kept_success_says_how_to_use_and_remove_the_lab() -> None:
    status = {"peers": [{"kind": "client", "name": "admin", "ip": "10.42.42.200",
                         "latest_handshake": None, "rx": 0, "tx": 0}]}
    outcome = DemoOutcome([StepResult("one", True, 1.0, "ok")], status=status,
                          topology=Path("/o/t.svg"), prefix="fv1234", kept=True)
    text = render(outcome.to_json())
    assert "All 1 steps verified" in text
    assert "admin" in text and "10.42.42.200" in text
    assert "Topology: /o/t.svg" in text
    assert "fiovpn lab exec engineer1 -- " in text and "fiovpn lab down" in text


def test_lab_preflight_and_a_missing_single_tool_name_the_same_packages() -> None:
    from fiovpn.adapters.runner import install_command, require_tool
    from fiovpn.lab import preflight as lab_preflight

    with pytest.raises(MissingTool, match=r"apt-get install -y iproute2 nftables"):
        lab_preflight("the lab", euid=lambda: 0,
                      which=lambda t: None if t in ("nft", "ss") else f"/usr/bin/{t}")
    assert install_command(["nsenter", "setsid"]) == "apt-get install -y util-linux"
    with pytest.raises(MissingTool, match=r"run `apt-get install -y no-such-tool-zz`"):
        require_tool("no-such-tool-zz")
