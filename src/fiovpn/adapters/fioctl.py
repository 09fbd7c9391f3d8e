"""fioctl's own settings, read as fioctl reads them, and its OAuth login refreshed
as fioctl refreshes it (SPEC section 10).

fioctl (viper) reads ``$FIOCTL_CONFIG`` else ``~/.config/fioctl.yaml``;
``$FIOCTL_TOKEN`` and ``$FIOCTL_FACTORY`` override the file's ``token`` and
``factory``; ``server.url`` is the API base URL. A ``fioctl login`` keeps an
OAuth2 token in ``clientcredentials`` (``access_token``, ``refresh_token``,
``client_id``, ``client_secret``, ``created`` (RFC 3339), ``expires_in``
(seconds), ``url``, ``token_type``); when ``now - created > expires_in`` fioctl
POSTs the ``refresh_token`` grant to ``<url>/token/`` and writes the answer's
``access_token``, ``refresh_token``, ``token_type``, ``expires_in`` and a new
``created`` back.

fiovpn does the same, a little earlier (``REFRESH_MARGIN``), and writes back
under a lock and atomically: only those values are edited in the file's text,
so every other key, comment and the order stay byte for byte. Under the lock
the file is read again first: a refresh another process (fioctl, a second
fiovpn) just wrote is used instead of spending the rotated refresh token twice.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fiovpn.adapters.fioctl_env import CONFIG_ENV as CONFIG_ENV
from fiovpn.adapters.fioctl_env import FACTORY_ENV as FACTORY_ENV
from fiovpn.adapters.fioctl_env import TOKEN_ENV as TOKEN_ENV
from fiovpn.adapters.fioctl_env import config_path as config_path
from fiovpn.adapters.fs import atomic_write, locked
from fiovpn.errors import AuthError, BadInput

log = logging.getLogger("fiovpn.fioctl")

OAUTH_URL = "https://app.foundries.io/oauth"  # fioctl's default clientcredentials.url
REFRESH_MARGIN = 30.0  # refresh this many seconds before expiry (at most a tenth of it)
LOGIN_HINT = "run `fioctl login` again (it writes a fresh login to {path})"


def _text(value: Any) -> str:
    """A YAML scalar as fioctl would see it (PyYAML turns unquoted dates into datetime)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


@dataclass(frozen=True)
class OAuthLogin:
    """The ``clientcredentials`` block of a ``fioctl login``."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False, default="")
    client_id: str = ""
    client_secret: str = field(repr=False, default="")
    token_type: str = "bearer"  # noqa: S105 (the OAuth token type, not a secret)
    created: str = ""
    expires_in: float = 0.0
    url: str = OAUTH_URL

    @classmethod
    def from_yaml(cls, block: Mapping[str, Any]) -> OAuthLogin:
        try:
            expires_in = float(block.get("expires_in") or 0)
        except (TypeError, ValueError):
            expires_in = 0.0
        return cls(
            access_token=_text(block.get("access_token")),
            refresh_token=_text(block.get("refresh_token")),
            client_id=_text(block.get("client_id")),
            client_secret=_text(block.get("client_secret")),
            token_type=_text(block.get("token_type")) or "bearer",
            created=_text(block.get("created")),
            expires_in=expires_in,
            url=_text(block.get("url")) or OAUTH_URL,
        )

    def created_at(self) -> float | None:
        if not self.created:
            return None
        try:
            when = datetime.fromisoformat(self.created.replace("Z", "+00:00"))
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()

    def expires_at(self) -> float | None:
        """When the access token expires (None: fioctl would never call it expired)."""
        created = self.created_at()
        if created is None or not self.expires_in:
            return None
        return created + self.expires_in

    def needs_refresh(self, now: float | None = None) -> bool:
        """Expired, or about to be: fioctl refreshes once expired; fiovpn a little
        earlier, so a token does not run out between the check and the request."""
        if not self.access_token:
            return True
        expires = self.expires_at()
        if expires is None:
            return False
        margin = min(REFRESH_MARGIN, self.expires_in / 10)
        return (time.time() if now is None else now) >= expires - margin

    def token_url(self) -> str:
        return self.url.rstrip("/") + "/token/"

    def refreshed(self, answer: Mapping[str, Any], now: float | None = None) -> OAuthLogin:
        """The login after a token endpoint's answer, as fioctl's updateConfig sets it."""
        stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC)
        try:
            expires_in = float(answer.get("expires_in") or 0)
        except (TypeError, ValueError):
            expires_in = 0.0
        return replace(
            self,
            access_token=str(answer.get("access_token") or ""),
            refresh_token=str(answer.get("refresh_token") or ""),
            token_type=str(answer.get("token_type") or self.token_type),
            expires_in=expires_in,
            created=stamp.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        )


@dataclass(frozen=True)
class FioctlConfig:
    """What fiovpn takes from fioctl's settings (file + ``FIOCTL_*`` variables)."""

    path: Path
    exists: bool = False
    factory: str | None = None
    factory_source: str = ""
    token: str | None = field(default=None, repr=False)
    token_source: str = ""
    server_url: str | None = None
    login: OAuthLogin | None = None


def parse_text(text: str, source: str) -> dict[str, Any]:
    """fioctl's YAML as a mapping (an empty file is an empty mapping)."""
    import yaml  # here: reading settings names (config_path, the env) needs no YAML

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BadInput(f"fioctl's config {source} is not valid YAML: {exc}",
                       code="bad_fioctl_config",
                       hint="fix the file, or run `fioctl login` to rewrite it") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadInput(f"fioctl's config {source} is not a YAML mapping",
                       code="bad_fioctl_config")
    return data


def _read_file(path: Path) -> tuple[str | None, dict[str, Any]]:
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None, {}
    except (PermissionError, IsADirectoryError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read fioctl's config {path}: {exc.__class__.__name__}",
                       code="bad_fioctl_config") from None
    return text, parse_text(text, str(path))


def load(env: Mapping[str, str] | None = None) -> FioctlConfig:
    """fioctl's settings: its file, with ``$FIOCTL_TOKEN`` / ``$FIOCTL_FACTORY`` on top."""
    env = os.environ if env is None else env
    path = config_path(env)
    text, data = _read_file(path)
    factory = _text(data.get("factory")) or None
    factory_source = f"fioctl's config {path}" if factory else ""
    token = _text(data.get("token")) or None
    token_source = f"the token in {path}" if token else ""
    server = data.get("server")
    server_url = _text(server.get("url")) or None if isinstance(server, dict) else None
    creds = data.get("clientcredentials")
    login = OAuthLogin.from_yaml(creds) if isinstance(creds, dict) else None
    if login is not None and not (login.access_token or login.client_id):
        login = None
    if env.get(FACTORY_ENV, "").strip():
        factory, factory_source = env[FACTORY_ENV].strip(), f"${FACTORY_ENV}"
    if env.get(TOKEN_ENV, "").strip():
        token, token_source = env[TOKEN_ENV].strip(), f"${TOKEN_ENV}"
    return FioctlConfig(path=path, exists=text is not None, factory=factory,
                        factory_source=factory_source, token=token,
                        token_source=token_source, server_url=server_url, login=login)


# --- writing a refreshed login back ------------------------------------------------------

_WRITTEN_KEYS = ("access_token", "refresh_token", "token_type", "expires_in", "created")
_PLAIN = re.compile(r"^[A-Za-z0-9_./+=~-]+$")


def _scalar(value: str | float) -> str:
    """A YAML scalar for a value we write: plain when it reads back as the same string,
    else double-quoted (a JSON string is a valid YAML double-quoted scalar)."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    import yaml

    if _PLAIN.match(value) and yaml.safe_load(value) == value:
        return value
    return json.dumps(value)


def _values(login: OAuthLogin) -> dict[str, str | float]:
    return {"access_token": login.access_token, "refresh_token": login.refresh_token,
            "token_type": login.token_type, "expires_in": login.expires_in,
            "created": login.created}


def edit_text(text: str, login: OAuthLogin) -> str | None:
    """``text`` with the ``clientcredentials`` values of ``login`` written in place
    (missing keys appended to the block); None when the block is not in the plain
    block style this can edit safely."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines)
                  if re.match(r"^clientcredentials:\s*(#.*)?$", line.rstrip("\r\n"))), None)
    if start is None:
        return None
    end = start + 1
    indent: str | None = None
    found: dict[str, int] = {}
    while end < len(lines):
        line = lines[end]
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            lead = line[:len(line) - len(line.lstrip(" "))]
            if not lead:
                break  # the next top-level key
            if indent is None:
                indent = lead
            if lead == indent:
                m = re.match(r"^\s*([A-Za-z_]+):", line)
                if m and m.group(1) in _WRITTEN_KEYS:
                    found[m.group(1)] = end
        end += 1
    if indent is None:
        return None
    values = _values(login)
    newline = "\r\n" if lines[start].endswith("\r\n") else "\n"
    for key, n in found.items():
        m = re.match(r"^(\s*[A-Za-z_]+:)(\s*)(.*?)(\s+#.*)?(\r?\n)?$", lines[n])
        if m is None:
            return None
        rest = m.group(3)
        if rest.startswith(("|", ">", "&", "*", "!")) or (rest and rest[0] in "\"'" and
                                                           rest[-1] != rest[0]):
            return None  # a block, anchor or multi-line scalar: not ours to edit
        lines[n] = f"{m.group(1)} {_scalar(values[key])}{m.group(4) or ''}" \
                   f"{m.group(5) or newline}"
    missing = [k for k in _WRITTEN_KEYS if k not in found]
    last = max([start, *(i for i in range(start + 1, end) if lines[i].strip()
                         and not lines[i].lstrip().startswith("#"))])
    if not lines[last].endswith("\n"):
        lines[last] += newline
    insert = [f"{indent}{k}: {_scalar(values[k])}{newline}" for k in missing]
    lines[last + 1:last + 1] = insert
    return "".join(lines)


def _redump(data: dict[str, Any], login: OAuthLogin) -> str:
    block = data.get("clientcredentials")
    block = dict(block) if isinstance(block, dict) else {}
    block.update(_values(login))
    data = {**data, "clientcredentials": block}
    import yaml

    return str(yaml.safe_dump(data, default_flow_style=False, sort_keys=False))


def render_refreshed(text: str, login: OAuthLogin, source: str) -> str:
    """The config file's new text: edited in place where possible, otherwise the
    whole mapping dumped again (comments lost, every key kept). Either way it is
    checked to read back with exactly the new values and every other key."""
    data = parse_text(text, source)
    new = edit_text(text, login)
    if new is not None and _reads_back(new, data, login, source):
        return new
    log.warning("fioctl's config %s: its clientcredentials block is not in plain block "
                "style; rewriting the whole file (comments in it are lost)", source)
    new = _redump(data, login)
    if not _reads_back(new, data, login, source):  # pragma: no cover - yaml round trip
        raise BadInput(f"cannot write the refreshed login back to {source}",
                       code="bad_fioctl_config")
    return new


def _reads_back(new: str, old: Mapping[str, Any], login: OAuthLogin, source: str) -> bool:
    try:
        data = parse_text(new, source)
    except BadInput:
        return False
    creds = data.get("clientcredentials")
    if not isinstance(creds, dict):
        return False
    back = OAuthLogin.from_yaml(creds)
    if _values(back) != _values(login):
        return False
    others_old = {k: v for k, v in old.items() if k != "clientcredentials"}
    others_new = {k: v for k, v in data.items() if k != "clientcredentials"}
    old_creds = old.get("clientcredentials")
    kept = {k: v for k, v in (old_creds if isinstance(old_creds, dict) else {}).items()
            if k not in _WRITTEN_KEYS}
    return others_old == others_new and all(creds.get(k) == v for k, v in kept.items())


# --- the refresh ---------------------------------------------------------------------------

TokenPost = Callable[[str, Mapping[str, str]], tuple[int, Any]]
"""POST a form to a URL -> (status, parsed JSON body or None); raises OSError-like
errors for no answer. The HTTP adapter supplies it."""


class LoginExpired(AuthError):
    """A fioctl login whose token cannot be refreshed: only `fioctl login` helps."""


def _expired(path: Path, why: str) -> LoginExpired:
    return LoginExpired(f"the fioctl login in {path} has expired and cannot be refreshed: "
                        f"{why}", code="login_expired", hint=LOGIN_HINT.format(path=path))


def refresh_login(path: Path, login: OAuthLogin, post: TokenPost, *,
                  force: bool = False) -> OAuthLogin:
    """A fresh access token for the login in ``path`` (``login`` is what the caller
    has), written back to the file; under the file's lock, re-reading it first.

    ``force``: refresh even if the clock says the token is still good (the API
    refused it). Raises ``LoginExpired`` when the token endpoint says no."""
    with locked(path):
        text, data = _read_file(path)
        creds = data.get("clientcredentials")
        current = OAuthLogin.from_yaml(creds) if isinstance(creds, dict) else login
        if current.access_token != login.access_token and not current.needs_refresh():
            log.info("fioctl's config %s holds a login refreshed meanwhile; using it", path)
            return current  # another process refreshed it: its refresh token rotated
        if not force and not current.needs_refresh():
            return current
        url = current.token_url()
        if not current.access_token and current.client_id:
            # a login without a token yet: fioctl gets one with the client's credentials
            form = {"grant_type": "client_credentials", "client_id": current.client_id,
                    "client_secret": current.client_secret}
        elif current.refresh_token:
            form = {"grant_type": "refresh_token", "client_id": current.client_id,
                    "client_secret": current.client_secret,
                    "refresh_token": current.refresh_token}
        else:
            raise _expired(path, "it holds no refresh token")
        status, body = post(url, form)
        if status != 200 or not isinstance(body, dict) or not body.get("access_token"):
            detail = ""
            if isinstance(body, dict):
                detail = str(body.get("error_description") or body.get("error")
                             or body.get("message") or "")
            raise _expired(path, f"{url} answered HTTP {status}"
                                 f"{': ' + detail if detail else ''}")
        new = current.refreshed(body)
        if text is not None:
            mode = path.stat().st_mode & 0o777
            atomic_write(path, render_refreshed(text, new, str(path)), mode=mode)
        log.info("refreshed the fioctl login in %s (expires in %gs)", path, new.expires_in)
        return new
