"""reconcile_once with section 11: device groups learned only when needed,
expired clients off the interface and out of every set, grants rendered with
their remaining time, each peer change journaled (fake WireGuard and API)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from tests.unit.test_reconcile import FakeApi, FakeWg, K, ctx_for
from tests.unit.test_reconcile import env as _env  # noqa: F401 - the fixture

from fiovpn.adapters.factory_api import Device
from fiovpn.core.grants import Grant
from fiovpn.services import server as svc
from fiovpn.settings import ServerSettings

NOW = 1_800_000_000.0
Env = tuple[ServerSettings, FakeWg, FakeApi]


@pytest.fixture
def lab_env(request: pytest.FixtureRequest) -> Env:
    found: Env = request.getfixturevalue("_env")
    return found


@dataclass
class GroupApi(FakeApi):
    groups: dict[str, str] = field(default_factory=dict)
    device_lists: int = 0

    def list_devices(self) -> list[Device]:
        self.device_lists += 1
        return [Device(name, device_group=g) for name, g in self.groups.items()]


def live_table(ctx: svc.ServerContext) -> str:
    """The table as the kernel holds it now: the last whole table plus the element
    deltas since (what this process applied), with the timeouts left at ``now``."""
    from fiovpn.core.firewall import render_full

    assert ctx.last_model is not None
    return render_full(ctx.last_model, ctx.clock())


def _ctx(settings: ServerSettings, fake: FakeWg, api: FakeApi, now: list[float]
         ) -> svc.ServerContext:
    ctx = ctx_for(settings, fake, api)
    ctx.clock = lambda: now[0]
    return ctx


def test_groups_learned_when_needed_and_enforced(lab_env: Env
                                                 ) -> None:
    settings, fake, base = lab_env
    api = GroupApi(rows=base.rows, groups={"dev-a": "lab", "dev-b": "prod"})
    settings.clients_file.write_text(f"{K[5]} 10.42.42.200 alice\n")
    now = [NOW]
    ctx = _ctx(settings, fake, api, now)
    svc.reconcile_once(ctx)
    assert api.device_lists == 1  # never learned: once
    svc.reconcile_once(ctx)
    assert api.device_lists == 1  # nobody uses groups: not read again
    settings.clients_file.write_text(f"{K[5]} 10.42.42.200 alice\n"
                                     f"{K[6]} 10.42.42.201 bob groups=lab\n")
    svc.reconcile_once(ctx)
    assert api.device_lists == 2
    text = live_table(ctx)
    assert "10.42.42.2 : jump grp_lab" in text and "10.42.42.3 : jump grp_prod" in text
    assert "10.42.42.201" in text.split("set grp_lab_clients")[1].split("}")[0]
    assert "10.42.42.201" not in text.split("set open_clients")[1].split("}")[0]
    api.groups["dev-a"] = "prod"  # moved in the factory: one reconcile later
    svc.reconcile_once(ctx)
    assert "10.42.42.2 : jump grp_prod" in live_table(ctx)
    assert "grp_lab" not in live_table(ctx)


def test_expired_client_leaves_and_is_journaled_once(
        lab_env: Env) -> None:
    settings, fake, api = lab_env
    settings.clients_file.write_text(
        f"{K[5]} 10.42.42.200 alice expires=2027-01-15T08:00:03Z\n")
    now = [NOW]
    ctx = _ctx(settings, fake, api, now)
    svc.reconcile_once(ctx)
    assert str(K[5]) in fake.peers
    assert "10.42.42.200 timeout 3000ms" in live_table(ctx)  # refused in the kernel too
    assert ctx.access.next_end == NOW + 3
    now[0] = NOW + 3
    report = svc.reconcile_once(ctx)
    assert str(K[5]) not in fake.peers and "10.42.42.200" not in live_table(ctx)
    assert any("expired" in s.reason for s in (report.desired.skipped if report.desired
                                               else ()))
    svc.reconcile_once(ctx)
    lines = [json.loads(t) for t in (settings.state_dir / "journal.jsonl").read_text()
             .splitlines()]
    assert [ln["action"] for ln in lines].count("expire") == 1
    assert {ln["actor"] for ln in lines} == {"daemon"}
    assert [ln["target"] for ln in lines if ln["action"] == "peer_remove"] == [
        "client 'alice'"]
    assert settings.clients_file.read_text().startswith(str(K[5]))  # the line stays


def test_grants_rendered_with_remaining_time_and_ended_never(
        lab_env: Env) -> None:
    settings, fake, api = lab_env
    settings.clients_file.write_text(f"{K[5]} 10.42.42.200 alice groups=lab\n")
    now = [NOW]
    ctx = _ctx(settings, fake, api, now)
    ctx.access.grants.save([Grant(K[5], "alice", None, "dev-b", int(NOW) + 5),
                            Grant(K[5], "alice", None, "dev-a", int(NOW) - 1)])
    svc.reconcile_once(ctx)
    assert "10.42.42.200 . 10.42.42.3 timeout 5000ms" in live_table(ctx)
    assert "10.42.42.200 . 10.42.42.2" not in live_table(ctx)
    restarted = _ctx(settings, fake, api, now)  # a new daemon, 2 s later
    now[0] = NOW + 2
    svc.reconcile_once(restarted)
    # a new process replaces the whole table: the grant with its remaining time
    assert "10.42.42.200 . 10.42.42.3 timeout 3000ms" in fake.rulesets[-1]
    assert fake.rulesets[-1].startswith("add table inet fiovpn\ndelete table")
    now[0] = NOW + 6
    svc.reconcile_once(restarted)
    assert "10.42.42.200 . 10.42.42.3" not in live_table(restarted)


