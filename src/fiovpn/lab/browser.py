"""A real headless Chromium inside a role's namespace, driven with selenium.

``python -m fiovpn.lab.browser URL DIR`` runs *inside* the namespace (started
behind the role's ``ip netns exec``): selenium starts chromedriver, which
starts chromium, so all three live in the namespace and every packet of the
page goes through that role's network (an engineer's tunnel). It opens URL
once and never reloads it; every 0.2 s it writes what the page shows to
``DIR/state.json``; a file ``DIR/shot`` holding a path asks for a screenshot
there; ``DIR/stop`` ends it.

:class:`Browser` is the test side: it starts that program in a role and
reads its files (root-namespace code sends no packet itself).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiovpn.lab.proc import Child, LabError, wait_for

if TYPE_CHECKING:
    from fiovpn.lab.roles import Role

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1600")
POLL_S = 0.2
MAX_RUN_S = 900  # the program ends itself after this, whatever the test does

# What the page shows, read in the page itself (one round trip per poll).
READ_PAGE = """
const rows = Array.from(document.querySelectorAll('#peers tbody tr'))
  .map(tr => Array.from(tr.cells).map(td => td.textContent));
return {marker: window.__fiovpnMarker || null, rows: rows,
        live: (document.getElementById('live') || {}).textContent || null,
        title: document.title,
        topology: !!document.querySelector('#topology svg')};
"""


class Browser:
    """Chromium showing ``url`` from inside ``role``'s namespace."""

    def __init__(self, role: Role, url: str) -> None:
        self.role = role
        self.url = url
        self.dir = Path(tempfile.mkdtemp(prefix="browser-", dir=role.home))
        self.child: Child | None = None

    def start(self, timeout: float = 60.0) -> None:
        self.child = self.role.spawn([sys.executable, "-m", "fiovpn.lab.browser", self.url,
                                      str(self.dir)], name="browser",
                                     log=self.dir / "browser.log")
        self.wait(lambda s: s.get("marker") is not None, timeout=timeout,
                  what=f"chromium to open {self.url}")

    def state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.dir / "state.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def wait(self, predicate: Any, *, timeout: float, what: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            if self.child is not None and not self.child.running():
                raise LabError(f"the browser exited: {self.child.log_tail(30)}")
            s = self.state()
            if s.get("error"):
                raise LabError(f"the browser failed: {s['error']}")
            return s if s and predicate(s) else None
        result: dict[str, Any] = wait_for(check, timeout=timeout, what=what, interval=0.1,
                                          detail=lambda: json.dumps(self.state())[:1500])
        return result

    def screenshot(self, path: Path, timeout: float = 30.0) -> Path:
        path.unlink(missing_ok=True)
        request = self.dir / "shot.tmp"
        request.write_text(str(path))
        request.replace(self.dir / "shot")
        wait_for(lambda: path.exists() and not (self.dir / "shot").exists(),
                 timeout=timeout, what="the screenshot")
        return path

    def stop(self) -> None:
        (self.dir / "stop").touch()
        if self.child is not None:
            with contextlib.suppress(Exception):
                self.child.popen.wait(timeout=15)
            self.child.stop(grace=5)
            self.role.lab.untrack(self.child)
            self.child = None


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def main(url: str, out: Path) -> int:  # pragma: no cover - runs inside a namespace
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=out))
    options.add_argument(f"--user-data-dir={profile}")
    service = Service(executable_path=CHROMEDRIVER, log_output=str(out / "chromedriver.log"))
    state = out / "state.json"
    deadline = time.monotonic() + MAX_RUN_S
    driver = None
    try:
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(30)
        driver.get(url)
        marker = secrets.token_hex(8)  # gone if the page ever reloads
        driver.execute_script(f"window.__fiovpnMarker = '{marker}';")
        while time.monotonic() < deadline and not (out / "stop").exists():
            shot = out / "shot"
            if shot.exists():
                driver.save_screenshot(shot.read_text().strip())
                shot.unlink()
            seen = driver.execute_script(READ_PAGE)
            _write(state, {"t": time.time(), **seen})
            time.sleep(POLL_S)
    except Exception as exc:
        _write(state, {"t": time.time(), "error": f"{type(exc).__name__}: {exc}"[:2000]})
        return 1
    finally:
        if driver is not None:
            with contextlib.suppress(Exception):
                driver.quit()
    return 0


if __name__ == "__main__":  # pragma: no cover
    os.umask(0o077)
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
