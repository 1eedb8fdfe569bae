"""The OAuth 2.0 refresh token flow."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from authkit.errors import AuthenticationError
from authkit.salesforce._oauth import TokenResponse
from authkit.salesforce.auth._base import (
    LOGIN_URL,
    FlowOptions,
    RefreshTokenCallback,
    _check_str,
    _FlowKeywords,
    _MintingSession,
)
from authkit.storage.base import AuthStorage

if TYPE_CHECKING:
    from typing_extensions import Unpack

logger = logging.getLogger("authkit.salesforce")


class RefreshTokenAuth(_MintingSession):
    """The refresh token flow: a refresh token from an earlier web-server login.

    Salesforce may rotate the refresh token on every use; the new one is
    adopted, written to ``token_store`` and passed to ``on_refresh_token``.
    With a store, the newest refresh token in the store wins over the one
    given here.  A refresh grant is never re-sent once it may have reached the
    server (it may have spent the refresh token); only a refused connection is
    retried.  ``username`` (optional) names the identity in the store; without
    it the identity is a hash of the initial refresh token.

    ``refresh_token`` may be ``None`` when the store already holds it (after
    ``authkit salesforce login`` or :meth:`WebServerFlow.exchange`): then
    ``token_store`` and ``username`` say where to find it.

    >>> auth = RefreshTokenAuth("3MVG9...", refresh_token, client_secret="...",
    ...                         on_refresh_token=save_to_vault)
    >>> auth = RefreshTokenAuth("3MVG9...", None, token_store=store, username="me@acme.com")
    """

    _flow = "refresh_token"
    _idempotent = False
    _has_refresh_token = True

    def __init__(
        self,
        client_id: str,
        refresh_token: str | None,
        client_secret: str | None = None,
        login_url: str = LOGIN_URL,
        token_store: AuthStorage | None = None,
        *,
        username: str | None = None,
        on_refresh_token: RefreshTokenCallback | Sequence[RefreshTokenCallback] | None = None,
        options: FlowOptions | None = None,
        **option_overrides: Unpack[_FlowKeywords],
    ) -> None:
        if refresh_token is not None:
            _check_str(refresh_token, "refresh_token")
        elif token_store is None or username is None:
            raise ValueError("refresh_token is required, unless token_store and username say where it is kept")
        if username is not None:
            _check_str(username, "username")
        self._username = username
        if username is not None:
            user = username
        else:
            assert refresh_token is not None
            user = "rt:" + hashlib.sha256(refresh_token.encode()).hexdigest()[:32]
        super().__init__(
            login_url=login_url, client_id=client_id, user=user, client_secret=client_secret,
            token_store=token_store, options=FlowOptions._merge(options, dict(option_overrides)),
            on_refresh_token=on_refresh_token,
        )
        self._user = user
        self._own_refresh_token = refresh_token
        self._refresh_token = refresh_token
        self._revoked = False

    def _repr_user(self) -> str:
        return "" if self._username is None else f", username={self._username!r}"

    @property
    def username(self) -> str | None:
        """The identity's name in ``token_store`` (``None``: a hash of the refresh token names it)."""
        return self._username

    @property
    def refresh_token(self) -> str | None:
        """The newest refresh token this session knows (``None`` after :meth:`revoke`).  A secret."""
        return self._refresh_token

    def _grant(self) -> dict[str, str]:
        assert self._refresh_token is not None
        form = {"grant_type": "refresh_token", "client_id": self._client_id, "refresh_token": self._refresh_token}
        if self._client_secret is not None:
            form["client_secret"] = self._client_secret
        return form

    def _request(self) -> TokenResponse:
        if self._refresh_token is None:
            what = ("it was revoked: log in again (authkit salesforce login)" if self._revoked else
                    "none was given and the token store holds none for this user: log in first "
                    "(authkit salesforce login --token-store)")
            raise AuthenticationError(f"no refresh token: {what}", error="invalid_grant",
                                      error_description="no refresh token")
        try:
            return super()._request()
        except AuthenticationError as exc:
            # The store's refresh token was refused, but we were given a different one (a
            # re-authorization since): try that one, once. A bad credential still never loops.
            if (exc.error != "invalid_grant" or self._own_refresh_token is None
                    or self._refresh_token == self._own_refresh_token):
                raise
            logger.warning("%s: the stored refresh token was refused; trying the configured one", type(self).__name__)
            self._refresh_token = self._own_refresh_token
            return super()._request()

    def _after_refresh_token_revoked(self) -> None:
        self._refresh_token = None
        self._own_refresh_token = None
        self._revoked = True

    def _seed(self, response: TokenResponse) -> None:
        """Start from a token response already in hand (the web-server flow's code exchange)."""
        with self._mint_lock:
            if self._shared is not None:
                with self._shared.lock():
                    entry, _ = self._accept(response)
            else:
                entry, _ = self._accept(response)
            self._entry = entry
            self._instance_url = entry.instance_url

    def _user_id(self) -> str:
        return self._user


__all__ = ["RefreshTokenAuth"]
