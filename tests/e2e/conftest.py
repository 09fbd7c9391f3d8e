"""Shared fixtures of the end-to-end tests: labs built once per module.

    def test_something(lab):            # 2 devices, 2 engineers, sandbox factory
        lab.server.enable()
        ...

    @pytest.fixture(scope="module")
    def my_lab(make_lab):               # any other shape, still removed at module end
        return make_lab(devices=3, engineers=1, factory=False)

Every lab is torn down at the end of its module and the teardown is checked:
no namespace, link, /run/wireguard socket or process of the lab may remain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fiovpn.lab import Lab, leftovers


@pytest.fixture(scope="module")
def make_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Lab]]:
    """Build labs (``Lab.build`` keyword arguments); all removed after the module."""
    labs: list[Lab] = []

    def make(**kwargs: Any) -> Lab:
        kwargs.setdefault("record_dir", tmp_path_factory.mktemp("lab-records"))
        lab = Lab.build(**kwargs)
        labs.append(lab)
        return lab

    yield make
    errors: list[str] = []
    for lab in reversed(labs):
        try:
            lab.close()
        except Exception as exc:
            errors.append(f"{lab.prefix}: {exc}")
        errors += [f"{lab.prefix}: {item}" for item in leftovers(lab.prefix)]
    assert not errors, "lab teardown left things behind: " + "; ".join(errors)


@pytest.fixture(scope="module")
def lab(make_lab: Callable[..., Lab]) -> Lab:
    """The default lab: sandbox factory, server (daemon not started), device1 and
    device2 (VPN enabled: 10.42.42.2, .3), engineer1 (admin) and engineer2."""
    return make_lab(devices=2, engineers=2, admins=1)


@pytest.fixture(scope="module")
def vpn_lab(make_lab: Callable[..., Lab]) -> Lab:
    """A lab with the VPN running: server enabled, daemon synced (its log in
    ``lab.server.daemon_log()``), device1/device2 tunnels configured from the
    factory. Engineers are not connected yet: ``lab.join(lab.engineers[0])``."""
    lab = make_lab(devices=2, engineers=2, admins=1)
    lab.start_vpn()
    return lab
