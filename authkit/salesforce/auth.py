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

Flows: :class:`StaticTokenAuth`, :class:`JwtAuth`, :class:`RefreshTokenAuth`,
:class:`ClientCredentialsAuth`, :class:`PasswordAuth`.  Every minting flow is
single-flight (any number of threads on an empty or invalidated cache cause one
token request), and with ``token_store=`` any :class:`~authkit.storage.AuthStorage`
shares its token with every process on every host::

    store = authkit.open_storage("redis://cache:6379/0")
    auth = JwtAuth(client_id, username, key, token_store=store)   # one login for the fleet

Options every minting flow takes (keyword-only): ``token_store``, ``session``
(a :class:`requests.Session`), ``timeout`` (seconds or ``(connect, read)``),
``max_token_age`` (seconds or timedelta: re-mint proactively after that long),
``on_refresh_token`` (callable, or list of callables, given each new refresh
token), ``retries`` / ``backoff`` (transient token-endpoint failures),
``lock_timeout`` (how long to wait for another process's mint), ``clock``.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests

from authkit.errors import AuthenticationError, ConfigurationError
from authkit.models import AuthToken, utcnow
from authkit.salesforce import events
from authkit.salesforce.oauth import Timeout, TokenEndpoint, TokenResponse, normalize_url
from authkit.salesforce.token_store import SharedToken
from authkit.storage.base import AuthStorage, Clock

__all__ = [
    "AuthSession",
    "StaticTokenAuth",
    "JwtAuth",
    "RefreshTokenAuth",
    "ClientCredentialsAuth",
    "PasswordAuth",
    "JWT_BEARER_GRANT",
]

logger = logging.getLogger("authkit.salesforce")

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
LOGIN_URL = "https://login.salesforce.com"
SANDBOX_LOGIN_URL = "https://test.salesforce.com"
_JWT_LIFETIME = 180  # Salesforce: exp at most 3 minutes ahead

RefreshTokenCallback = Callable[[str], object]


class AuthSession(abc.ABC):
    """Where a Salesforce bearer token comes from.

    ``access_token()`` returns a token believed valid, minting one when
    needed; ``instance_url`` is the org's API origin (no trailing slash);
    ``invalidate(stale_token)`` drops ``stale_token`` if it is still the
    current one (compare-and-swap), so a burst of 401s causes one new token.
    """

    @abc.abstractmethod
    def access_token(self) -> str:
        """A bearer token; refreshes when the cached one was invalidated."""

    @property
    @abc.abstractmethod
    def instance_url(self) -> str:
        """The org's origin, e.g. ``https://acme.my.salesforce.com``."""

    def invalidate(self, stale_token: str) -> None:
        """Forget ``stale_token`` if it is still current.  The default does nothing."""
        if not isinstance(stale_token, str):
            raise TypeError("stale_token must be a str")


class StaticTokenAuth(AuthSession):
    """A token obtained elsewhere (the Salesforce CLI, a web login).  It cannot refresh:
    after a 401 the client has no new token to retry with (``SessionExpiredError``).

    >>> auth = StaticTokenAuth(token, "https://acme.my.salesforce.com")
    """

    def __init__(self, access_token: str, instance_url: str) -> None:
        if not isinstance(access_token, str):
            raise TypeError("access_token must be a str")
        if not access_token:
            raise ValueError("access_token must not be empty")
        self._access_token = access_token
        self._instance_url = normalize_url(instance_url, "instance_url")

    def __repr__(self) -> str:
        return f"StaticTokenAuth(instance_url={self._instance_url!r})"

    def access_token(self) -> str:
        return self._access_token

    @property
    def instance_url(self) -> str:
        return self._instance_url


@dataclass(frozen=True, repr=False)
class _Entry:
    """The cached token: what ``access_token()`` answers without a lock."""

    access_token: str
    instance_url: str
    fresh_until: float | None  # POSIX seconds: comparing floats keeps the warm path cheap


class _MintingSession(AuthSession):
    """Caching, single-flight, the shared store, rotation: everything but the grant.

    A flow implements :meth:`_grant` (the form to POST) and says whether its
    grant may be re-sent (``_idempotent``).
    """

    _flow = ""
    _idempotent = True

    def __init__(
        self,
        *,
        login_url: str,
        client_id: str,
        user: str,
        client_secret: str | None,
        token_store: AuthStorage | None,
        session: requests.Session | None,
        timeout: Timeout,
        max_token_age: float | timedelta | None,
        on_refresh_token: RefreshTokenCallback | Sequence[RefreshTokenCallback] | None,
        retries: int,
        backoff: float,
        lock_timeout: float,
        clock: Clock | None,
    ) -> None:
        _check_str(client_id, "client_id")
        if client_secret is not None:
            _check_str(client_secret, "client_secret")
        self._endpoint = TokenEndpoint(login_url, session=session, timeout=timeout, retries=retries, backoff=backoff)
        self._client_id = client_id
        self._client_secret = client_secret
        self._clock: Clock = clock or utcnow
        # The warm path compares floats: time.time() unless a test injects a clock.
        self._now: Callable[[], float] = time.time if clock is None else (lambda: self._clock().timestamp())
        self._max_token_age = _as_timedelta(max_token_age)
        self._callbacks = _as_callbacks(on_refresh_token)
        self._refresh_token: str | None = None
        self._shared: SharedToken | None = None
        if token_store is not None:
            if not isinstance(lock_timeout, (int, float)) or isinstance(lock_timeout, bool) or lock_timeout < 0:
                raise ValueError("lock_timeout must be a number of seconds >= 0")
            self._shared = SharedToken(
                token_store,
                flow=self._flow,
                login_url=self._endpoint.login_url,
                client_id=client_id,
                user=user,
                max_token_age=self._max_token_age,
                clock=self._clock,
                lock_timeout=float(lock_timeout),
                lock_ttl=_mint_budget(timeout, retries),
            )
        self._entry: _Entry | None = None
        self._instance_url: str | None = None
        self._mint_lock = threading.Lock()
        self._owns_session = session is None
        _LIVE.add(self)
        self._attempts = 0
        self._failure: Exception | None = None

    @property
    def login_url(self) -> str:
        return self._endpoint.login_url

    def _after_fork(self) -> None:
        # In a forked child (gunicorn --preload, multiprocessing "fork") the parent's lock may be
        # held by a thread that does not exist here, and pooled connections are shared with the
        # parent: two processes writing one HTTP stream. Start both afresh; keep the cached token.
        self._mint_lock = threading.Lock()
        if self._owns_session:
            self._endpoint.session = requests.Session()

    @property
    def token_id(self) -> str | None:
        """The shared token's id in ``token_store`` (``None`` without a store)."""
        return None if self._shared is None else self._shared.token_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}(login_url={self.login_url!r}, client_id={self._client_id!r}{self._repr_user()})"

    def _repr_user(self) -> str:
        return ""

    # -- the public contract --------------------------------------------------

    def access_token(self) -> str:
        entry = self._entry
        if entry is not None and (entry.fresh_until is None or self._now() < entry.fresh_until):
            return entry.access_token
        attempts = self._attempts
        with self._mint_lock:
            entry = self._entry
            if entry is not None and (entry.fresh_until is None or self._now() < entry.fresh_until):
                return entry.access_token
            if self._attempts != attempts and self._failure is not None:
                # We queued behind an attempt that failed: share its failure instead of
                # sending the same bad credential again (no login storm, no loop).
                raise self._failure
            try:
                entry, callbacks = self._obtain()
            except Exception as exc:
                self._failure = exc
                self._attempts += 1
                raise
            self._failure = None
            self._attempts += 1
            self._entry = entry
            self._instance_url = entry.instance_url
        if callbacks is not None:
            self._run_callbacks(callbacks)
        return entry.access_token

    @property
    def instance_url(self) -> str:
        """The org's origin from the last token response (mints one if there was none yet)."""
        if self._instance_url is None:
            self.access_token()
        assert self._instance_url is not None
        return self._instance_url

    def invalidate(self, stale_token: str) -> None:
        """Drop ``stale_token`` here and in ``token_store`` if each still holds it."""
        super().invalidate(stale_token)
        with self._mint_lock:
            entry = self._entry
            if entry is not None and entry.access_token != stale_token:
                return  # already replaced: someone else's 401 got here first
            self._entry = None
            if self._shared is not None:
                self._shared.invalidate(stale_token)
        logger.debug("%s: token invalidated after a rejection", type(self).__name__)
        events.emit(events.TOKEN_INVALIDATED, flow=type(self).__name__)

    # -- obtaining a token -------------------------------------------------------

    def _obtain(self) -> tuple[_Entry, str | None]:
        """A fresh entry, plus a new refresh token to announce (caller holds ``_mint_lock``)."""
        shared = self._shared
        if shared is None:
            return self._mint(None)
        stored = shared.read()
        if shared.usable(stored):
            assert stored is not None
            return self._adopt(stored, shared), None
        with shared.lock():
            stored = shared.read()  # another process may have minted while we waited
            if shared.usable(stored):
                assert stored is not None
                return self._adopt(stored, shared), None
            return self._mint(stored)

    def _adopt(self, stored: AuthToken, shared: SharedToken) -> _Entry:
        logger.debug("%s: using the shared token %s", type(self).__name__, shared.token_id)
        if stored.refresh_token:
            self._refresh_token = stored.refresh_token
        until = shared.fresh_until(stored)
        return _Entry(stored.access_token, str(stored.metadata["instance_url"]),
                      None if until is None else until.timestamp())

    def _mint(self, stored: AuthToken | None) -> tuple[_Entry, str | None]:
        """Ask the token endpoint, store the result; with a store the caller holds its lock."""
        if stored is not None and stored.refresh_token:
            self._refresh_token = stored.refresh_token  # the newest rotated one
        logger.debug("%s: requesting a token from %s", type(self).__name__, self.login_url)
        response = self._request()
        issued_at = self._clock()
        previous = self._refresh_token
        if response.refresh_token is not None:
            self._refresh_token = response.refresh_token
        if self._shared is not None:
            self._shared.write(self._as_stored(response, issued_at))
        logger.info("%s: obtained a Salesforce token for %s", type(self).__name__, response.instance_url)
        events.emit(events.TOKEN_MINTED, flow=type(self).__name__, instance_url=response.instance_url)
        fresh_until = None if self._max_token_age is None else (issued_at + self._max_token_age).timestamp()
        rotated = response.refresh_token if response.refresh_token not in (None, previous) else None
        return _Entry(response.access_token, response.instance_url, fresh_until), rotated

    def _request(self) -> TokenResponse:
        return self._endpoint.request(
            self._grant, grant=self._flow, idempotent=self._idempotent, client_secret=self._client_secret
        )

    def _as_stored(self, response: TokenResponse, issued_at: datetime) -> AuthToken:
        assert self._shared is not None
        metadata: dict[str, Any] = {"instance_url": response.instance_url, "flow": self._flow}
        if response.identity_url is not None:
            metadata["identity_url"] = response.identity_url
        return AuthToken(
            token_id=self._shared.token_id,
            user_id=self._user_id(),
            access_token=response.access_token,
            refresh_token=self._refresh_token,
            token_type=response.token_type,
            scopes=(response.scope or "").split(),
            issued_at=issued_at,
            expires_at=None if self._max_token_age is None or self._refresh_token else issued_at + self._max_token_age,
            client_id=self._client_id,
            metadata=metadata,
        )

    def _run_callbacks(self, refresh_token: str) -> None:
        for callback in self._callbacks:
            try:
                callback(refresh_token)
            except Exception:
                # The token is already adopted (and stored); a failing callback must not
                # turn a successful login into an error. Its traceback names no token.
                logger.exception("%s: an on_refresh_token callback failed", type(self).__name__)

    # -- what a flow provides ------------------------------------------------------

    @abc.abstractmethod
    def _grant(self) -> dict[str, str]:
        """The token request form; called once per attempt."""

    @abc.abstractmethod
    def _user_id(self) -> str:
        """Who the stored token belongs to (its ``user_id``)."""


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
        session: requests.Session | None = None,
        timeout: Timeout = (5.0, 30.0),
        max_token_age: float | timedelta | None = None,
        on_refresh_token: RefreshTokenCallback | Sequence[RefreshTokenCallback] | None = None,
        retries: int = 2,
        backoff: float = 0.5,
        lock_timeout: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        _check_str(username, "username")
        if audience is not None:
            _check_str(audience, "audience")
        self._username = username
        self._key = _load_private_key(private_key, passphrase)
        super().__init__(
            login_url=login_url, client_id=client_id, user=username, client_secret=client_secret,
            token_store=token_store, session=session, timeout=timeout, max_token_age=max_token_age,
            on_refresh_token=on_refresh_token, retries=retries, backoff=backoff, lock_timeout=lock_timeout,
            clock=clock,
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


class RefreshTokenAuth(_MintingSession):
    """The refresh token flow: a refresh token from an earlier web-server / device login.

    Salesforce may rotate the refresh token on every use; the new one is
    adopted, written to ``token_store`` and passed to ``on_refresh_token``.
    With a store, the newest refresh token in the store wins over the one
    given here.  A refresh grant is never re-sent once it may have reached the
    server (it may have spent the refresh token); only a refused connection is
    retried.  ``username`` (optional) names the identity in the store; without
    it the identity is a hash of the initial refresh token.

    >>> auth = RefreshTokenAuth("3MVG9...", refresh_token, client_secret="...",
    ...                         on_refresh_token=save_to_vault)
    """

    _flow = "refresh_token"
    _idempotent = False

    def __init__(
        self,
        client_id: str,
        refresh_token: str,
        client_secret: str | None = None,
        login_url: str = LOGIN_URL,
        token_store: AuthStorage | None = None,
        *,
        username: str | None = None,
        session: requests.Session | None = None,
        timeout: Timeout = (5.0, 30.0),
        max_token_age: float | timedelta | None = None,
        on_refresh_token: RefreshTokenCallback | Sequence[RefreshTokenCallback] | None = None,
        retries: int = 2,
        backoff: float = 0.5,
        lock_timeout: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        _check_str(refresh_token, "refresh_token")
        if username is not None:
            _check_str(username, "username")
        self._username = username
        user = username or "rt:" + hashlib.sha256(refresh_token.encode()).hexdigest()[:32]
        super().__init__(
            login_url=login_url, client_id=client_id, user=user, client_secret=client_secret,
            token_store=token_store, session=session, timeout=timeout, max_token_age=max_token_age,
            on_refresh_token=on_refresh_token, retries=retries, backoff=backoff, lock_timeout=lock_timeout,
            clock=clock,
        )
        self._user = user
        self._own_refresh_token = refresh_token
        self._refresh_token = refresh_token

    def _repr_user(self) -> str:
        return "" if self._username is None else f", username={self._username!r}"

    def _grant(self) -> dict[str, str]:
        assert self._refresh_token is not None
        form = {"grant_type": "refresh_token", "client_id": self._client_id, "refresh_token": self._refresh_token}
        if self._client_secret is not None:
            form["client_secret"] = self._client_secret
        return form

    def _request(self) -> TokenResponse:
        try:
            return super()._request()
        except AuthenticationError as exc:
            # The store's refresh token was refused, but we were given a different one (a
            # re-authorization since): try that one, once. A bad credential still never loops.
            if exc.error != "invalid_grant" or self._refresh_token == self._own_refresh_token:
                raise
            logger.warning("%s: the stored refresh token was refused; trying the configured one", type(self).__name__)
            self._refresh_token = self._own_refresh_token
            return super()._request()

    def _user_id(self) -> str:
        return self._user


class ClientCredentialsAuth(_MintingSession):
    """The client credentials flow: the connected app's run-as user, on the org's My Domain.

    >>> auth = ClientCredentialsAuth("3MVG9...", secret, "https://acme.my.salesforce.com")
    """

    _flow = "client_credentials"

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        domain_url: str,
        token_store: AuthStorage | None = None,
        *,
        session: requests.Session | None = None,
        timeout: Timeout = (5.0, 30.0),
        max_token_age: float | timedelta | None = None,
        on_refresh_token: RefreshTokenCallback | Sequence[RefreshTokenCallback] | None = None,
        retries: int = 2,
        backoff: float = 0.5,
        lock_timeout: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        _check_str(client_secret, "client_secret")
        super().__init__(
            login_url=_named_url(domain_url, "domain_url"), client_id=client_id, user=client_id,
            client_secret=client_secret, token_store=token_store, session=session, timeout=timeout,
            max_token_age=max_token_age, on_refresh_token=on_refresh_token, retries=retries, backoff=backoff,
            lock_timeout=lock_timeout, clock=clock,
        )

    def _grant(self) -> dict[str, str]:
        assert self._client_secret is not None
        return {"grant_type": "client_credentials", "client_id": self._client_id, "client_secret": self._client_secret}

    def _user_id(self) -> str:
        return self._client_id


class PasswordAuth(_MintingSession):
    """The username-password flow (legacy; prefer JWT).  The security token is appended
    to the password, as Salesforce requires from untrusted IP ranges.

    >>> auth = PasswordAuth("3MVG9...", secret, "me@acme.com", password, security_token)
    """

    _flow = "password"

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        username: str,
        password: str,
        security_token: str = "",
        login_url: str = LOGIN_URL,
        token_store: AuthStorage | None = None,
        *,
        session: requests.Session | None = None,
        timeout: Timeout = (5.0, 30.0),
        max_token_age: float | timedelta | None = None,
        on_refresh_token: RefreshTokenCallback | Sequence[RefreshTokenCallback] | None = None,
        retries: int = 2,
        backoff: float = 0.5,
        lock_timeout: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        _check_str(client_secret, "client_secret")
        _check_str(username, "username")
        _check_str(password, "password")
        if not isinstance(security_token, str):
            raise TypeError("security_token must be a str")
        self._username = username
        self._password = password + security_token
        super().__init__(
            login_url=login_url, client_id=client_id, user=username, client_secret=client_secret,
            token_store=token_store, session=session, timeout=timeout, max_token_age=max_token_age,
            on_refresh_token=on_refresh_token, retries=retries, backoff=backoff, lock_timeout=lock_timeout,
            clock=clock,
        )

    def _repr_user(self) -> str:
        return f", username={self._username!r}"

    def _grant(self) -> dict[str, str]:
        assert self._client_secret is not None
        return {"grant_type": "password", "client_id": self._client_id, "client_secret": self._client_secret,
                "username": self._username, "password": self._password}

    def _user_id(self) -> str:
        return self._username


# -- helpers ---------------------------------------------------------------------

_LIVE: weakref.WeakSet[_MintingSession] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for auth in list(_LIVE):
        auth._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def default_audience(login_url: str) -> str:
    """The JWT ``aud`` Salesforce expects for a login URL (see :class:`JwtAuth`)."""
    host = (urlsplit(login_url).hostname or "").lower()
    if host == "test.salesforce.com" or host.endswith(".sandbox.my.salesforce.com"):
        return SANDBOX_LOGIN_URL
    if host == "login.salesforce.com" or host.endswith(".my.salesforce.com"):
        return LOGIN_URL
    return login_url


def _mint_budget(timeout: Timeout, retries: int) -> float:
    """Seconds the slowest mint can take: the store lock's ``ttl`` must outlive it, or a
    second process could mint (and spend a rotating refresh token) while the first still waits."""
    per_attempt = sum(timeout) if isinstance(timeout, tuple) else 2 * timeout
    return max(60.0, (retries + 1) * per_attempt + retries * 8.0 + 10.0)


def _named_url(url: str, name: str) -> str:
    return normalize_url(url, name)


def _check_str(value: object, name: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")


def _as_timedelta(value: float | timedelta | None) -> timedelta | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError("max_token_age must be seconds (int/float), a timedelta or None")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError("max_token_age must be a positive, finite duration")
    return timedelta(seconds=seconds)


def _as_callbacks(value: object) -> tuple[RefreshTokenCallback, ...]:
    if value is None:
        return ()
    if callable(value):
        return (value,)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and all(callable(v) for v in value):
        return tuple(value)
    raise TypeError("on_refresh_token must be a callable, a sequence of callables, or None")


def _load_private_key(private_key: object, passphrase: object) -> Any:
    """An RSA private key object from PEM text, PEM bytes or a path; ConfigurationError if unusable."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key
    if passphrase is not None and not isinstance(passphrase, (str, bytes)):
        raise TypeError("passphrase must be a str, bytes or None")
    password = passphrase.encode() if isinstance(passphrase, str) else passphrase
    if isinstance(private_key, bytes):
        data = private_key
    elif isinstance(private_key, str) and "-----BEGIN" in private_key:
        data = private_key.encode()
    elif isinstance(private_key, (str, os.PathLike)):
        path = Path(private_key)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"cannot read the JWT private key file {str(path)!r}: {exc.strerror}") from None
    else:
        raise TypeError("private_key must be PEM text, PEM bytes or a path to a PEM file")
    try:
        key = load_pem_private_key(data, password=password)
    except TypeError:
        raise ConfigurationError(
            "the JWT private key is encrypted: pass passphrase=" if password is None
            else "a passphrase was given but the JWT private key is not encrypted"
        ) from None
    except ValueError:
        # Never chain the parser's error: it may quote key material.
        raise ConfigurationError(
            "cannot load the JWT private key: not a PEM private key, or a wrong passphrase"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError("the JWT private key must be an RSA key (Salesforce signs with RS256)")
    return key
