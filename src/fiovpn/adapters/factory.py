"""``FactoryClient``: the FoundriesFactory API over httpx (SPEC section 4).

The only module that talks HTTP to the factory. It maps every failure onto the
error hierarchy so callers decide by class, not by status code:

- 5xx, 429, timeouts and connection errors are retried with exponential
  backoff (429 honours ``Retry-After``), then raise ``ApiTemporaryError``;
- 401/403 raise ``AuthError`` naming where the token came from (never the token);
- 404 raises ``ApiNotFound`` naming the factory or device;
- any other status outside 200/201/202/204 raises ``ApiError`` with the API's message;
- a body that is not the JSON shape fioctl expects raises ``BadResponse``.

Settings follow SPEC section 10: fiovpn flags > ``FIOVPN_*`` env > fiovpn's
TOML > ``FIOCTL_*`` env > fioctl's config (``adapters/fioctl.py``) > defaults,
for the factory, the API URL (fioctl's ``server.url``) and the credentials:
``--api-token-file``, ``$FIOVPN_API_TOKEN``, ``$FIOCTL_TOKEN``, fioctl's
``token:``, else its OAuth login (``clientcredentials``), sent the way fioctl
sends it and refreshed the way fioctl refreshes it: before it expires, and
once more when the API refuses it (``FioctlLogin``).
"""

from __future__ import annotations

import base64
import email.utils
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from fiovpn import __version__
from fiovpn.adapters import fioctl
from fiovpn.adapters.factory_api import ConfigEntry, ConfigFile, Device, WireguardIp
from fiovpn.core.addresses import parse_ip
from fiovpn.core.keys import Key
from fiovpn.core.names import validate_name
from fiovpn.errors import (
    ApiError,
    ApiNotFound,
    ApiTemporaryError,
    AuthError,
    BadInput,
    BadResponse,
    FiovpnError,
)
from fiovpn.settings import API_TOKEN_ENV, DEFAULT_API_URL, ClientSettings, ServerSettings

log = logging.getLogger("fiovpn.factory")

TOKEN_ENV = API_TOKEN_ENV
FACTORY_ENV = "FIOVPN_FACTORY"
OK_STATUSES = frozenset({200, 201, 202, 204})
DEFAULT_PAGE_LIMIT = 500
_MAX_PAGES = 100_000


def fioctl_config_path(env: Mapping[str, str] | None = None) -> Path:
    """fioctl's config file: ``$FIOCTL_CONFIG``, else ``~/.config/fioctl.yaml``."""
    return fioctl.config_path(env)


def _check_token(token: str, source: str) -> str:
    # A header value: printable ASCII without spaces (a pasted newline or a
    # non-ASCII character would otherwise fail deep inside httpx).
    if not token.isascii() or not token.isprintable() or " " in token:
        raise BadInput(f"the API token from {source} contains characters a token cannot "
                       "have (spaces, control or non-ASCII characters)", code="bad_token")
    return token


@dataclass(frozen=True)
class Credentials:
    """An API token and where it came from (the source is safe to print, the token is not)."""

    token: str = field(repr=False)
    source: str
    bearer: bool = False  # fioctl's OAuth access token: `Authorization: Bearer base64(token)`

    def __post_init__(self) -> None:
        _check_token(self.token, self.source)

    def headers(self) -> dict[str, str]:
        if self.bearer:
            encoded = base64.b64encode(self.token.encode()).decode()
            return {"Authorization": f"Bearer {encoded}"}
        return {"OSF-TOKEN": self.token}

    def renew(self) -> bool:
        """A fixed token cannot be renewed."""
        return False

    @property
    def login_hint(self) -> str | None:
        return None


def _post_form(url: str, form: Mapping[str, str]) -> tuple[int, Any]:
    """POST to an OAuth token endpoint (never with the API token)."""
    try:
        response = httpx.post(url, data=dict(form), timeout=15.0,
                              headers={"User-Agent": f"fiovpn/{__version__}",
                                       "Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise ApiTemporaryError(f"cannot reach the OAuth token endpoint {url} to refresh "
                                f"the fioctl login ({exc.__class__.__name__}: {exc})",
                                hint="check the network; the login is refreshed on the "
                                     "next try") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    return response.status_code, body


class FioctlLogin:
    """The OAuth token of a ``fioctl login``, kept fresh: refreshed before it expires
    and once more when the API refuses it, written back to fioctl's config."""

    bearer = True

    def __init__(self, path: Path, login: fioctl.OAuthLogin,
                 post: fioctl.TokenPost = _post_form) -> None:
        self.path = path
        self.login = login
        self.source = f"the fioctl login in {path}"
        self._post = post

    def __repr__(self) -> str:
        return f"FioctlLogin(path={str(self.path)!r})"

    def headers(self) -> dict[str, str]:
        if self.login.needs_refresh():
            self.login = fioctl.refresh_login(self.path, self.login, self._post)
        _check_token(self.login.access_token, self.source)
        encoded = base64.b64encode(self.login.access_token.encode()).decode()
        return {"Authorization": f"Bearer {encoded}"}

    def renew(self) -> bool:
        """The API refused the token: refresh it even if the clock says it is good."""
        self.login = fioctl.refresh_login(self.path, self.login, self._post, force=True)
        return True

    @property
    def login_hint(self) -> str:
        return fioctl.LOGIN_HINT.format(path=self.path)


TokenSource = Credentials | FioctlLogin


def load_credentials(token_file: Path | None,
                     env: Mapping[str, str] | None = None) -> TokenSource:
    """The API credentials: ``--api-token-file``, ``$FIOVPN_API_TOKEN``,
    ``$FIOCTL_TOKEN``, fioctl's ``token:``, else its OAuth login."""
    env = os.environ if env is None else env
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except FileNotFoundError:
            raise BadInput(f"API token file {token_file} does not exist",
                           code="no_token") from None
        except (PermissionError, IsADirectoryError, UnicodeDecodeError) as exc:
            raise BadInput(f"cannot read API token file {token_file}: {exc.__class__.__name__}",
                           code="no_token") from None
        if not token:
            raise BadInput(f"API token file {token_file} is empty", code="no_token")
        return Credentials(token, f"the token file {token_file}")
    if env.get(TOKEN_ENV, "").strip():
        return Credentials(env[TOKEN_ENV].strip(), f"${TOKEN_ENV}")
    config = fioctl.load(env)
    if config.token:
        return Credentials(config.token, config.token_source)
    if config.login is not None:
        return FioctlLogin(config.path, config.login)
    raise AuthError(
        "no FoundriesFactory API token found", code="no_token",
        hint=f"pass --api-token-file PATH, set {TOKEN_ENV} or {fioctl.TOKEN_ENV}, or run "
             f"`fioctl login` (which writes {config.path})",
    )


def resolve_factory(factory: str | None, env: Mapping[str, str] | None = None) -> str:
    """The factory from settings (flags/env/TOML), else ``$FIOCTL_FACTORY``, else
    fioctl's config."""
    env = os.environ if env is None else env
    name = factory or env.get(FACTORY_ENV) or fioctl.load(env).factory
    if not name:
        raise BadInput("no factory given", code="no_factory",
                       hint=f"pass --factory NAME, set {FACTORY_ENV} or {fioctl.FACTORY_ENV}, "
                            "or run `fioctl login`")
    return validate_name(name, what="factory name")


def resolve_api_url(api_url: str | None, env: Mapping[str, str] | None = None) -> str:
    """The API base URL from settings, else fioctl's ``server.url``, else the default."""
    return api_url or fioctl.load(env).server_url or DEFAULT_API_URL


def _check_base_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadInput(f"invalid API URL {url!r}: expected http(s)://HOST[:PORT]",
                       code="bad_api_url")
    return url.rstrip("/")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _api_message(response: httpx.Response) -> str:
    """The API's own words: ``message``/``msg`` plus ``errors``, or the text body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        parts: list[str] = []
        for key in ("message", "msg", "detail"):
            if isinstance(body.get(key), str) and body[key]:
                parts.append(body[key])
                break
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            parts.append("; ".join(str(e) for e in errors))
        elif isinstance(errors, dict) and errors:
            parts.append("; ".join(f"{k}: {v}" for k, v in errors.items()))
        if parts:
            return " - ".join(parts)
    text = response.text.strip()
    if len(text) > 300:
        text = text[:297] + "..."
    return text or response.reason_phrase or "no details"


def _str_field(obj: Mapping[str, Any], key: str, what: str, *, required: bool = False) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise BadResponse(f"{what}: missing {key!r}")
        return ""
    if not isinstance(value, str):
        raise BadResponse(f"{what}: {key!r} should be a string, got {type(value).__name__}")
    return value


def _parse_config(body: Any, what: str) -> list[ConfigEntry]:
    if not isinstance(body, dict) or not isinstance(body.get("config"), list):
        raise BadResponse(f"{what}: expected an object with a 'config' list")
    entries: list[ConfigEntry] = []
    for n, raw in enumerate(body["config"]):
        where = f"{what} entry {n}"
        if not isinstance(raw, dict) or not isinstance(raw.get("files", []), list):
            raise BadResponse(f"{where}: expected an object with a 'files' list")
        files: list[ConfigFile] = []
        for m, f in enumerate(raw.get("files", [])):
            fwhere = f"{where} file {m}"
            if not isinstance(f, dict):
                raise BadResponse(f"{fwhere}: expected an object")
            on_changed = f.get("on-changed") or []
            if not isinstance(on_changed, list) or not all(isinstance(x, str)
                                                           for x in on_changed):
                raise BadResponse(f"{fwhere}: 'on-changed' should be a list of strings")
            unencrypted = f.get("unencrypted", True)
            if not isinstance(unencrypted, bool):
                raise BadResponse(f"{fwhere}: 'unencrypted' should be true or false")
            files.append(ConfigFile(
                name=_str_field(f, "name", fwhere, required=True),
                value=_str_field(f, "value", fwhere),
                unencrypted=unencrypted,
                on_changed=tuple(on_changed),
            ))
        entries.append(ConfigEntry(
            created_at=_str_field(raw, "created-at", where),
            reason=_str_field(raw, "reason", where),
            files=tuple(files),
        ))
    return entries


def _bool_field(obj: Mapping[str, Any], key: str) -> bool:
    value = obj.get(key)
    return value if isinstance(value, bool) else False


def _parse_device(raw: Any, what: str) -> Device:
    if not isinstance(raw, dict):
        raise BadResponse(f"{what}: expected an object")
    group = _str_field(raw, "device-group", what)
    if not group and isinstance(raw.get("group"), dict):  # a single GET's group object
        group = _str_field(raw["group"], "name", f"{what} group")
    return Device(
        name=_str_field(raw, "name", what, required=True),
        uuid=_str_field(raw, "uuid", what),
        status=_str_field(raw, "status", what),
        last_seen=_str_field(raw, "last-seen", what),
        target_name=_str_field(raw, "target-name", what),
        device_group=group,
        tag=_str_field(raw, "tag", what),
        owner=_str_field(raw, "owner", what),
        is_prod=_bool_field(raw, "is-prod"),
        up_to_date=_bool_field(raw, "up-to-date"),
        raw=dict(raw),
    )


def _parse_wireguard_ip(raw: Any, n: int) -> WireguardIp:
    what = f"wireguard-ips entry {n}"
    if not isinstance(raw, dict):
        raise BadResponse(f"{what}: expected an object")
    name = _str_field(raw, "name", what, required=True)
    ip: IPv4Address | None = None
    pubkey: Key | None = None
    # One device with a broken value must not hide the rest of the fleet:
    # keep the row without the bad field and say so in the log.
    if raw.get("ip"):
        try:
            ip = parse_ip(str(raw["ip"]), what=f"VPN address of {name}")
        except BadInput as exc:
            log.warning("ignoring device %s: %s", name, exc)
    if raw.get("pubkey"):
        try:
            pubkey = Key.parse_public(str(raw["pubkey"]), what=f"public key of {name}")
        except BadInput as exc:
            log.warning("ignoring device %s: %s", name, exc)
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        enabled = str(enabled).lower() not in ("0", "false", "no", "")
    return WireguardIp(name=name, ip=ip, enabled=enabled, pubkey=pubkey)


class FactoryClient:
    """The FoundriesFactory API calls fiovpn makes; implements ``FactoryApi``."""

    def __init__(
        self,
        factory: str,
        credentials: TokenSource,
        *,
        base_url: str = "https://api.foundries.io",
        timeout: float = 15.0,
        attempts: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        max_retry_after: float = 60.0,
        page_limit: int = DEFAULT_PAGE_LIMIT,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.factory = validate_name(factory, what="factory name")
        self.credentials = credentials
        self.base_url = _check_base_url(base_url)
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.page_limit = page_limit
        self._sleep = sleep
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout),
            transport=transport,
            headers={"User-Agent": f"fiovpn/{__version__}", "Accept": "application/json"},
            follow_redirects=False,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FactoryClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FactoryClient(factory={self.factory!r}, base_url={self.base_url!r})"

    # -- the calls of SPEC section 4 --------------------------------------------------------

    def wireguard_ips(self) -> list[WireguardIp]:
        body = self._request("GET", self._factory_url("wireguard-ips/"),
                             what=self._what_factory())
        if not isinstance(body, list):
            raise BadResponse("wireguard-ips: expected a list")
        return [_parse_wireguard_ip(raw, n) for n, raw in enumerate(body)]

    def factory_config(self) -> list[ConfigEntry]:
        body = self._request("GET", self._factory_url("config/"), what=self._what_factory())
        return _parse_config(body, f"config of factory {self.factory!r}")

    def patch_factory_config(self, reason: str, files: list[ConfigFile]) -> None:
        self._request("PATCH", self._factory_url("config/"), what=self._what_factory(),
                      json={"reason": reason, "files": [f.to_json() for f in files]})

    def device_config(self, device: str) -> list[ConfigEntry]:
        body = self._request("GET", self._device_url(device, "config/"),
                             params={"factory": self.factory}, what=self._what_device(device))
        return _parse_config(body, f"config of device {device!r}")

    def patch_device_config(self, device: str, reason: str, files: list[ConfigFile]) -> None:
        self._request("PATCH", self._device_url(device, "config/"),
                      params={"factory": self.factory}, what=self._what_device(device),
                      json={"reason": reason, "files": [f.to_json() for f in files]})

    def get_device(self, device: str) -> Device:
        body = self._request("GET", self._device_url(device, ""),
                             params={"factory": self.factory}, what=self._what_device(device))
        return _parse_device(body, f"device {device!r}")

    def list_devices(self, *, group: str | None = None,
                     tag: str | None = None) -> list[Device]:
        url: str | None = f"{self.base_url}/ota/devices/"
        first = {"factory": self.factory, "limit": str(self.page_limit), "page": "1"}
        if group:  # fioctl's filter names (devices list --by-group / --by-tag)
            first["group"] = group
        if tag:
            first["match_tag"] = tag
        params: dict[str, str] | None = first
        devices: list[Device] = []
        seen: set[str] = set()
        while url is not None:
            if len(seen) >= _MAX_PAGES:
                raise BadResponse("device list: too many pages")
            body = self._request("GET", url, params=params, what=self._what_factory())
            seen.add(url if params is None else f"{url}?{params}")
            if not isinstance(body, dict) or not isinstance(body.get("devices"), list):
                raise BadResponse("device list: expected an object with a 'devices' list")
            devices.extend(_parse_device(d, f"device list entry {len(devices) + n}")
                           for n, d in enumerate(body["devices"]))
            url = self._next_url(body.get("next"))
            params = None  # `next` carries every query parameter itself
            if url is not None and url in seen:
                raise BadResponse(f"device list: 'next' points back to {url}")
        return devices

    # -- plumbing --------------------------------------------------------------------------

    def _what_factory(self) -> str:
        return f"factory {self.factory!r}"

    def _what_device(self, device: str) -> str:
        return f"device {device!r} in factory {self.factory!r}"

    def _factory_url(self, tail: str) -> str:
        return f"{self.base_url}/ota/factories/{self.factory}/{tail}"

    def _device_url(self, device: str, tail: str) -> str:
        validate_name(device, what="device name")
        return f"{self.base_url}/ota/devices/{device}/{tail}"

    def _next_url(self, value: Any) -> str | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise BadResponse("device list: 'next' should be a URL or null")
        url = urljoin(self.base_url + "/", value)
        # The token goes wherever `next` points: only ever to the API itself.
        base, nxt = urlsplit(self.base_url), urlsplit(url)
        if (nxt.scheme, nxt.netloc) != (base.scheme, base.netloc):
            raise BadResponse(f"device list: 'next' points to another server ({nxt.netloc}); "
                              "not following it with the API token")
        return url

    def _delay(self, attempt: int) -> float:
        return float(min(self.max_backoff, self.backoff * (2 ** attempt)))

    def _request(self, method: str, url: str, *, what: str,
                 params: Mapping[str, str] | None = None, json: Any = None) -> Any:
        last_problem = ""
        delay: float | None = None
        renewed = False
        attempt = 0
        while attempt < self.attempts:
            if attempt:
                self._sleep(delay if delay is not None else self._delay(attempt - 1))
            attempt += 1
            delay = None
            headers = self.credentials.headers()  # a fioctl login refreshes itself here
            try:
                response = self._http.request(method, url, params=params, json=json,
                                              headers=headers)
            except httpx.TimeoutException:
                last_problem = "timed out"
                log.info("%s %s: timed out (attempt %d/%d)", method, url, attempt,
                         self.attempts)
                continue
            except httpx.TransportError as exc:
                last_problem = f"connection failed ({exc.__class__.__name__}: {exc})"
                log.info("%s %s: %s (attempt %d/%d)", method, url, last_problem, attempt,
                         self.attempts)
                continue
            status = response.status_code
            if status in OK_STATUSES:
                return self._json(response, what)
            if status == 401 and not renewed and self.credentials.renew():
                # fioctl's login: the token may have been revoked or the clocks differ
                log.info("%s %s: HTTP 401; refreshed %s, trying once more", method, url,
                         self.credentials.source)
                renewed = True
                attempt -= 1  # not a failed attempt: the same request with the new token
                continue
            if status >= 500 or status in (408, 429):
                last_problem = f"HTTP {status}: {_api_message(response)}"
                if status == 429:
                    after = _retry_after(response.headers.get("Retry-After"))
                    if after is not None:
                        delay = min(after, self.max_retry_after)
                log.info("%s %s: %s (attempt %d/%d)", method, url, last_problem, attempt,
                         self.attempts)
                continue
            raise self._error(response, what)
        raise ApiTemporaryError(
            f"the FoundriesFactory API at {self.base_url} is unavailable: {last_problem} "
            f"(gave up after {self.attempts} attempts)",
            hint="try again later; check --api-url and the network",
            delay=delay if delay is not None else self._delay(self.attempts - 1),
        )

    def _error(self, response: httpx.Response, what: str) -> FiovpnError:
        status = response.status_code
        message = _api_message(response)
        if status in (401, 403):
            refused = "refused" if status == 401 else "does not allow this with"
            hint = (f"check that token: it must be valid for {what} and allow reading "
                    "and updating devices and the factory config")
            if self.credentials.login_hint and status == 401:
                hint = self.credentials.login_hint
            return AuthError(
                f"the FoundriesFactory API {refused} the token from "
                f"{self.credentials.source} (HTTP {status}: {message})",
                status=status, hint=hint,
            )
        if status == 404:
            return ApiNotFound(f"{what} not found (HTTP 404: {message})", status=status,
                               hint="check the name and --factory")
        return ApiError(f"the FoundriesFactory API rejected the request for {what} "
                        f"(HTTP {status}: {message})", status=status)

    @staticmethod
    def _json(response: httpx.Response, what: str) -> Any:
        if response.status_code == 204 or not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError:
            raise BadResponse(f"the FoundriesFactory API answered for {what} with something "
                              f"that is not JSON: {response.text[:100]!r}") from None


def build_factory_client(
    settings: ServerSettings | ClientSettings,
    *,
    env: Mapping[str, str] | None = None,
    transport: httpx.BaseTransport | None = None,
    **options: Any,
) -> FactoryClient:
    """A ``FactoryClient`` from loaded settings: factory, API URL and token resolved
    as SPEC section 4 says (settings, env, then fioctl's config)."""
    env = os.environ if env is None else env
    factory = resolve_factory(settings.factory, env)
    credentials = load_credentials(settings.api_token_file, env)
    return FactoryClient(factory, credentials, base_url=resolve_api_url(settings.api_url, env),
                         transport=transport, **options)
