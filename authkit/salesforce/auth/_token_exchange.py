"""The OAuth 2.0 token exchange flow (RFC 8693)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

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

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"

# The subject token types Salesforce's token exchange handlers accept.
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:JWT"  # as Salesforce spells it
REFRESH_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:refresh_token"
SAML2_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:saml2"

_SHORT_TYPES = {"access_token": ACCESS_TOKEN_TYPE, "id_token": ID_TOKEN_TYPE, "jwt": JWT_TOKEN_TYPE,
                "refresh_token": REFRESH_TOKEN_TYPE, "saml2": SAML2_TOKEN_TYPE}


class TokenExchangeAuth(_MintingSession):
    """RFC 8693 token exchange: a token from your identity provider becomes a Salesforce token.

    The org maps the ``subject_token`` to a user through its token exchange
    handler (an Apex class enabled on the connected app).
    ``subject_token_type`` is a URN such as
    ``urn:ietf:params:oauth:token-type:access_token`` (or its last part,
    ``"access_token"``, ``"id_token"``, ``"jwt"``, ``"refresh_token"``,
    ``"saml2"``).  ``subject_token`` may be a callable returning the current
    token, so every mint sends a fresh one from the identity provider.
    ``username`` names the identity in ``token_store``; without it the
    identity is a hash of the subject token (a callable needs ``username``
    to share through a store).  ``scopes`` are requested when given; with
    ``refresh_token`` among them Salesforce may return a refresh token,
    which goes to the store and to ``on_refresh_token``.

    >>> auth = TokenExchangeAuth("3MVG9...", idp_token, "access_token",
    ...                          login_url="https://acme.my.salesforce.com", token_store=store,
    ...                          username="pat@acme.com")
    """

    _flow = "token_exchange"
    _idempotent = True  # the subject token is not spent by a lost response

    def __init__(
        self,
        client_id: str,
        subject_token: str | Callable[[], str],
        subject_token_type: str,
        login_url: str = LOGIN_URL,
        client_secret: str | None = None,
        token_store: AuthStorage | None = None,
        *,
        username: str | None = None,
        scopes: Sequence[str] | None = None,
        on_refresh_token: RefreshTokenCallback | Sequence[RefreshTokenCallback] | None = None,
        options: FlowOptions | None = None,
        **option_overrides: Unpack[_FlowKeywords],
    ) -> None:
        if not callable(subject_token):
            _check_str(subject_token, "subject_token")
        _check_str(subject_token_type, "subject_token_type")
        token_type = _SHORT_TYPES.get(subject_token_type.lower(), subject_token_type)
        if not token_type.startswith("urn:"):
            raise ValueError(f"subject_token_type must be a token type URN or one of {', '.join(_SHORT_TYPES)}")
        if username is not None:
            _check_str(username, "username")
        if scopes is not None:
            if isinstance(scopes, str) or not all(isinstance(s, str) and s and " " not in s for s in scopes):
                raise TypeError("scopes must be a sequence of scope names, e.g. ['api', 'refresh_token']")
        if username is not None:
            user = username
        elif callable(subject_token):
            if token_store is not None:
                raise ValueError("a callable subject_token needs username= to share its token through a store")
            user = "callable"
        else:
            user = "st:" + hashlib.sha256(subject_token.encode()).hexdigest()[:32]
        self._username = username
        self._subject_token = subject_token
        self._subject_token_type = token_type
        self._scopes = None if scopes is None else " ".join(scopes)
        super().__init__(
            login_url=login_url, client_id=client_id, user=user, client_secret=client_secret,
            token_store=token_store, options=FlowOptions._merge(options, dict(option_overrides)),
            on_refresh_token=on_refresh_token,
        )
        self._user = user

    def _repr_user(self) -> str:
        return "" if self._username is None else f", username={self._username!r}"

    @property
    def subject_token_type(self) -> str:
        return self._subject_token_type

    def _grant(self) -> dict[str, str]:
        subject = self._subject_token() if callable(self._subject_token) else self._subject_token
        if not isinstance(subject, str) or not subject:
            raise TypeError("the subject_token callable must return a non-empty str")
        form = {"grant_type": TOKEN_EXCHANGE_GRANT, "client_id": self._client_id, "subject_token": subject,
                "subject_token_type": self._subject_token_type}
        if self._client_secret is not None:
            form["client_secret"] = self._client_secret
        if self._scopes is not None:
            form["scope"] = self._scopes
        return form

    def _user_id(self) -> str:
        return self._user
