"""The OAuth 2.0 JWT bearer flow."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import jwt

from authkit.salesforce.auth._base import (
    LOGIN_URL,
    SANDBOX_LOGIN_URL,
    FlowOptions,
    _check_str,
    _FlowKeywords,
    _MintingSession,
)
from authkit.salesforce.auth._keys import load_private_key
from authkit.storage.base import AuthStorage

if TYPE_CHECKING:
    from typing_extensions import Unpack

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_JWT_LIFETIME = 180  # Salesforce: exp at most 3 minutes ahead


def default_audience(login_url: str) -> str:
    """The JWT ``aud`` Salesforce expects for a login URL (see :class:`JwtAuth`)."""
    host = (urlsplit(login_url).hostname or "").lower()
    if host == "test.salesforce.com" or host.endswith(".sandbox.my.salesforce.com"):
        return SANDBOX_LOGIN_URL
    if host == "login.salesforce.com" or host.endswith(".my.salesforce.com"):
        return LOGIN_URL
    return login_url


class JwtAuth(_MintingSession):
    """The OAuth 2.0 JWT bearer flow: a connected app with a certificate, no secret on the wire.

    ``private_key`` is PEM text, PEM bytes, or a path to a PEM file
    (``passphrase`` if it is encrypted).  The assertion is RS256 with
    ``iss`` = client id, ``sub`` = username, ``exp`` = now + 3 minutes, and
    ``aud`` = ``audience`` if given, else derived from ``login_url``:
    ``https://test.salesforce.com`` for test.salesforce.com and sandbox My
    Domains (``*.sandbox.my.salesforce.com``), ``https://login.salesforce.com``
    for login.salesforce.com and other My Domains, and ``login_url`` itself for
    anything else (an Experience Cloud site, a local test org).
    ``client_secret`` (optional) makes the flow verify each response's
    ``signature`` and refuse a response without one.

    >>> auth = JwtAuth("3MVG9...", "etl@acme.com", "/etc/sf/server.key",
    ...                login_url="https://acme.my.salesforce.com", token_store=store)
    """

    _flow = "jwt"

    def __init__(
        self,
        client_id: str,
        username: str,
        private_key: str | bytes | os.PathLike[str],
        login_url: str = LOGIN_URL,
        audience: str | None = None,
        token_store: AuthStorage | None = None,
        *,
        passphrase: str | bytes | None = None,
        client_secret: str | None = None,
        options: FlowOptions | None = None,
        **option_overrides: Unpack[_FlowKeywords],
    ) -> None:
        _check_str(username, "username")
        if audience is not None:
            _check_str(audience, "audience")
        self._username = username
        self._key = load_private_key(private_key, passphrase)
        super().__init__(
            login_url=login_url, client_id=client_id, user=username, client_secret=client_secret,
            token_store=token_store, options=FlowOptions._merge(options, dict(option_overrides)),
        )
        self._audience = audience if audience is not None else default_audience(self.login_url)

    def _repr_user(self) -> str:
        return f", username={self._username!r}"

    @property
    def audience(self) -> str:
        return self._audience

    def _grant(self) -> dict[str, str]:
        # Real time, not the injectable clock: the server checks exp against its own clock.
        claims = {"iss": self._client_id, "sub": self._username, "aud": self._audience,
                  "exp": int(time.time()) + _JWT_LIFETIME}
        return {"grant_type": JWT_BEARER_GRANT, "assertion": jwt.encode(claims, self._key, algorithm="RS256")}

    def _user_id(self) -> str:
        return self._username
