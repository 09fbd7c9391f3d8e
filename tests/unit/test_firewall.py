"""The nftables ruleset text for table fiovpn (applied for real in
tests/adapters/test_wireguard_nft.py)."""

from __future__ import annotations

from ipaddress import IPv4Address as A

from fiovpn.core.firewall import FirewallPolicy, render_ruleset
from fiovpn.core.keys import KeyPair
from fiovpn.core.peers import Peer

PEERS = [Peer("device", "d1", KeyPair.generate().public, A("10.42.42.3")),
         Peer("device", "d2", KeyPair.generate().public, A("10.42.42.2")),
         Peer("client", "alice", KeyPair.generate().public, A("10.42.42.200"))]


def _rules(d2d: bool = False, peers: list[Peer] = PEERS) -> str:
    return render_ruleset(FirewallPolicy("fiovpn", "factory", A("10.42.42.1"), d2d), peers)


def test_atomic_replacement_of_the_table() -> None:
    lines = _rules().splitlines()
    assert lines[:3] == ["add table inet fiovpn", "delete table inet fiovpn",
                         "table inet fiovpn {"]


def test_sets_hold_current_peers_sorted() -> None:
    text = _rules()
    assert ("set client_ips {\n\t\ttype ipv4_addr\n\t\tflags timeout\n"
            "\t\telements = { 10.42.42.200 }") in text
    assert "elements = { 10.42.42.2, 10.42.42.3 }" in text
    assert "set devices" not in text  # `devices` is reserved in nft


def test_empty_sets_have_no_elements_line() -> None:
    text = _rules(peers=[])
    assert "elements" not in text and "set device_ips {" in text


def test_policy_rules() -> None:
    text = _rules()
    fwd = text.split("chain forward {")[1].split("}")[0]
    assert ('iifname "factory" oifname "factory" ip saddr != @device_ips ip daddr @device_ips '
            'jump client_to_device') in fwd
    c2d = text.split("chain client_to_device {")[1].split("}")[0]
    assert "ip saddr @open_clients accept" in c2d  # no groups=: every device, as before
    assert "ct state established,related accept" in fwd
    assert "reject with icmpx type admin-prohibited" in fwd
    assert "ip saddr @device_ips ip daddr @device_ips" not in fwd  # no d2d by default
    nat = text.split("chain postrouting {")[1]
    assert ('oifname "factory" ip saddr @client_ips ip daddr @device_ips snat ip to 10.42.42.1'
            in nat)
    inp = text.split("chain input {")[1].split("}")[0]
    assert "ip saddr @client_ips accept" in inp
    assert "ip saddr @device_ips icmp type echo-request accept" in inp


def test_device_to_device_only_when_allowed() -> None:
    fwd = _rules(d2d=True).split("chain forward {")[1].split("}")[0]
    allow = fwd.index("ip saddr @device_ips ip daddr @device_ips accept")
    assert allow < fwd.index("reject")


def test_other_traffic_on_the_host_is_not_judged() -> None:
    text = _rules()
    assert 'iifname != "factory" oifname != "factory" accept' in text
    assert 'iifname != "factory" accept' in text
    assert "policy accept" in text and "policy drop" not in text


def test_nft_refusal_names_the_error_not_the_caret_line() -> None:
    from collections.abc import Sequence

    import pytest

    from fiovpn.adapters.nft import Nft
    from fiovpn.adapters.runner import Completed, FakeRunner
    from fiovpn.errors import PermanentError

    stderr = ("/dev/stdin:1:20-23: Error: syntax error, unexpected string\n"
              "add table inet bad name\n                   ^^^^\n")

    def refuse(argv: Sequence[str], _input: str | None) -> Completed:
        return Completed(tuple(argv), 1, "", stderr)
    runner = FakeRunner()
    runner.on("nft", reply=refuse)
    with pytest.raises(PermanentError) as info:
        Nft(runner).apply("add table inet bad name\n")
    assert str(info.value) == ("nft refused the ruleset: /dev/stdin:1:20-23: Error: syntax "
                               "error, unexpected string")


def _access_rules(now: float = 1000.0) -> str:
    from fiovpn.core.firewall import AccessRules

    access = AccessRules(
        device_groups={A("10.42.42.2"): "lab", A("10.42.42.3"): "prod-eu"},
        client_groups={A("10.42.42.201"): ("lab",)},
        client_ends={A("10.42.42.201"): 1005, A("10.42.42.202"): 999},
        group_grants=((A("10.42.42.201"), "prod-eu", 1010), (A("10.42.42.201"), "gone", 1010)),
        device_grants=((A("10.42.42.201"), A("10.42.42.3"), 1003),
                       (A("10.42.42.201"), A("10.42.42.2"), 900)))
    peers = [*PEERS, Peer("client", "bob", KeyPair.generate().public, A("10.42.42.201")),
             Peer("client", "old", KeyPair.generate().public, A("10.42.42.202"))]
    return render_ruleset(FirewallPolicy("fiovpn", "factory", A("10.42.42.1")), peers, access,
                          now=now)


def test_restricted_client_is_only_in_its_groups_chain() -> None:
    text = _access_rules()
    sets = {name: body.split("}")[0] for name, body in
            (part.split(" {", 1) for part in text.split("\tset ")[1:])}
    assert "10.42.42.201" not in sets["open_clients"]
    assert "10.42.42.200" in sets["open_clients"]
    assert "10.42.42.201 timeout 5000ms" in sets["grp_lab_clients"]  # expires in 5 s
    assert "10.42.42.201" not in sets["grpx_70726f642d6575_clients"]
    assert "10.42.42.2 : jump grp_lab" in text and "10.42.42.3 : jump grpx_70726f642d6575" in text


def test_expired_client_is_in_no_set() -> None:
    assert "10.42.42.202" not in _access_rules()


def test_grants_carry_their_remaining_time_and_ended_ones_are_gone() -> None:
    text = _access_rules()
    assert "10.42.42.201 . 10.42.42.3 timeout 3000ms" in text
    assert "10.42.42.201 . 10.42.42.2" not in text  # ended at 900
    assert "10.42.42.201 timeout 10000ms" in text.split("set grpx_70726f642d6575_grants")[1]
    assert "gone" not in text  # a group without devices has no chain


def test_grant_fast_path_statements() -> None:
    from fiovpn.core.firewall import render_grant, render_revoke

    assert render_grant("fiovpn", A("10.42.42.201"), group="lab", end=1005, now=1000) == \
        "add element inet fiovpn grp_lab_grants { 10.42.42.201 timeout 5000ms }\n"
    assert render_grant("fiovpn", A("10.42.42.201"), device=A("10.42.42.3"), end=1005,
                        now=1000).startswith("add element inet fiovpn device_grants "
                                             "{ 10.42.42.201 . 10.42.42.3 timeout")
    assert render_revoke("fiovpn", A("10.42.42.201"), group="a-b") == \
        "delete element inet fiovpn grpx_612d62_grants { 10.42.42.201 }\n"


def test_deltas_change_only_elements() -> None:
    from fiovpn.core.firewall import AccessRules, render_delta, table_model

    pol = FirewallPolicy("fiovpn", "factory", A("10.42.42.1"))
    c = Peer("client", "c", KeyPair.generate().public, A("10.42.42.200"))
    d1 = Peer("device", "d1", KeyPair.generate().public, A("10.42.42.2"))
    d2 = Peer("device", "d2", KeyPair.generate().public, A("10.42.42.3"))
    a = table_model(pol, [c, d1], now=100)
    b = table_model(pol, [c, d2], now=100)
    assert render_delta(a, a, 100) == ""
    assert render_delta(a, b, 100) == (
        "delete element inet fiovpn device_ips { 10.42.42.2 }\n"
        "add element inet fiovpn device_ips { 10.42.42.3 }\n")
    # a new shape (device-to-device switched on) is no delta: the table is replaced
    d2d = table_model(FirewallPolicy("fiovpn", "factory", A("10.42.42.1"), True), [c, d1],
                      now=100)
    assert render_delta(a, d2d, 100) is None
    # an expiry moved: delete + add with the new timeout; one already past is not deleted
    e1 = table_model(pol, [c, d1], AccessRules(client_ends={c.ip: 200}), now=100)
    e2 = table_model(pol, [c, d1], AccessRules(client_ends={c.ip: 400}), now=150)
    delta = render_delta(e1, e2, 150)
    assert delta is not None
    assert "delete element inet fiovpn client_ips { 10.42.42.200 }" in delta
    assert "add element inet fiovpn client_ips { 10.42.42.200 timeout 250000ms }" in delta
    gone = table_model(pol, [c, d1], AccessRules(client_ends={c.ip: 200}), now=250)
    assert "delete element" not in (render_delta(e1, gone, 250) or "")


def test_a_saved_model_reads_back_as_the_same_model() -> None:
    import json

    import pytest

    from fiovpn.core.firewall import (
        AccessRules,
        model_from_json,
        model_to_json,
        render_delta,
        table_model,
    )

    access = AccessRules(
        device_groups={A("10.42.42.2"): "lab"},
        client_groups={A("10.42.42.201"): ("lab",)},
        client_ends={A("10.42.42.201"): 1005},
        group_grants=((A("10.42.42.200"), "lab", 1010),),
        device_grants=((A("10.42.42.200"), A("10.42.42.2"), 1003),))
    peers = [*PEERS, Peer("client", "bob", KeyPair.generate().public, A("10.42.42.201"))]
    model = table_model(FirewallPolicy("fiovpn", "factory", A("10.42.42.1")), peers, access,
                        now=1000)
    back = model_from_json(json.loads(json.dumps(model_to_json(model))))
    assert back == model
    assert back.sets["device_group"]["10.42.42.2"] == (None, "jump grp_lab")
    assert back.sets["client_ips"]["10.42.42.201"] == (1005, None)
    assert render_delta(back, model, 1000) == ""
    for bad in ({}, {"table": "fiovpn", "structure": "x", "sets": {"s": {"keys": [1],
                                                                          "items": []}}},
                {"table": "fiovpn", "structure": "x",
                 "sets": {"s": {"keys": [], "items": [["k", "soon", None]]}}}):
        with pytest.raises(ValueError):
            model_from_json(bad)
