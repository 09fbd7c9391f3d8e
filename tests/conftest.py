"""Shared test setup.

End-to-end tests (marked ``e2e``) need root and the lab's tools; they are
skipped with the reason when those are missing, never silently passed.
"""

from __future__ import annotations

import pytest


def lab_unavailable() -> str | None:
    """Why the namespace lab cannot run here (the lab's own preflight), or None."""
    from fiovpn.errors import FiovpnError
    from fiovpn.lab import preflight

    try:
        preflight("the end-to-end tests")
    except FiovpnError as exc:
        return str(exc)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = lab_unavailable()
    if reason is None:
        return
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def _private_journal(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Device-touching commands journal to ~/.local/state/fiovpn and cache device IPs in
    ~/.cache/fiovpn: never the real home in unit and adapter tests (the lab's roles have
    homes of their own)."""
    # where daemons announce themselves (default /run/fiovpn): settings read from a
    # file or the env point there; settings built in a test name their own
    monkeypatch.setenv("FIOVPN_RUN_DIR", str(tmp_path_factory.mktemp("run")))
    monkeypatch.setenv("FIOVPN_DEVICE_CACHE", str(tmp_path_factory.mktemp("cache")
                                                  / "devices.json"))
    if "e2e" not in request.keywords:
        monkeypatch.setenv("FIOVPN_JOURNAL", str(tmp_path_factory.mktemp("journal")
                                                 / "journal.jsonl"))


_HOST_UNIT_DIR = "/etc/systemd/system"


def _host_units() -> set[str]:
    from pathlib import Path

    return {p.name for p in Path(_HOST_UNIT_DIR).glob("fiovpn-*.service")}


@pytest.fixture(scope="session", autouse=True)
def _no_unit_written_to_the_host() -> object:
    """Tests never write outside their temp dirs: a unit that appears in the
    host's /etc/systemd/system during the run fails the run, naming it."""
    before = _host_units()
    yield None
    new = sorted(_host_units() - before)
    assert not new, (f"a test wrote {', '.join(new)} to {_HOST_UNIT_DIR}: "
                     "point its unit-dir at tmp_path")


_HOST_RUN_DIR = "/run/fiovpn"


def written_in_run_dir(path: str, before: set[str] | None) -> list[str]:
    """What appeared in ``path`` since ``before`` (its entries then; None: it did not
    exist): the directory itself, an announcement, the daemons.lock of a CLI."""
    from pathlib import Path

    run = Path(path)
    if not run.is_dir():
        return []
    now = {p.name for p in run.iterdir()}
    if before is None:
        return [str(run), *sorted(now)]
    return sorted(now - before)


def run_dir_entries(path: str) -> set[str] | None:
    from pathlib import Path

    run = Path(path)
    return {p.name for p in run.iterdir()} if run.is_dir() else None


@pytest.fixture(scope="session", autouse=True)
def _no_daemon_announced_on_the_host() -> object:
    """A daemon or a CLI built in a test without its own run-dir would use the host's
    /run/fiovpn (a daemon announced there is found by a real fiovpn; a CLI takes
    daemons.lock there): anything new in it fails the run."""
    before = run_dir_entries(_HOST_RUN_DIR)
    yield None
    new = written_in_run_dir(_HOST_RUN_DIR, before)
    assert not new, (f"a test wrote to {_HOST_RUN_DIR} ({', '.join(new)}): "
                     "give its settings run_dir=tmp_path / 'run'")
