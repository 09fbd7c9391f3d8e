"""The demo scenario: a lab (sandbox factory, server, devices, two engineers) and
the flows of SPEC section 1 walked with fiovpn commands, each run inside a
role's namespace as a user would type it, each step checked.

Root-namespace code never sends a packet: every probe (ping, ssh) runs inside a
lab namespace through the lab's roles.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fiovpn.core.topology import FRESH_HANDSHAKE_S, render_svg
from fiovpn.demo.steps import (
    Reporter,
    Step,
    StepFailed,
    StepResult,
    StepRunner,
    all_verified,
)
from fiovpn.lab import Device, DeviceSpec, Engineer, Lab, Role, leftovers, wait_for

# The lab seeds the sandbox under role names (device1..), so the devices are named so too.
DEVICE_NAMES = ("device1", "device2", "device3")
FACTORY = "demo"
TOPOLOGY_FILE = "fiovpn-demo-topology.svg"
RECONCILE_INTERVAL_S = 2  # the daemon's poll interval in the demo (60 s in production)


@dataclass(frozen=True)
class DemoOptions:
    output_dir: Path
    keep: bool = False
    record_dir: Path | None = None  # where lab records live (None: the lab's default)
    base_dir: Path | None = None    # where the lab's files go (None: the system temp dir)


@dataclass
class DemoOutcome:
    results: list[StepResult]
    status: dict[str, Any] | None = None
    topology: Path | None = None
    prefix: str | None = None
    kept: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all_verified(self.results)

    @property
    def failed(self) -> StepResult | None:
        return next((r for r in self.results if r.ran and not r.ok), None)

    def peers(self, now: float | None = None) -> list[dict[str, Any]]:
        return peer_rows(self.status or {}, time.time() if now is None else now)

    def to_json(self) -> dict[str, Any]:
        failed = self.failed
        data: dict[str, Any] = {
            "ok": self.ok,
            "steps": [r.to_json() for r in self.results],
            "peers": self.peers(),
            "topology": str(self.topology) if self.topology else None,
            "seconds": round(self.seconds, 1),
            "lab": {"prefix": self.prefix, "kept": self.kept},
        }
        if failed is not None:
            data["failed_step"] = failed.name
            data["log_tail"] = failed.log
        return data


def peer_rows(status: dict[str, Any], now: float) -> list[dict[str, Any]]:
    """The status table's rows: kind, name, ip, public key, handshake age, rx, tx."""
    rows = []
    for p in status.get("peers") or ():
        hs = p.get("latest_handshake")
        age = int(now - hs) if isinstance(hs, int | float) and hs > 0 else None
        rows.append({"kind": p.get("kind"), "name": p.get("name"), "ip": p.get("ip"),
                     "public_key": p.get("public_key"), "latest_handshake": hs,
                     "handshake_age_s": None if age is None else max(0, age),
                     "rx": int(p.get("rx") or 0), "tx": int(p.get("tx") or 0)})
    return rows


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


class Demo:
    """Builds the lab and walks the flows; ``run()`` always removes the lab
    (unless ``keep``) and returns what happened."""

    def __init__(self, options: DemoOptions, reporter: Reporter) -> None:
        self.options = options
        self.reporter = reporter
        self.lab: Lab | None = None
        self.admin_ip = ""
        self.device_ips: dict[str, str] = {}
        self.d2d: list[tuple[str, str]] = []
        self.status: dict[str, Any] | None = None
        self.topology: Path | None = None

    # --- the run ---------------------------------------------------------------------

    def run(self) -> DemoOutcome:
        started = time.monotonic()
        runner = StepRunner(self.reporter, on_failure=self.daemon_log_tail)
        steps: list[tuple[str, Callable[[Step], str]]] = [
            ("build the lab", self.build),
            ("server: publish in the factory, start the daemon", self.start_server),
            ("first admin: bootstrap on the server", self.bootstrap_admin),
            ("engineer: onboarding through the admin over SSH", self.onboard_engineer),
            ("devices: enable VPN", self.enable_devices),
            ("device-to-device", self.device_to_device),
            ("ssh to a device by name", self.ssh_by_name),
            ("status and topology", self.status_and_topology),
        ]
        try:
            runner.run_all(steps)
        finally:
            if self.lab is not None and not self.options.keep:
                runner.run("tear down the lab", self.teardown, always=True)
            elif self.lab is not None:
                self.lab.save_record()
                self.lab.release()
        return DemoOutcome(
            results=runner.results, status=self.status, topology=self.topology,
            prefix=self.lab.prefix if self.lab else None,
            kept=self.options.keep and self.lab is not None,
            seconds=time.monotonic() - started)

    # --- helpers ---------------------------------------------------------------------

    @property
    def _lab(self) -> Lab:
        if self.lab is None:
            raise StepFailed("the lab was not built")
        return self.lab

    @property
    def engineer1(self) -> Engineer:
        return self._lab.engineers[0]

    @property
    def engineer2(self) -> Engineer:
        return self._lab.engineers[1]

    def daemon_log_tail(self) -> str:
        if self.lab is None or not hasattr(self.lab, "server"):
            return ""
        text = self.lab.server.daemon_log()
        return f"server daemon log, last lines:\n{_tail(text, 20)}" if text.strip() else ""

    @staticmethod
    def who(role: Role) -> str:
        return role.device_name if isinstance(role, Device) else role.name

    def fiovpn(self, step: Step, role: Role, *args: str, expect: int = 0,
               timeout: float = 60.0, shown: str | None = None) -> Any:
        """``fiovpn ARGS --json`` inside ``role``'s namespace; its parsed JSON. Fails the
        step unless it exits ``expect``."""
        step.doing(f"{self.who(role)}$ fiovpn {shown or shlex.join(args)}")
        # --json before the subcommand: it must not land after a `--` (fiovpn ssh).
        # (role.run gives each command its own session: a kept lab outlives the terminal.)
        result = role.run([self._lab.fiovpn_path, "--json", *args],
                          check=False, timeout=timeout)
        if result.returncode != expect:
            err = _tail(result.stderr or result.stdout, 8)
            last = err.splitlines()[-1] if err else f"exit code {result.returncode}"
            raise StepFailed(f"`fiovpn {shown or shlex.join(args)}` on {self.who(role)} "
                             f"exited {result.returncode} (expected {expect}): {last}",
                             log=f"`fiovpn {' '.join(args)}` stderr:\n{err}")
        try:
            return json.loads(result.stdout) if result.stdout.strip() else None
        except ValueError:
            raise StepFailed(f"`fiovpn {args[0]}` printed no JSON: "
                             f"{result.stdout[:200]!r}") from None

    def ping(self, step: Step, role: Role, ip: str, *, timeout: float = 15.0) -> None:
        step.doing(f"{self.who(role)}$ ping {ip}")
        if not role.ping(ip, timeout=timeout):
            raise StepFailed(f"{self.who(role)} cannot ping {ip} (waited {timeout:g}s)")

    def wait_server(self, step: Step, what: str, predicate: Callable[[Any], bool], *,
                    timeout: float = 30.0) -> Any:
        step.doing(f"server: waiting for {what}")
        try:
            return self._lab.server.wait_status(predicate, timeout=timeout, what=what)
        except Exception as exc:
            raise StepFailed(str(exc).splitlines()[0]) from None

    # --- the steps -------------------------------------------------------------------

    def build(self, step: Step) -> str:
        step.doing("creating namespaces: sandbox factory, server, 3 devices (wireguard-go, "
                   "sshd), 2 engineers")
        self.lab = Lab.build(
            devices=[DeviceSpec(name, vpn=False) for name in DEVICE_NAMES], engineers=2,
            admins=1, factory_name=FACTORY, keep=self.options.keep,
            record_dir=self.options.record_dir, base_dir=self.options.base_dir,
            server_settings={"interval": RECONCILE_INTERVAL_S})
        lab = self.lab
        factory = lab.factory
        assert factory is not None
        names = sorted(d["name"] for d in factory.devices())
        if names != sorted(DEVICE_NAMES):
            raise StepFailed(f"the sandbox factory lists devices {names}, "
                             f"expected {sorted(DEVICE_NAMES)}")
        return (f"lab {lab.prefix}: factory API {factory.api_url}, server "
                f"{lab.server.underlay_ip}, {len(lab.devices)} devices, "
                f"{len(lab.engineers)} engineers")

    def start_server(self, step: Step) -> str:
        server = self._lab.server
        data = self.fiovpn(step, server, "server", "enable", "--endpoint", server.endpoint)
        if data.get("public_key") != str(server.public_key):
            raise StepFailed(f"the factory got server key {data.get('public_key')}, "
                             f"expected {server.public_key}")
        step.doing("server$ fiovpn server daemon --allow-device-to-device &")
        server.start_daemon("--allow-device-to-device")
        status = self.wait_server(step, "the daemon's first sync",
                                  lambda s: bool(s.get("interface_up") and s.get("last_success")
                                                 and not s.get("last_error")))
        return (f"wireguard-server published (endpoint {server.endpoint}); daemon up on "
                f"{status.get('interface')} {status.get('server_address')}, synced")

    def bootstrap_admin(self, step: Step) -> str:
        eng = self.engineer1
        server = self._lab.server
        keys = self.fiovpn(step, eng, "keys", "generate")
        pub = keys["public_key"]
        added = self.fiovpn(step, server, "server", "clients", "add", "--public-key", pub,
                            "--name", "admin")
        self.admin_ip = added["ip"]
        init, verify = self.join(step, eng, self.admin_ip)
        if init.get("public_key") != pub:
            raise StepFailed("client init did not use the key of `fiovpn keys generate`")
        return (f"admin {self.admin_ip} connected, handshake "
                f"{verify.get('handshake_age_s')}s ago, server 10.42.42.1 answers")

    def join(self, step: Step, eng: Role, address: str) -> tuple[Any, Any]:
        """``client init --address``, ``connect``, ``verify`` (which must say connected
        and the server reachable): the client init and verify answers."""
        init = self.fiovpn(step, eng, "client", "init", "--address", address)
        self.fiovpn(step, eng, "connect")
        verify = self.fiovpn(step, eng, "verify")
        if not (verify.get("connected") and verify.get("server_reachable")):
            raise StepFailed(f"verify says {verify}")
        return init, verify

    def onboard_engineer(self, step: Step) -> str:
        admin, eng = self.engineer1, self.engineer2
        init = self.fiovpn(step, eng, "client", "init")
        pub = init["public_key"]
        check = self.fiovpn(step, eng, "check-registered", "--timeout", "2", expect=1)
        if check.get("registered") is not False:
            raise StepFailed(f"check-registered before registration says {check}")
        reg = self.fiovpn(step, admin, "register", "--public-key", pub, "--name", "eng2")
        ip = reg["ip"]
        if reg.get("public_key") != pub:
            raise StepFailed(f"register answered {reg}")
        self.join(step, eng, ip)
        return (f"eng2 was not registered; admin registered it over SSH "
                f"(root@10.42.42.1:5025) as {ip}; eng2 connected and verified")

    def enable_devices(self, step: Step) -> str:
        lab, eng = self._lab, self.engineer1
        listed = self.fiovpn(step, eng, "devices", "list")
        off = {row["name"] for row in listed if not row.get("vpn_enabled")}
        if off != set(DEVICE_NAMES):
            raise StepFailed(f"`devices list` shows VPN off on {sorted(off)}, expected all of "
                             f"{list(DEVICE_NAMES)} before enabling")
        for device in lab.devices:
            data = self.fiovpn(step, eng, "devices", "enable-vpn", device.device_name)
            self.device_ips[device.device_name] = data["vpn_ip"]
        for device in lab.devices:
            step.doing(f"{device.device_name}: fioconfig applies its new config (lab stand-in)")
            if not device.apply_factory_config():
                raise StepFailed(f"{device.device_name} found no enabled VPN config")
        wanted = set(self.device_ips.values())

        def has_devices(status: Any) -> bool:
            ips = {p.get("ip") for p in status.get("peers", []) if p.get("kind") == "device"}
            return wanted <= ips
        self.wait_server(step, "the daemon's next reconcile to add the devices", has_devices)
        for ip in self.device_ips.values():
            self.ping(step, eng, ip)
        pairs = ", ".join(f"{n} {ip}" for n, ip in self.device_ips.items())
        return f"{pairs}: peers on the server, each answers engineer1's ping"

    def device_to_device(self, step: Step) -> str:
        lab = self._lab
        a, b = lab.device(DEVICE_NAMES[0]), lab.device(DEVICE_NAMES[1])
        ip_a, ip_b = self.device_ips[a.device_name], self.device_ips[b.device_name]
        step.doing(f"{a.device_name}$ ping {ip_b}   (before: must fail)")
        if a.ping_once(ip_b):
            raise StepFailed(f"{a.device_name} reached {ip_b} before device-to-device was "
                             "enabled")
        for device in (a, b):
            data = self.fiovpn(step, self.engineer1, "devices", "enable-d2d",
                               device.device_name)
            if "10.42.42.0/24" not in data.get("allowed_ips", []):
                raise StepFailed(f"enable-d2d {device.device_name} left allowed-ips "
                                 f"{data.get('allowed_ips')}")
            if not data.get("persistent"):
                raise StepFailed(f"enable-d2d {device.device_name} did not install the hook "
                                 "that keeps it on")
        self.ping(step, a, ip_b)
        self.ping(step, b, ip_a)
        step.doing(f"{a.device_name} reboots (fioconfig's VPN handler rewrites its connection)")
        a.reboot()
        self.ping(step, a, ip_b)
        self.ping(step, b, ip_a)
        self.d2d.append((a.device_name, b.device_name))
        return (f"{a.device_name} <-> {b.device_name} ping each other through the server "
                f"(unreachable before), still after {a.device_name} rebooted")

    def ssh_by_name(self, step: Step) -> str:
        device = self._lab.device(DEVICE_NAMES[2])
        sshd_log = device.home / "sshd" / "sshd.log"

        def accepted() -> int:
            try:
                return sshd_log.read_text(errors="replace").count("Accepted publickey")
            except OSError:
                return 0
        before = accepted()
        data = self.fiovpn(step, self.engineer2, "ssh", device.device_name, "--", "uname",
                           "-a", shown=f"ssh {device.device_name} -- uname -a")
        out = str(data.get("stdout", "")) if isinstance(data, dict) else ""
        if "Linux" not in out:
            raise StepFailed(f"`uname -a` on {device.device_name} printed {out!r}")
        wait_for(lambda: accepted() > before, timeout=5,
                 what=f"{device.device_name}'s sshd to log the engineer's login")
        return f"{device.device_name} ({self.device_ips[device.device_name]}): {out.strip()}"

    def status_and_topology(self, step: Step) -> str:
        lab = self._lab
        expected = {"admin", "eng2", *DEVICE_NAMES}

        def all_live(status: Any) -> bool:
            now = time.time()
            live = {p.get("name") for p in status.get("peers", [])
                    if isinstance(p.get("latest_handshake"), int)
                    and now - p["latest_handshake"] <= FRESH_HANDSHAKE_S}
            return expected <= live
        self.wait_server(step, "every peer to show a live session", all_live, timeout=15)
        self.status = self.fiovpn(step, lab.server, "server", "status")
        peers = self.status.get("peers", []) if self.status else []
        kinds = sorted((p.get("kind"), p.get("name")) for p in peers)
        want = sorted([("client", "admin"), ("client", "eng2")]
                      + [("device", n) for n in DEVICE_NAMES])
        if kinds != want:
            raise StepFailed(f"server status lists {kinds}, expected {want}")
        out_dir = self.options.output_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        path = (out_dir / TOPOLOGY_FILE).resolve()
        svg = render_svg(self.status or {}, now=time.time(), d2d=self.d2d,
                         title=f"fiovpn demo: factory {FACTORY} (lab {lab.prefix})")
        tmp = path.with_suffix(".svg.tmp")
        tmp.write_text(svg)
        tmp.replace(path)
        self.topology = path
        return f"{len(peers)} peers, all with a live session; topology written to {path}"

    def teardown(self, step: Step) -> str:
        lab = self._lab
        step.doing("stopping processes, removing namespaces, sockets and files")
        lab.close()
        left = leftovers(lab.prefix)
        if left:
            raise StepFailed("teardown left things behind: " + "; ".join(left[:5]))
        return f"lab {lab.prefix} removed: no namespace, interface, process or socket left"
