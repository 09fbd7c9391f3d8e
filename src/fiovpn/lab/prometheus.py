"""A real Prometheus server (Debian's ``prometheus``) inside a role's namespace,
scraping given targets every second; queried through its HTTP API from inside
that namespace."""

from __future__ import annotations

import json
import tempfile
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiovpn.adapters.runner import require_tool
from fiovpn.lab.proc import Child, LabError, wait_for

if TYPE_CHECKING:
    from fiovpn.lab.roles import Role

LISTEN = "127.0.0.1:9090"  # the role namespace's own loopback


class Prometheus:
    def __init__(self, role: Role, targets: Sequence[str], *, job: str = "fiovpn") -> None:
        self.role = role
        self.dir = Path(tempfile.mkdtemp(prefix="prometheus-", dir=role.home))
        self.config = self.dir / "prometheus.yml"
        self.config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            f"scrape_configs:\n  - job_name: {job}\n    static_configs:\n"
            f"      - targets: [{', '.join(json.dumps(t) for t in targets)}]\n")
        self.child: Child | None = None

    def start(self, timeout: float = 60.0) -> None:
        self.child = self.role.spawn(
            [require_tool("prometheus"), f"--config.file={self.config}",
             f"--storage.tsdb.path={self.dir / 'data'}", f"--web.listen-address={LISTEN}",
             "--log.level=warn"], name="prometheus", log=self.dir / "prometheus.log")

        def ready() -> bool:
            if self.child is not None and not self.child.running():
                raise LabError(f"prometheus exited: {self.child.log_tail()}")
            return self.role.http("GET", f"http://{LISTEN}/-/ready", timeout=3).ok
        wait_for(ready, timeout=timeout, what="prometheus to be ready", interval=0.5,
                 detail=lambda: self.child.log_tail() if self.child else "")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector of ``promql`` (``[{"metric": {...}, "value": [t, "v"]}]``)."""
        url = f"http://{LISTEN}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        reply = self.role.http("GET", url, timeout=5)
        if not reply.ok:
            raise LabError(f"prometheus query {promql!r}: HTTP {reply.status} {reply.body[:300]}")
        data = reply.json()
        if data.get("status") != "success":
            raise LabError(f"prometheus query {promql!r} failed: {data}")
        return list(data["data"]["result"])

    def targets(self) -> list[dict[str, Any]]:
        reply = self.role.http("GET", f"http://{LISTEN}/api/v1/targets", timeout=5)
        return list(reply.json()["data"]["activeTargets"]) if reply.ok else []

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(grace=5)
            self.role.lab.untrack(self.child)
            self.child = None
