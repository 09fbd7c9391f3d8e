"""The real process runner: prefix, environment, sessions, timeouts, failures."""

from __future__ import annotations

import os
import sys

import pytest

from fiovpn.adapters.runner import CommandFailed, SubprocessRunner
from fiovpn.errors import TemporaryError

PY = sys.executable


def test_prefix_env_and_per_call_env() -> None:
    runner = SubprocessRunner(prefix=("env",), env={"A": "1", "B": "2"})
    out = runner.run([PY, "-c", "import os; print(os.environ.get('A'), os.environ['B'])"],
                     env={"A": "3"}).stdout
    assert out.split() == ["3", "2"]
    assert runner.run(["true"]).argv == ("true",)  # the prefix is not in what is reported


def test_new_session_and_no_stdin() -> None:
    code = "import os, sys; print(os.getsid(0), sys.stdin.read() == '')"
    same = SubprocessRunner().run([PY, "-c", code]).stdout.split()
    own = SubprocessRunner(new_session=True).run([PY, "-c", code]).stdout.split()
    assert int(same[0]) == os.getsid(0) and int(own[0]) != os.getsid(0)
    assert same[1] == own[1] == "True"  # stdin is empty, never the caller's terminal


def test_input_goes_to_stdin_not_argv() -> None:
    result = SubprocessRunner().run([PY, "-c", "import sys; print(sys.stdin.read()[::-1])"],
                                    input="terces")
    assert result.stdout.strip() == "secret" and "terces" not in " ".join(result.argv)


def test_failure_and_timeout_are_our_errors() -> None:
    with pytest.raises(CommandFailed, match="boom"):
        SubprocessRunner().run([PY, "-c", "import sys; sys.exit('boom')"])
    assert SubprocessRunner().run(["false"], check=False).returncode == 1
    with pytest.raises(TemporaryError, match=r"did not finish within 0\.2s"):
        SubprocessRunner().run(["sleep", "5"], timeout=0.2)
