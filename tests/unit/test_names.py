"""Names that reach registry lines, hosts files and remote command lines."""

from __future__ import annotations

import pytest

from fiovpn.core.names import validate_interface, validate_name
from fiovpn.errors import BadInput


@pytest.mark.parametrize("bad", ["alice\n", "alice\nrm", "", "-x", "a b", "a;b", "é"])
def test_names_refuse_anything_beyond_the_safe_set(bad: str) -> None:
    # `$` alone would let a trailing newline through ("alice\n")
    with pytest.raises(BadInput):
        validate_name(bad)


@pytest.mark.parametrize("bad", ["wg0\n", "", "-wg", "a" * 16, "wg 0"])
def test_interface_names_refuse_anything_ip_link_would_not_take(bad: str) -> None:
    with pytest.raises(BadInput):
        validate_interface(bad)


def test_good_names_pass_unchanged() -> None:
    assert validate_name("device-01.lab_2") == "device-01.lab_2"
    assert validate_interface("factory") == "factory"
