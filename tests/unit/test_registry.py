"""The client registry document: comments, blank lines and order survive a
rewrite; bad lines are reported with their line numbers and skipped."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fiovpn.core.keys import KeyPair
from fiovpn.core.registry import ClientEntry, Registry
from fiovpn.errors import NotFound

K1, K2, K3 = (KeyPair.generate().public for _ in range(3))

DOC = f"""# engineers
{K1} 10.42.42.200 alice   # laptop

# contractors
{K2} 10.42.42.201
bogus line here
{K3} 10.42.42.999 carol
"""


def test_parse_keeps_entries_and_reports_bad_lines_by_number() -> None:
    reg = Registry.parse(DOC)
    assert reg.entries == [ClientEntry(K1, IPv4Address("10.42.42.200"), "alice"),
                           ClientEntry(K2, IPv4Address("10.42.42.201"), None)]
    problems = reg.problems
    assert [p.line for p in problems] == [6, 7]
    assert "3 field(s)" in problems[0].message or "public key" in problems[0].message
    assert "10.42.42.999" in problems[1].message


def test_render_is_byte_identical() -> None:
    assert Registry.parse(DOC).render() == DOC
    assert Registry.parse("no newline at end").render() == "no newline at end"


def test_add_appends_and_keeps_everything_else() -> None:
    k = KeyPair.generate().public
    new = Registry.parse(DOC).add(ClientEntry(k, IPv4Address("10.42.42.202"), "dave"))
    text = new.render()
    assert text.startswith(DOC)
    assert text.endswith(f"{k} 10.42.42.202 dave\n")


def test_add_to_empty_file_writes_a_header() -> None:
    text = Registry.parse("").add(ClientEntry(K1, IPv4Address("10.42.42.200"))).render()
    assert text.splitlines()[0].startswith("#")
    assert text.endswith(f"{K1} 10.42.42.200\n")


def test_remove_by_key_and_by_name_keeps_comments() -> None:
    reg, removed = Registry.parse(DOC).remove(name="alice")
    assert [e.public_key for e in removed] == [K1]
    assert reg.render() == DOC.replace(f"{K1} 10.42.42.200 alice   # laptop\n", "")
    reg2, _ = Registry.parse(DOC).remove(public_key=K2)
    assert f"{K2}" not in reg2.render() and "# contractors" in reg2.render()
    assert "bogus line here" in reg2.render()  # a bad line is never silently dropped


def test_remove_unknown_is_not_found() -> None:
    with pytest.raises(NotFound):
        Registry.parse(DOC).remove(name="nobody")


_line = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)),
            max_size=60),
    st.builds(lambda n, name: f"{K1} 10.42.42.{n} {name}",
              st.integers(0, 300), st.from_regex(r"[a-z][a-z0-9._-]{0,8}", fullmatch=True)),
    st.just(""), st.just("# comment"),
)


@given(st.lists(_line, max_size=20), st.booleans())
def test_round_trip_property(lines: list[str], trailing: bool) -> None:
    text = "\n".join(lines) + ("\n" if trailing and lines else "")
    reg = Registry.parse(text)
    assert reg.render() == text
    # every line is either an entry, a comment/blank, or a reported problem
    assert len(reg.entries) + len(reg.problems) <= len(reg.lines)


@given(st.lists(st.integers(200, 254), unique=True, max_size=10))
def test_add_then_remove_restores_the_document(octets: list[int]) -> None:
    reg = Registry.parse(DOC)
    keys = [KeyPair.generate().public for _ in octets]
    grown = reg
    for key, n in zip(keys, octets, strict=True):
        grown = grown.add(ClientEntry(key, IPv4Address(f"10.42.42.{n}")))
    assert len(grown.entries) == len(reg.entries) + len(octets)
    for key in keys:
        grown, _ = grown.remove(public_key=key)
    assert grown.render() == reg.render()
