"""What every minting flow shares: the cache, single flight, compare-and-swap, the store, revoke.

A flow subclasses :class:`_MintingSession` and says only how to mint: the form to
POST (:meth:`_MintingSession._grant`), whose token it is (``_user_id``) and
whether the grant may be re-sent (``_idempotent``).  Everything else lives here,
once (the design aiosalesforce uses: the base owns locking and caching, a flow
owns its grant).
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict

import requests

from authkit.models import AuthToken, utcnow
from authkit.salesforce import events
from authkit.salesforce._oauth import Timeout, TokenEndpoint, TokenResponse, check_timeout
from authkit.salesforce._token_store import SharedToken
from authkit.storage.base import AuthStorage, Clock

logger = logging.getLogger("authkit.salesforce")

LOGIN_URL = "https://login.salesforce.com"
SANDBOX_LOGIN_URL = "https://test.salesforce.com"

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


@dataclass(frozen=True)
class FlowOptions:
    """How a minting flow talks to the token endpoint and the store: one typed object.

    Every field has a default, and every minting flow also takes each field as
    a keyword argument (``JwtAuth(..., timeout=3)``); a keyword given next to
    ``options=`` overrides that field.  Share one object between flows::

        opts = FlowOptions(timeout=(3, 10), retries=1, max_token_age=3600)
        jwt = JwtAuth(client_id, user, key, options=opts)
        rt = RefreshTokenAuth(client_id, refresh_token, options=opts, retries=0)

    ``session``: a :class:`requests.Session` (one is made per flow otherwise);
    ``timeout``: seconds or ``(connect, read)``; ``max_token_age``: re-mint
    proactively after this long (seconds or timedelta; ``None``: only after a
    401); ``retries`` / ``backoff``: transient token-endpoint failures;
    ``lock_timeout``: how long to wait for another process's mint; ``clock``:
    a function returning aware UTC now (tests move it).
    """

    session: requests.Session | None = None
    timeout: Timeout = (5.0, 30.0)
    max_token_age: float | timedelta | None = None
    retries: int = 2
    backoff: float = 0.5
    lock_timeout: float = 30.0
    clock: Clock | None = None

    def __post_init__(self) -> None:
        if self.session is not None and not isinstance(self.session, requests.Session):
            raise TypeError("session must be a requests.Session")
        check_timeout(self.timeout)
        _as_timedelta(self.max_token_age)
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) or self.retries < 0:
            raise ValueError("retries must be an int >= 0")
        for name in ("backoff", "lock_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"{name} must be a number of seconds >= 0")
        if self.clock is not None and not callable(self.clock):
            raise TypeError("clock must be a function returning an aware UTC datetime")

    @classmethod
    def _merge(cls, options: FlowOptions | None, overrides: dict[str, Any]) -> FlowOptions:
        """``options`` with the keyword ``overrides`` applied (a flow's ``**options``)."""
        if options is not None and not isinstance(options, FlowOptions):
            raise TypeError("options must be a FlowOptions")
        unknown = set(overrides) - _OPTION_NAMES
        if unknown:
            raise TypeError(f"unexpected keyword argument {sorted(unknown)[0]!r}")
        if options is None:
            return cls(**overrides)
        return dataclasses.replace(options, **overrides) if overrides else options


class _FlowKeywords(TypedDict, total=False):
    """The :class:`FlowOptions` fields as keyword arguments (for type checkers)."""

    session: requests.Session | None
    timeout: Timeout
    max_token_age: float | timedelta | None
    retries: int
    backoff: float
    lock_timeout: float
    clock: Clock | None


_OPTION_NAMES = frozenset(field.name for field in dataclasses.fields(FlowOptions))


@dataclass(frozen=True, repr=False)
class _Entry:
    """The cached token: what ``access_token()`` answers without a lock."""

    access_token: str
    instance_url: str
    fresh_until: float | None  # POSIX seconds: comparing floats keeps the warm path cheap


class _MintingSession(AuthSession):
    """Caching, single-flight, the shared store, rotation, revoke: everything but the grant.

    A flow implements :meth:`_grant` (the form to POST) and :meth:`_user_id`,
    and says whether its grant may be re-sent (``_idempotent``) and whether
    revoking it should revoke a refresh token too (``_has_refresh_token``).
    """

    _flow = ""
    _idempotent = True
    _has_refresh_token = False

    def __init__(
        self,
        *,
        login_url: str,
        client_id: str,
        user: str,
        client_secret: str | None,
        token_store: AuthStorage | None,
        options: FlowOptions,
        on_refresh_token: RefreshTokenCallback | Sequence[RefreshTokenCallback] | None = None,
    ) -> None:
        _check_str(client_id, "client_id")
        if client_secret is not None:
            _check_str(client_secret, "client_secret")
        self._options = options
        self._endpoint = TokenEndpoint(login_url, session=options.session, timeout=options.timeout,
                                       retries=options.retries, backoff=options.backoff)
        self._client_id = client_id
        self._client_secret = client_secret
        self._clock: Clock = options.clock or utcnow
        # The warm path compares floats: time.time() unless a test injects a clock.
        self._now: Callable[[], float] = time.time if options.clock is None else (
            lambda: self._clock().timestamp())
        self._max_token_age = _as_timedelta(options.max_token_age)
        self._callbacks = _as_callbacks(on_refresh_token)
        self._refresh_token: str | None = None
        self._shared: SharedToken | None = None
        if token_store is not None:
            self._shared = SharedToken(
                token_store,
                flow=self._flow,
                login_url=self._endpoint.login_url,
                client_id=client_id,
                user=user,
                max_token_age=self._max_token_age,
                clock=self._clock,
                lock_timeout=float(options.lock_timeout),
                lock_ttl=_mint_budget(options.timeout, options.retries),
            )
        self._entry: _Entry | None = None
        self._instance_url: str | None = None
        self._mint_lock = threading.Lock()
        self._owns_session = options.session is None
        _LIVE.add(self)
        self._attempts = 0
        self._failure: Exception | None = None

    @property
    def login_url(self) -> str:
        return self._endpoint.login_url

    @property
    def options(self) -> FlowOptions:
        """The :class:`FlowOptions` this flow was built with."""
        return self._options

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

    def revoke(self) -> bool:
        """Revoke the current token at Salesforce (RFC 7009) and forget it everywhere.

        Revokes the access token this flow holds (or, with nothing cached, the
        one in ``token_store``) and, for a flow with a refresh token, that
        refresh token too, which ends every access token minted from it.  The
        token leaves the cache and the store first, so no other process adopts
        it meanwhile.  A token Salesforce no longer knows counts as revoked.
        With nothing to revoke this does nothing and returns False.  A later
        ``access_token()`` mints a new token (a refresh flow cannot: its
        refresh token is gone).
        """
        with self._mint_lock:
            access = self._entry.access_token if self._entry is not None else None
            refresh: list[str] = []
            if self._has_refresh_token and self._refresh_token is not None:
                refresh.append(self._refresh_token)
            if self._shared is not None:
                with self._shared.lock():
                    stored = self._shared.read()
                    if stored is not None:
                        if access is None and not stored.metadata.get("invalidated"):
                            access = stored.access_token
                        if self._has_refresh_token and stored.refresh_token and stored.refresh_token not in refresh:
                            # The newest rotated one, or one from a login since: both must end.
                            refresh.insert(0, stored.refresh_token)
                        if (stored.access_token == access or stored.metadata.get("invalidated")
                                or (stored.refresh_token is not None and stored.refresh_token in refresh)):
                            self._shared.storage.delete_token(self._shared.token_id)
            self._entry = None
            self._failure = None
            for token in refresh:
                # Revoking a refresh token ends its access tokens too; the access token is
                # still revoked on its own, in case it came from another grant.
                self._endpoint.revoke(token, what="refresh token")
            if refresh:
                self._after_refresh_token_revoked()
            if access is not None:
                self._endpoint.revoke(access, what="access token")
        if not refresh and access is None:
            return False
        logger.info("%s: token revoked", type(self).__name__)
        events.emit(events.TOKEN_REVOKED, flow=type(self).__name__, refresh_revoked=bool(refresh))
        return True

    def _after_refresh_token_revoked(self) -> None:
        """A refresh flow forgets its refresh token here."""
        self._refresh_token = None

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
        return self._accept(response)

    def _accept(self, response: TokenResponse) -> tuple[_Entry, str | None]:
        """Adopt a token response: rotate, store, cache entry (store lock held if there is a store)."""
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


# -- helpers ---------------------------------------------------------------------

_LIVE: weakref.WeakSet[_MintingSession] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for auth in list(_LIVE):
        auth._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _mint_budget(timeout: Timeout, retries: int) -> float:
    """Seconds the slowest mint can take: the store lock's ``ttl`` must outlive it, or a
    second process could mint (and spend a rotating refresh token) while the first still waits."""
    per_attempt = sum(timeout) if isinstance(timeout, tuple) else 2 * timeout
    return max(60.0, (retries + 1) * per_attempt + retries * 8.0 + 10.0)


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


__all__ = ["AuthSession", "FlowOptions", "LOGIN_URL", "SANDBOX_LOGIN_URL", "RefreshTokenCallback"]
