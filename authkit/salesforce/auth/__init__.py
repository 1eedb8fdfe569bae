"""Salesforce auth sessions: where a bearer token comes from, and when to get a new one.

Salesforce access tokens carry no expiry: a session dies after the org's idle
timeout and the API answers ``401 INVALID_SESSION_ID``.  An :class:`AuthSession`
hands out a token, and after a 401 the caller says ``invalidate(token)``; the
next :meth:`~AuthSession.access_token` mints (or finds) a new one::

    auth = JwtAuth("3MVG9...", "integration@acme.com", "/etc/sf/server.key")
    token = auth.access_token()               # one token request, then cached
    ... a 401 with `token` ...
    auth.invalidate(token)                    # only if it is still the current token
    token = auth.access_token()               # exactly one new token request
    auth.revoke()                             # log out: Salesforce, the cache and the store forget it

Flows, one module each: :class:`StaticTokenAuth`, :class:`JwtAuth`,
:class:`RefreshTokenAuth`, :class:`ClientCredentialsAuth`, :class:`PasswordAuth`,
:class:`TokenExchangeAuth`, and :class:`WebServerFlow` (the browser login that
yields a :class:`RefreshTokenAuth`).  The minting flows share one base that owns
the cache, single flight (any number of threads on an empty or invalidated
cache cause one token request), compare-and-swap ``invalidate``, the shared
token store (``token_store=`` any :class:`~authkit.storage.AuthStorage`, so every
process on every host mints once) and ``revoke()``::

    store = authkit.open_storage("redis://cache:6379/0")
    auth = JwtAuth(client_id, username, key, token_store=store)   # one login for the fleet

Options every minting flow takes live in one :class:`FlowOptions` (``options=``),
each also accepted as a keyword: ``session``, ``timeout``, ``max_token_age``,
``retries``, ``backoff``, ``lock_timeout``, ``clock``.  Flows that can receive a
refresh token (:class:`RefreshTokenAuth`, :class:`TokenExchangeAuth`) also take
``on_refresh_token``.
"""

from __future__ import annotations

from authkit.salesforce.auth._base import LOGIN_URL, SANDBOX_LOGIN_URL, AuthSession, FlowOptions
from authkit.salesforce.auth._client_credentials import ClientCredentialsAuth
from authkit.salesforce.auth._jwt import JWT_BEARER_GRANT, JwtAuth, default_audience
from authkit.salesforce.auth._password import PasswordAuth
from authkit.salesforce.auth._refresh_token import RefreshTokenAuth
from authkit.salesforce.auth._static import StaticTokenAuth
from authkit.salesforce.auth._token_exchange import TOKEN_EXCHANGE_GRANT, TokenExchangeAuth
from authkit.salesforce.auth._web_server import DEFAULT_REDIRECT_URI, WebServerFlow, pkce_challenge

__all__ = [
    "AuthSession",
    "FlowOptions",
    "StaticTokenAuth",
    "JwtAuth",
    "RefreshTokenAuth",
    "ClientCredentialsAuth",
    "PasswordAuth",
    "TokenExchangeAuth",
    "WebServerFlow",
    "JWT_BEARER_GRANT",
    "TOKEN_EXCHANGE_GRANT",
    "LOGIN_URL",
    "SANDBOX_LOGIN_URL",
    "DEFAULT_REDIRECT_URI",
    "default_audience",
    "pkce_challenge",
]
