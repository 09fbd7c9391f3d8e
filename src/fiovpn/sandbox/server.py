"""A local stand-in for the FoundriesFactory API (SPEC section 4), over real HTTP.

Same paths, JSON shapes and status codes as the API, the ``OSF-TOKEN`` header
required, pagination with absolute ``next`` URLs, and PATCH merging files into
a new config entry. Control endpoints under ``/_sandbox/`` let reliability
tests make the API fail or stall:

- ``POST /_sandbox/fail {"status": 500, "count": N, "retry_after"?: S}``: the next N
  API calls answer that status (``count`` -1: until cleared);
- ``POST /_sandbox/slow {"seconds": S, "count": N}``: the next N calls stall S seconds;
- ``POST /_sandbox/clear``: no more failures or stalls;
- ``POST /_sandbox/devices {"name", "pubkey"?, "address"?, "enabled"?, "status"?, ...}``:
  add a device (without ``pubkey`` it has published no VPN key yet; any field of
  ``POST /_sandbox/devices/<name>`` may be given too);
- ``POST /_sandbox/devices/<name> {"device-group"?, "tag"?, "is-prod"?, "up-to-date"?,
  "status"?, "owner"?, "target-name"?, "last-seen"?, "network-info"?}``: change a
  device's fields as the device or the factory would (a new group is created);
  answers the device as a list entry;
- ``POST /_sandbox/devices/<name>/checkin``: the device checked in (``last-seen`` now).
  A ``GET`` of a device's own config carrying ``X-Sandbox-Device: <name>`` (what the
  lab's devices send) is a check-in too;
- ``POST /_sandbox/oauth/login {"expires_in"?}`` -> what ``fioctl login`` gets: a new
  OAuth client and its tokens (``client_id``, ``client_secret``, ``access_token``,
  ``refresh_token``, ``token_type``, ``expires_in``); ``POST /_sandbox/oauth/revoke``:
  every OAuth token stops working (a login that must be redone);
- ``GET /_sandbox/requests`` -> ``{"requests": N, "token_requests": M}``: API and
  OAuth token requests received so far;
- ``GET /_sandbox/state`` -> the whole state (same format as the state file).

The OAuth token endpoint ``POST /oauth/token/`` (``sandbox/oauth.py``) needs no
token; its access tokens live ``--token-ttl`` seconds.

``SandboxServer`` runs it in-process (tests); ``serve()`` is ``fiovpn sandbox serve``.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import signal
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from fiovpn.core.names import validate_name
from fiovpn.errors import BadInput
from fiovpn.sandbox import oauth, queries
from fiovpn.sandbox.state import (
    DEFAULT_FACTORY,
    DEFAULT_TOKEN,
    SandboxState,
    StateFile,
    delete_file_entry,
    merge_entry,
    new_device,
    now,
    replace_entry,
)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_BODY = 4 * 1024 * 1024

_FACTORY_RE = re.compile(r"^/ota/factories/([^/]+)/(wireguard-ips|config|users)/?$")
_FACTORY_FILE_RE = re.compile(r"^/ota/factories/([^/]+)/config/([^/]+)/?$")
_DEVICE_CONFIG_RE = re.compile(r"^/ota/devices/([^/]+)/config/?$")
_DEVICE_FILE_RE = re.compile(r"^/ota/devices/([^/]+)/config/([^/]+)/?$")
_CONTROL_DEVICE_RE = re.compile(r"^devices/([^/]+)(/checkin)?$")
CHECKIN_HEADER = "X-Sandbox-Device"
_DEVICE_RE = re.compile(r"^/ota/devices/([^/]+)/?$")
_DEVICES_RE = re.compile(r"^/ota/devices/?$")


class HttpProblem(Exception):
    """An error answer: status plus the API's ``{"message", "errors"}`` body."""

    def __init__(self, status: int, message: str, errors: list[str] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []
        self.headers = headers or {}


@dataclass
class _Fault:
    status: int = 0
    count: int = 0
    retry_after: float | None = None
    message: str = ""


class Factory:
    """The sandbox's behaviour, independent of HTTP plumbing; thread-safe."""

    def __init__(self, state: SandboxState, state_file: StateFile | None,
                 token_ttl: float = oauth.DEFAULT_TTL) -> None:
        self.state = state
        self.state_file = state_file
        self.token_ttl = token_ttl
        self.lock = threading.RLock()
        self.requests = 0
        self.token_requests = 0
        self.fail = _Fault()
        self.slow_seconds = 0.0
        self.slow_count = 0
        self.stopping = threading.Event()

    # -- state ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Pick up changes another process made to the state file."""
        if self.state_file is not None and self.state_file.exists() \
                and self.state_file.changed():
            loaded = self.state_file.load()
            if loaded.token is None:
                loaded.token = self.state.token
            self.state = loaded

    def save(self) -> None:
        if self.state_file is not None:
            self.state_file.save(self.state)

    def issuer(self) -> oauth.Issuer:
        return oauth.Issuer(self.state.oauth, self.token_ttl)

    def check_token(self, headers: Any) -> None:
        token = self.state.token
        if token is None:
            return
        given = headers.get("OSF-TOKEN")
        bearer = None
        if given is None:
            auth = headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                # fioctl sends its OAuth token base64-encoded
                try:
                    bearer = base64.b64decode(auth[7:].strip(), validate=True).decode()
                except ValueError:
                    bearer = ""
        if given is None and bearer is None:
            raise HttpProblem(401, "Authentication required: send the OSF-TOKEN header")
        if given is not None:
            if not hmac.compare_digest(given.encode(), token.encode()):
                raise HttpProblem(401, "Invalid API token")
            return
        assert bearer is not None
        if hmac.compare_digest(bearer.encode(), token.encode()):
            return  # the API token sent the OAuth way
        with self.lock:
            self.refresh()
            why = self.issuer().check(bearer)
        if why is not None:
            raise HttpProblem(401, why)

    def oauth_token(self, method: str, form: dict[str, str]) -> tuple[int, Any]:
        _allow(method, "/oauth/token/", "POST")
        with self.lock:
            self.token_requests += 1
            self.refresh()
            try:
                answer = self.issuer().token(form)
            except oauth.OAuthError as exc:
                return exc.status, exc.body
            self.save()
        return 200, answer

    # -- faults --------------------------------------------------------------------------

    def take_slow(self) -> float:
        with self.lock:
            if self.slow_count == 0:
                return 0.0
            if self.slow_count > 0:
                self.slow_count -= 1
            return self.slow_seconds

    def take_fault(self) -> _Fault | None:
        with self.lock:
            if self.fail.count == 0:
                return None
            if self.fail.count > 0:
                self.fail.count -= 1
            return _Fault(self.fail.status, 1, self.fail.retry_after, self.fail.message)

    # -- control endpoints ---------------------------------------------------------------

    def control(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        name = path[len("/_sandbox/"):].strip("/")
        with self.lock:
            if method == "GET" and name == "requests":
                return 200, {"requests": self.requests, "token_requests": self.token_requests}
            if method == "GET" and name == "state":
                self.refresh()
                return 200, self.state.to_json()
            if method != "POST":
                raise HttpProblem(405, f"{method} not allowed on {path}")
            if not isinstance(body, dict):
                body = {}
            if name == "fail":
                status = _int(body.get("status", 500), "status")
                if not 400 <= status <= 599:
                    raise HttpProblem(400, "status must be 400-599")
                retry_after = body.get("retry_after")
                if retry_after is not None and not isinstance(retry_after, int | float):
                    raise HttpProblem(400, "retry_after must be a number of seconds")
                self.fail = _Fault(status, _int(body.get("count", 1), "count"), retry_after,
                                   str(body.get("message") or f"sandbox: injected {status}"))
                return 200, {"ok": True}
            if name == "slow":
                seconds = body.get("seconds", 1)
                if not isinstance(seconds, int | float) or seconds < 0:
                    raise HttpProblem(400, "seconds must be a non-negative number")
                self.slow_seconds = float(seconds)
                self.slow_count = _int(body.get("count", 1), "count")
                return 200, {"ok": True}
            if name == "clear":
                self.fail = _Fault()
                self.slow_seconds, self.slow_count = 0.0, 0
                return 200, {"ok": True}
            if name == "devices":
                return 201, self.add_device(body)
            if name == "oauth/login":
                self.refresh()
                ttl = body.get("expires_in")
                if ttl is not None and (not isinstance(ttl, int | float) or ttl <= 0):
                    raise HttpProblem(400, "expires_in must be a positive number of seconds")
                login = self.issuer().login(None if ttl is None else float(ttl))
                self.save()
                return 201, login
            if name == "oauth/revoke":
                self.refresh()
                self.issuer().revoke()
                self.save()
                return 200, {"ok": True}
            m = _CONTROL_DEVICE_RE.match(name)
            if m:
                self.refresh()
                device = self.state.device(m.group(1))
                if device is None:
                    raise HttpProblem(404, f"Device '{m.group(1)}' not found")
                if m.group(2):
                    device["last-seen"] = now()
                else:
                    self.update_device(device, body)
                self.save()
                return 200, self.state.public_device(device)
        raise HttpProblem(404, f"unknown sandbox control endpoint {path}")

    def update_device(self, device: dict[str, Any], body: dict[str, Any]) -> None:
        """Set the fields ``body`` names (validated first: a bad one changes nothing)."""
        strs = ("device-group", "tag", "status", "owner", "target-name", "last-seen")
        bools = ("is-prod", "up-to-date")
        body = dict(body)
        if "group" in body:
            body.setdefault("device-group", body.pop("group"))
        unknown = set(body) - set(strs) - set(bools) - {"network-info"}
        if unknown:
            raise HttpProblem(400, f"unknown device fields: {', '.join(sorted(unknown))}")
        for key in strs:
            if key in body and not isinstance(body[key], str):
                raise HttpProblem(400, f"{key!r} must be a string")
        for key in bools:
            if key in body and not isinstance(body[key], bool):
                raise HttpProblem(400, f"{key!r} must be true or false")
        info = body.get("network-info")
        if info is not None and (not isinstance(info, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in info.items())):
            raise HttpProblem(400, "'network-info' must be an object of strings")
        if body.get("device-group"):
            self.state.ensure_group(body["device-group"])
        if info is not None:
            body["network-info"] = {**device.get("network-info", {}), **info}
        device.update(body)

    def add_device(self, body: dict[str, Any]) -> dict[str, Any]:
        self.refresh()
        name = body.get("name")
        if not isinstance(name, str):
            raise HttpProblem(400, "a device needs a 'name'")
        if self.state.device(name) is not None:
            raise HttpProblem(409, f"device {name!r} already exists")
        strs = {k: body.get(k) for k in ("pubkey", "address", "status", "target-name",
                                          "device-group")}
        for key, value in strs.items():
            if value is not None and not isinstance(value, str):
                raise HttpProblem(400, f"{key!r} must be a string")
        try:
            device = new_device(
                name, pubkey=strs["pubkey"], address=strs["address"],
                enabled=bool(body.get("enabled", True)), status=strs["status"] or "OK",
                target_name=strs["target-name"] or "", device_group=strs["device-group"] or "",
            )
        except BadInput as exc:
            raise HttpProblem(400, str(exc)) from None
        extra = {k: v for k, v in body.items()
                 if k not in ("name", "pubkey", "address", "enabled", "status", "target-name",
                              "device-group")}
        device["owner"] = self.state.users[0]["polis-id"]
        self.update_device(device, extra)
        if device["device-group"]:
            self.state.ensure_group(device["device-group"])
        self.state.devices.append(device)
        self.save()
        return self.state.public_device(device)

    # -- the API -------------------------------------------------------------------------

    def api(self, method: str, path: str, query: dict[str, str], body: Any,
            base: str, checkin: str | None = None) -> tuple[int, Any]:
        with self.lock:
            self.refresh()
            try:
                return self._route(method, path, query, body, base, checkin)
            except BadInput as exc:  # a bad filter or sort field
                raise HttpProblem(400, exc.message) from None

    def _route(self, method: str, path: str, query: dict[str, str], body: Any,
               base: str, checkin: str | None) -> tuple[int, Any]:
        state = self.state
        m = _FACTORY_RE.match(path)
        if m:
            self._check_factory(m.group(1))
            if m.group(2) == "wireguard-ips":
                _allow(method, path, "GET")
                return 200, state.wireguard_ips()
            if m.group(2) == "users":
                _allow(method, path, "GET")
                return 200, [dict(u) for u in state.users]
            return self._config(method, path, query, body, base, state.factory_config)
        m = _FACTORY_FILE_RE.match(path)
        if m:
            self._check_factory(m.group(1))
            return self._delete_file(method, path, state.factory_config, m.group(2))
        m = _DEVICE_CONFIG_RE.match(path)
        if m:
            device = self._device(m.group(1), query)
            if method == "GET" and checkin == device["name"]:
                device["last-seen"] = now()  # the device itself fetched its config
                self.save()
            return self._config(method, path, query, body, base, device["config"])
        m = _DEVICE_FILE_RE.match(path)
        if m:
            device = self._device(m.group(1), query)
            return self._delete_file(method, path, device["config"], m.group(2))
        m = _DEVICE_RE.match(path)
        if m:
            _allow(method, path, "GET", "PATCH", "DELETE")
            device = self._device(m.group(1), query)
            if method == "PATCH":
                self._patch_device(device, body)
            elif method == "DELETE":
                state.devices.remove(device)
                self.save()
                return 200, {}
            return 200, state.public_device(device, single=method == "GET")
        if _DEVICES_RE.match(path):
            _allow(method, path, "GET")
            self._check_factory(query.get("factory", state.factory))
            chosen = queries.select(state.devices, query, state.users[0]["polis-id"])
            return 200, _page("devices", [state.public_device(d) for d in chosen],
                              path, query, base)
        raise HttpProblem(404, f"Not found: {path}")

    def _check_factory(self, factory: str) -> None:
        if factory != self.state.factory:
            raise HttpProblem(404, f"Factory '{factory}' not found")

    def _device(self, name: str, query: dict[str, str]) -> dict[str, Any]:
        """The device named in the path; with ``by-uuid=1`` the path holds its UUID."""
        self._check_factory(query.get("factory", self.state.factory))
        by_uuid = query.get("by-uuid") == "1"
        device = self.state.device_by_uuid(name) if by_uuid else self.state.device(name)
        if device is None:
            what = "with UUID" if by_uuid else ""
            raise HttpProblem(404, f"Device {what + ' ' if what else ''}'{name}' not found in "
                                   f"factory '{self.state.factory}'")
        return device

    def _patch_device(self, device: dict[str, Any], body: Any) -> None:
        """fioctl's ``devices rename`` / ``chown`` / ``set-group``: {"name"|"owner"|"group"}."""
        if not isinstance(body, dict) or not body:
            raise HttpProblem(400, "Invalid request body", ["expected a JSON object"])
        unknown = set(body) - {"name", "owner", "group"}
        if unknown or not all(isinstance(v, str) for v in body.values()):
            raise HttpProblem(400, "Invalid device update",
                              [f"unknown field {k}" for k in sorted(unknown)]
                              or ["values must be strings"])
        if "name" in body:
            try:
                validate_name(body["name"], what="device name")
            except BadInput as exc:
                raise HttpProblem(400, exc.message) from None
            if body["name"] != device["name"] and self.state.device(body["name"]):
                raise HttpProblem(409, f"Device '{body['name']}' already exists")
        if body.get("owner") and not any(u["polis-id"] == body["owner"]
                                         for u in self.state.users):
            raise HttpProblem(400, f"User '{body['owner']}' is not a member of the factory")
        if body.get("group") and self.state.group(body["group"]) is None:
            raise HttpProblem(400, f"Device group '{body['group']}' not found")
        if "group" in body:
            device["device-group"] = body["group"]
        for key in ("name", "owner"):
            if key in body:
                device[key] = body[key]
        self.save()

    def _config(self, method: str, path: str, query: dict[str, str], body: Any, base: str,
                history: list[dict[str, Any]]) -> tuple[int, Any]:
        _allow(method, path, "GET", "PATCH", "POST")
        if method == "GET":
            return 200, _page("config", history, path, query, base)
        reason, files = _patch_body(body)
        if method == "POST":  # a whole new config: exactly these files
            entry = replace_entry(history, reason, files)
        else:
            entry = merge_entry(history, reason, files)
        self.save()
        return 201, entry

    def _delete_file(self, method: str, path: str, history: list[dict[str, Any]],
                     name: str) -> tuple[int, Any]:
        _allow(method, path, "DELETE")
        entry = delete_file_entry(history, name)
        if entry is None:
            raise HttpProblem(404, f"Config file '{name}' not found")
        self.save()
        return 202, entry


def _allow(method: str, path: str, *allowed: str) -> None:
    if method not in allowed:
        raise HttpProblem(405, f"Method {method} not allowed on {path}",
                          headers={"Allow": ", ".join(allowed)})


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HttpProblem(400, f"{what} must be an integer")
    return value


def _query_int(query: dict[str, str], key: str, default: int, maximum: int) -> int:
    raw = query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpProblem(400, f"Invalid {key}: {raw!r}", [f"{key} must be an integer"]) from None
    if value < 1:
        raise HttpProblem(400, f"Invalid {key}: {raw!r}", [f"{key} must be positive"])
    return min(value, maximum)


def _page(key: str, items: list[dict[str, Any]], path: str, query: dict[str, str],
          base: str) -> dict[str, Any]:
    limit = _query_int(query, "limit", DEFAULT_LIMIT, MAX_LIMIT)
    page = _query_int(query, "page", 1, 10**9)
    start = (page - 1) * limit
    chunk = items[start:start + limit]
    nxt = None
    if start + limit < len(items):
        params = {**query, "limit": str(limit), "page": str(page + 1)}
        nxt = f"{base}{path}?{urlencode(params)}"
    return {key: chunk, "total": len(items), "next": nxt}


def _patch_body(body: Any) -> tuple[str, list[dict[str, Any]]]:
    errors: list[str] = []
    if not isinstance(body, dict):
        raise HttpProblem(400, "Invalid request body", ["expected a JSON object"])
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        errors.append("reason must be a string")
    files = body.get("files")
    if not isinstance(files, list) or not files:
        errors.append("files must be a non-empty list")
        files = []
    for n, f in enumerate(files):
        if not isinstance(f, dict):
            errors.append(f"files[{n}] must be an object")
            continue
        if not isinstance(f.get("name"), str) or not f["name"]:
            errors.append(f"files[{n}].name is required")
        if not isinstance(f.get("value"), str):
            errors.append(f"files[{n}].value must be a string")
        if not isinstance(f.get("unencrypted", False), bool):
            errors.append(f"files[{n}].unencrypted must be a boolean")
        oc = f.get("on-changed", [])
        if oc is not None and (not isinstance(oc, list)
                               or not all(isinstance(x, str) for x in oc)):
            errors.append(f"files[{n}].on-changed must be a list of strings")
    if errors:
        raise HttpProblem(400, "Invalid config", errors)
    return str(reason), files


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"
    server_version = "fiovpn-sandbox"

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write(f"sandbox: {self.address_string()} {format % args}\n")

    def _base(self) -> str:
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        return f"http://{host}"

    def _handle(self, method: str) -> None:
        factory = self.server.factory
        parts = urlsplit(self.path)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if path.rstrip("/") == "/oauth/token":
            self._token_endpoint(method)
            return
        control = path.startswith("/_sandbox/")
        if not control:
            with factory.lock:
                factory.requests += 1
        try:
            body = self._body()
            factory.check_token(self.headers)
            if control:
                status, data = factory.control(method, path, body)
            else:
                delay = factory.take_slow()
                if delay and factory.stopping.wait(delay):
                    return
                fault = factory.take_fault()
                if fault is not None:
                    headers = {}
                    if fault.retry_after is not None:
                        headers["Retry-After"] = f"{fault.retry_after:g}"
                    raise HttpProblem(fault.status, fault.message, headers=headers)
                status, data = factory.api(method, path, query, body, self._base(),
                                           self.headers.get(CHECKIN_HEADER))
        except HttpProblem as exc:
            self._send(exc.status, {"message": exc.message, "errors": exc.errors},
                       exc.headers)
            return
        except BadInput as exc:  # e.g. a state file another process broke
            self._send(500, {"message": str(exc), "errors": []})
            return
        except Exception as exc:  # a sandbox bug must still answer like an API would
            self._send(500, {"message": f"sandbox error: {exc.__class__.__name__}: {exc}",
                             "errors": []})
            return
        self._send(status, data)

    def _token_endpoint(self, method: str) -> None:
        """``POST /oauth/token/``: a form body, no API token (that is what it hands out)."""
        try:
            raw = self._raw_body()
            form = {k: v[-1] for k, v in parse_qs(raw.decode(errors="replace"),
                                                  keep_blank_values=True).items()}
            status, data = self.server.factory.oauth_token(method, form)
        except HttpProblem as exc:
            self._send(exc.status, {"message": exc.message, "errors": exc.errors},
                       exc.headers)
            return
        self._send(status, data, {"Cache-Control": "no-store"})

    def _raw_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise HttpProblem(400, "Invalid Content-Length") from None
        if length > MAX_BODY:
            raise HttpProblem(413, "Request body too large")
        return self.rfile.read(length) if length else b""

    def _body(self) -> Any:
        raw = self._raw_body()
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HttpProblem(400, "Request body is not valid JSON") from None

    def _send(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(data).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. timed out during /_sandbox/slow)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], factory: Factory, verbose: bool) -> None:
        self.factory = factory
        self.verbose = verbose
        super().__init__(address, _Handler)


class SandboxServer:
    """The sandbox factory API on ``bind:port`` (``port`` 0 picks a free one).

    ``factory``/``token`` of ``None`` mean: from the state file, else the defaults.
    With ``state_path`` the state is loaded from there when it exists (else
    generated with ``devices`` devices) and saved after every change.
    """

    def __init__(self, *, bind: str = "127.0.0.1", port: int = 0, factory: str | None = None,
                 token: str | None = None, devices: int = 5, state_path: Path | None = None,
                 verbose: bool = False, token_ttl: float = oauth.DEFAULT_TTL) -> None:
        state_file = StateFile(state_path) if state_path is not None else None
        self.token_source = "--token" if token is not None else "default"
        if state_file is not None and state_file.exists():
            state = state_file.load()
            if token is None and state.token is not None:
                self.token_source = f"the state file {state_path}"
            if factory is not None and factory != state.factory:
                raise BadInput(f"the state file {state_path} holds factory {state.factory!r}, "
                               f"not {factory!r}", code="bad_state",
                               hint="drop --factory or use another --state file")
            if token is not None:
                state.token = token
            elif state.token is None:
                state.token = DEFAULT_TOKEN
        else:
            if devices < 0:
                raise BadInput("--devices must be 0 or more", code="bad_input")
            state = SandboxState.generate(validate_name(factory or DEFAULT_FACTORY,
                                                        what="factory name"),
                                          token if token is not None else DEFAULT_TOKEN,
                                          devices)
        if token_ttl <= 0:
            raise BadInput("--token-ttl must be a positive number of seconds",
                           code="bad_input")
        self.factory = Factory(state, state_file, token_ttl)
        if state_file is not None:
            self.factory.save()
        self._bind = bind
        self._port = port
        self._verbose = verbose
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def factory_name(self) -> str:
        return self.factory.state.factory

    @property
    def token(self) -> str:
        return self.factory.state.token or DEFAULT_TOKEN

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the sandbox is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> SandboxServer:
        try:
            self._httpd = _HttpServer((self._bind, self._port), self.factory, self._verbose)
        except OSError as exc:
            raise BadInput(f"cannot listen on {self._bind}:{self._port}: {exc.strerror}",
                           code="bind_failed") from None
        self.factory.stopping.clear()
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="fiovpn-sandbox", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.factory.stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def serve(*, bind: str, port: int, factory: str | None, token: str | None, devices: int,
          state_path: Path | None, token_ttl: float = oauth.DEFAULT_TTL) -> int:
    """Run until SIGTERM/SIGINT; prints one ready line on stdout for a parent to wait on."""
    server = SandboxServer(bind=bind, port=port, factory=factory, token=token,
                           devices=devices, state_path=state_path, verbose=True,
                           token_ttl=token_ttl)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    server.start()
    try:
        # the default token is public; any other one is only named by its source
        shown = (server.token if server.token_source == "default"  # noqa: S105
                 else f"from {server.token_source}")
        print(f"sandbox factory {server.factory_name} listening on {server.url} "
              f"(token {shown})", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
