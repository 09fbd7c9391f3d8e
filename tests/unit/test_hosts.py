"""The factory's /etc/hosts block: replaced in place, appended when missing,
the rest of the file untouched, None when nothing changes."""

from __future__ import annotations

from ipaddress import IPv4Address as A

from fiovpn.core.hosts import update_hosts

BASE = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n"


def test_block_appended_when_missing() -> None:
    new = update_hosts(BASE, "acme", [(A("10.42.42.3"), "b"), (A("10.42.42.2"), "a")])
    assert new == (BASE + "## Factory(acme) VPN Lookups\n10.42.42.2\ta\n10.42.42.3\tb\n"
                   "## END Factory(acme) VPN Lookups\n")


def test_block_replaced_in_place_rest_untouched() -> None:
    text = (BASE + "## Factory(acme) VPN Lookups\n10.42.42.2\told\n"
            "## END Factory(acme) VPN Lookups\n192.168.1.5 printer\n")
    new = update_hosts(text, "acme", [(A("10.42.42.2"), "new")])
    assert new == (BASE + "## Factory(acme) VPN Lookups\n10.42.42.2\tnew\n"
                   "## END Factory(acme) VPN Lookups\n192.168.1.5 printer\n")


def test_unchanged_gives_none() -> None:
    once = update_hosts(BASE, "acme", [(A("10.42.42.2"), "a")])
    assert once is not None
    assert update_hosts(once, "acme", [(A("10.42.42.2"), "a")]) is None


def test_other_factory_block_is_left_alone() -> None:
    other = "## Factory(other) VPN Lookups\n10.9.9.9\tx\n## END Factory(other) VPN Lookups\n"
    new = update_hosts(BASE + other, "acme", [])
    assert new is not None and new.startswith(BASE + other)
    assert new.endswith("## Factory(acme) VPN Lookups\n## END Factory(acme) VPN Lookups\n")


def test_file_without_trailing_newline() -> None:
    new = update_hosts("127.0.0.1 localhost", "acme", [])
    assert new == ("127.0.0.1 localhost\n## Factory(acme) VPN Lookups\n"
                   "## END Factory(acme) VPN Lookups\n")


def test_block_without_end_marker_keeps_the_admins_lines_after_it() -> None:
    """Someone deleted our END line: replace our entries, never what follows."""
    text = (BASE + "## Factory(acme) VPN Lookups\n10.42.42.2\told\n10.42.42.3\tgone\n"
            "192.168.1.5 printer\n10.0.0.9 nas\n")
    new = update_hosts(text, "acme", [(A("10.42.42.2"), "new")])
    assert new == (BASE + "## Factory(acme) VPN Lookups\n10.42.42.2\tnew\n"
                   "## END Factory(acme) VPN Lookups\n192.168.1.5 printer\n10.0.0.9 nas\n")


def test_lookup_reads_what_update_hosts_writes_and_nothing_outside_blocks() -> None:
    from ipaddress import IPv4Address

    from fiovpn.core.hosts import lookup, update_hosts

    text = update_hosts("127.0.0.1\tlocalhost\n10.9.9.9\tgw-1  # not ours\n", "acme",
                        [(IPv4Address("10.42.42.2"), "gw-1"), (IPv4Address("10.42.42.3"), "gw-2")])
    assert text is not None
    assert lookup(text, "gw-1") == IPv4Address("10.42.42.2")  # the block, not the line above
    assert lookup(text, "gw-2") == IPv4Address("10.42.42.3")
    assert lookup(text, "localhost") is None
    assert lookup(text + "## Factory(other) VPN Lookups  \nbad\tgw-9\n10.7.7.7\tgw-9\n",
                  "gw-9") == IPv4Address("10.7.7.7")
