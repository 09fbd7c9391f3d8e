"""The firewall: apply a rendered nftables ruleset atomically; switch on forwarding.

Forwarding is switched on for the server's own network namespace (the
``/proc/sys`` file of the namespace the daemon runs in) and is never switched
off again: other things on the host may rely on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fiovpn.adapters.runner import CommandFailed, Runner
from fiovpn.errors import PermanentError

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


@dataclass
class Nft:
    runner: Runner
    ip_forward_file: Path = IP_FORWARD

    def apply(self, ruleset: str) -> None:
        """Replace the table in one ``nft -f -`` transaction (all or nothing)."""
        try:
            self.runner.run(["nft", "-f", "-"], input=ruleset, timeout=60.0)
        except CommandFailed as exc:
            # nft ends its report with the offending line and a ^^^ marker: the
            # line that says what is wrong is the one with "Error:".
            out = exc.result.stderr or exc.result.stdout
            errors = [ln.strip() for ln in out.splitlines() if "Error:" in ln]
            if not errors:
                raise
            raise PermanentError(f"nft refused the ruleset: {errors[0]}",
                                 code="firewall_failed") from None

    def table_generation(self, table: str, set_name: str) -> str | None:
        """The comment of set ``set_name`` of table ``inet <table>`` (the token the
        table was made with), or None when there is no such table or set."""
        result = self.runner.run(["nft", "-j", "list", "set", "inet", table, set_name],
                                 check=False, timeout=30.0)
        if not result.ok:
            return None
        try:
            items = json.loads(result.stdout)["nftables"]
        except (ValueError, KeyError, TypeError):
            return None
        for item in items if isinstance(items, list) else ():
            found = item.get("set") if isinstance(item, dict) else None
            if isinstance(found, dict) and found.get("name") == set_name:
                comment = found.get("comment")
                return comment if isinstance(comment, str) and comment else None
        return None

    def delete_table(self, table: str) -> None:
        self.runner.run(["nft", "delete", "table", "inet", table], check=False)

    def enable_forwarding(self) -> bool:
        """Switch IPv4 forwarding on; True when it was off."""
        try:
            if self.ip_forward_file.read_text().strip() == "1":
                return False
            self.ip_forward_file.write_text("1\n")
        except OSError as exc:
            raise PermanentError(f"cannot enable IPv4 forwarding via {self.ip_forward_file}: "
                                 f"{exc.strerror}", code="forwarding_failed",
                                 hint="run the server daemon as root") from None
        return True
