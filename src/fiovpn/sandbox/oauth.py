"""The sandbox's OAuth2 token endpoint, with short-lived tokens, so the refresh path
of a ``fioctl login`` is exercised for real (``sandbox serve --token-ttl S``).

fioctl POSTs a form to ``<clientcredentials.url>/token/`` (here
``<base>/oauth/token/``): ``grant_type=client_credentials`` with
``client_id``/``client_secret`` (``fioctl login``), or ``grant_type=refresh_token``
with those and the ``refresh_token``. The answer is ``{"access_token",
"refresh_token", "token_type", "expires_in", "scope"}``. Refresh tokens rotate:
one used is gone, so two processes spending the same one cannot both succeed.
API requests carry ``Authorization: Bearer base64(access_token)``; an expired
or unknown access token is a 401.

State (in the sandbox state file, key ``oauth``)::

    {"clients": {client_id: client_secret},
     "access": {access_token: expires_epoch}, "refresh": {refresh_token: client_id}}
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Mapping
from typing import Any

DEFAULT_TTL = 3600.0
SCOPE = "devices:read devices:read-update"


class OAuthError(Exception):
    """An OAuth error answer: status plus RFC 6749's ``{"error", "error_description"}``."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.body = {"error": error, "error_description": description}


def empty_state() -> dict[str, Any]:
    return {"clients": {}, "access": {}, "refresh": {}}


def check_state(data: Any) -> dict[str, Any]:
    """A loaded ``oauth`` value, or a fresh one when missing or malformed."""
    if not isinstance(data, dict) or not all(isinstance(data.get(k), dict)
                                             for k in ("clients", "access", "refresh")):
        return empty_state()
    return data


class Issuer:
    """Issues, rotates and checks tokens in ``state`` (the caller holds the lock)."""

    def __init__(self, state: dict[str, Any], ttl: float = DEFAULT_TTL) -> None:
        self.state = state
        self.ttl = ttl

    def _issue(self, client_id: str, ttl: float | None = None) -> dict[str, Any]:
        ttl = self.ttl if ttl is None else ttl
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        now = time.time()
        # forget expired access tokens so the state does not grow forever
        self.state["access"] = {t: e for t, e in self.state["access"].items() if e > now}
        self.state["access"][access] = now + ttl
        self.state["refresh"][refresh] = client_id
        return {"access_token": access, "refresh_token": refresh, "token_type": "bearer",
                "expires_in": ttl, "scope": SCOPE}

    def login(self, ttl: float | None = None) -> dict[str, Any]:
        """What ``fioctl login`` ends with: a new client and its first tokens."""
        client_id, secret = f"fio-{secrets.token_hex(8)}", secrets.token_urlsafe(24)
        self.state["clients"][client_id] = secret
        answer = self._issue(client_id, ttl)
        return {"client_id": client_id, "client_secret": secret, **answer}

    def revoke(self) -> None:
        """Every access and refresh token stops working (the clients stay)."""
        self.state["access"].clear()
        self.state["refresh"].clear()

    def token(self, form: Mapping[str, str]) -> dict[str, Any]:
        """The token endpoint; raises ``OAuthError``."""
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        known = self.state["clients"].get(client_id)
        if known is None or not hmac.compare_digest(str(known).encode(), secret.encode()):
            raise OAuthError(401, "invalid_client", "unknown client or wrong client_secret")
        grant = form.get("grant_type", "")
        if grant == "client_credentials":
            return self._issue(client_id)
        if grant == "refresh_token":
            refresh = form.get("refresh_token", "")
            if self.state["refresh"].get(refresh) != client_id:
                raise OAuthError(400, "invalid_grant",
                                 "the refresh token is invalid, expired or already used")
            del self.state["refresh"][refresh]  # rotation: a refresh token works once
            return self._issue(client_id)
        raise OAuthError(400, "unsupported_grant_type", f"grant_type {grant!r} not supported")

    def check(self, access_token: str) -> str | None:
        """None when the access token is good, else why it is refused."""
        expires = self.state["access"].get(access_token)
        if expires is None:
            return "Invalid OAuth token"
        if time.time() >= float(expires):
            return "OAuth token has expired"
        return None
