"""The OAuth 2.0 web server (authorization code) flow with PKCE."""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

import requests

from authkit.errors import AuthenticationError
from authkit.salesforce._oauth import TokenEndpoint, TokenResponse, trusted_instance_url
from authkit.salesforce.auth._base import (
    LOGIN_URL,
    FlowOptions,
    RefreshTokenCallback,
    _check_str,
    _FlowKeywords,
)
from authkit.salesforce.auth._refresh_token import RefreshTokenAuth
from authkit.storage.base import AuthStorage

if TYPE_CHECKING:
    from typing_extensions import Unpack

logger = logging.getLogger("authkit.salesforce")

AUTHORIZE_PATH = "/services/oauth2/authorize"
DEFAULT_REDIRECT_URI = "http://localhost:1717/OauthRedirect"


def pkce_pair() -> tuple[str, str]:
    """A fresh ``(code_verifier, code_challenge)``: 86 random URL-safe characters and their S256 hash."""
    verifier = secrets.token_urlsafe(64)
    return verifier, pkce_challenge(verifier)


def pkce_challenge(code_verifier: str) -> str:
    """``BASE64URL(SHA256(code_verifier))`` without padding (RFC 7636, S256)."""
    digest = hashlib.sha256(code_verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class WebServerFlow:
    """The authorization-code flow with PKCE (S256) and ``state``: a person logs in once, in a browser.

    1. :meth:`authorization_url` gives the URL to open, the ``state`` to
       expect back and the ``code_verifier`` to keep (server side, never in
       the browser).
    2. Salesforce redirects the browser to ``redirect_uri?code=...&state=...``;
       check ``state`` (:meth:`check_state`) before using the code.
    3. :meth:`exchange` trades the code and verifier for tokens and returns a
       :class:`RefreshTokenAuth` already holding the access token (and writes
       both to ``token_store`` when given, where every process finds them).

    ::

        flow = WebServerFlow(client_id, "http://localhost:1717/OauthRedirect")
        url, state, verifier = flow.authorization_url()
        ... the browser comes back with code and returned_state ...
        flow.check_state(state, returned_state)
        auth = flow.exchange(code, verifier, token_store=store)

    ``authkit salesforce login`` does all of this on a loopback redirect.
    """

    def __init__(
        self,
        client_id: str,
        redirect_uri: str = DEFAULT_REDIRECT_URI,
        client_secret: str | None = None,
        login_url: str = LOGIN_URL,
        scopes: Sequence[str] = ("api", "refresh_token"),
        *,
        options: FlowOptions | None = None,
        **option_overrides: Unpack[_FlowKeywords],
    ) -> None:
        _check_str(client_id, "client_id")
        _check_str(redirect_uri, "redirect_uri")
        parts = urlsplit(redirect_uri)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("redirect_uri must be an absolute http(s) URL, the connected app's callback URL")
        if client_secret is not None:
            _check_str(client_secret, "client_secret")
        if isinstance(scopes, str) or not all(isinstance(s, str) and s and " " not in s for s in scopes):
            raise TypeError("scopes must be a sequence of scope names, e.g. ('api', 'refresh_token')")
        self._options = FlowOptions._merge(options, dict(option_overrides))
        self._endpoint = TokenEndpoint(login_url, session=self._options.session, timeout=self._options.timeout,
                                       retries=self._options.retries, backoff=self._options.backoff)
        self.client_id = client_id
        self.redirect_uri = redirect_uri
        self.scopes = tuple(scopes)
        self._client_secret = client_secret

    def __repr__(self) -> str:
        return f"WebServerFlow(login_url={self.login_url!r}, client_id={self.client_id!r}, " \
               f"redirect_uri={self.redirect_uri!r})"

    @property
    def login_url(self) -> str:
        return self._endpoint.login_url

    def authorization_url(self, state: str | None = None) -> tuple[str, str, str]:
        """``(url, state, code_verifier)``: open ``url``; expect ``state`` back; keep the verifier secret."""
        if state is None:
            state = secrets.token_urlsafe(32)
        _check_str(state, "state")
        verifier, challenge = pkce_pair()
        query = {"response_type": "code", "client_id": self.client_id, "redirect_uri": self.redirect_uri,
                 "state": state, "code_challenge": challenge, "code_challenge_method": "S256"}
        if self.scopes:
            query["scope"] = " ".join(self.scopes)
        return f"{self.login_url}{AUTHORIZE_PATH}?{urlencode(query)}", state, verifier

    @staticmethod
    def check_state(expected: str, returned: str | None) -> None:
        """``AuthenticationError`` unless the redirect carried the ``state`` we sent (CSRF protection)."""
        if not returned or not secrets.compare_digest(expected.encode(), returned.encode()):
            raise AuthenticationError(
                "the login redirect carried the wrong state: it does not answer this login "
                "(a stale browser tab, or a forged request); log in again",
                error="invalid_state", error_description="state mismatch")

    def exchange(
        self,
        code: str,
        code_verifier: str,
        token_store: AuthStorage | None = None,
        *,
        username: str | None = None,
        on_refresh_token: RefreshTokenCallback | Sequence[RefreshTokenCallback] | None = None,
    ) -> RefreshTokenAuth:
        """Trade the authorization ``code`` for tokens: a :class:`RefreshTokenAuth` holding them.

        The code is single-use and never re-sent.  With ``token_store`` the
        tokens are kept there under ``username`` (default: the user's username
        from Salesforce's identity service), so ``RefreshTokenAuth(client_id,
        None, token_store=store, username=...)`` finds them in any process.
        """
        _check_str(code, "code")
        _check_str(code_verifier, "code_verifier")
        form = {"grant_type": "authorization_code", "code": code, "client_id": self.client_id,
                "redirect_uri": self.redirect_uri, "code_verifier": code_verifier}
        if self._client_secret is not None:
            form["client_secret"] = self._client_secret
        response = self._endpoint.request(lambda: form, grant="authorization_code", idempotent=False,
                                          client_secret=self._client_secret)
        if response.refresh_token is None:
            raise AuthenticationError(
                "the login returned no refresh token: add the refresh_token scope (and 'Perform requests at "
                "any time') to the connected app and to scopes=", error="invalid_scope",
                error_description="no refresh token issued")
        if token_store is not None and username is None:
            username = self._username(response)
        auth = RefreshTokenAuth(self.client_id, response.refresh_token, self._client_secret, self.login_url,
                                token_store, username=username, on_refresh_token=on_refresh_token,
                                options=self._options)
        auth._seed(response)
        return auth

    def _username(self, response: TokenResponse) -> str:
        """The username from the identity URL (``id``); the user id if that cannot be read."""
        identity = response.identity_url
        if identity is None:
            raise AuthenticationError("the token response has no identity URL (id): pass username=",
                                      error="invalid_response")
        fallback = identity.rstrip("/").rsplit("/", 1)[-1]
        try:
            trusted_instance_url(f"{urlsplit(identity).scheme}://{urlsplit(identity).netloc}", self.login_url)
            reply = self._endpoint.session.get(identity, headers={"Authorization": f"Bearer {response.access_token}",
                                                                  "Accept": "application/json"},
                                               timeout=self._endpoint.timeout, allow_redirects=False)
            data = reply.json() if reply.status_code == 200 else None
        except (requests.RequestException, ValueError, TypeError):
            data = None
        name = data.get("username") or data.get("preferred_username") if isinstance(data, dict) else None
        if isinstance(name, str) and name:
            return name
        logger.warning("could not read the username from the identity service; the token is stored under "
                       "the user id")
        return fallback
