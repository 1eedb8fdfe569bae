"""``FakeSalesforce``: a local Salesforce org on 127.0.0.1 for tests.

A real HTTP server (ephemeral port, background thread) that plays both the
login host and the instance.  It issues tokens for the OAuth flows authkit
supports (the web-server flow's authorize endpoint with PKCE included: a test
plays the browser with :meth:`FakeSalesforce.authorize`; token exchange with
subject tokens from :meth:`FakeSalesforce.add_subject_token`; revocation),
verifying them for real (JWT assertions RS256-signed by a registered
key, client secrets, refresh tokens with optional rotation, passwords with
security tokens), answers with Salesforce's own error bodies, and lets issued
sessions die after an idle timeout or on :meth:`FakeSalesforce.expire_sessions`.
Failures are injected with :meth:`FakeSalesforce.inject_error` and its kin.
Requests under ``/services/data`` are bearer-checked here and answered by
:class:`~authkit.testing.fake_rest.FakeRestApi` (``org.rest``), Bulk API 2.0 jobs
(``/services/data/vXX.X/jobs``) by :class:`~authkit.testing.fake_bulk.FakeBulkApi` (``org.bulk``).

A test in three lines::

    with FakeSalesforce() as org:
        auth = org.jwt_auth()                 # registers an app with a fresh key pair
        assert auth.access_token()

Or set the pieces up yourself::

    with FakeSalesforce(session_idle_timeout=60) as org:
        app = org.register_jwt_app("integration@example.com")
        auth = JwtAuth(app.client_id, "integration@example.com", app.private_key_pem,
                       login_url=org.login_url)
        ...
        org.expire_sessions()                 # every issued access token is now dead
        assert org.token_requests == 1

Differences from a real org worth knowing: the same server is login host and
instance; JWT ``exp`` is checked against real time while session idle expiry
follows ``clock`` (so tests can move it); a JWT's default accepted audience is
``login_url`` (add others to ``jwt_audiences``).

This module keeps the org's state (users, apps, sessions, refresh tokens); the OAuth endpoints
are in ``_fake_oauth.py``, injected failures in ``_fake_faults.py``, the HTTP server in ``_fake_http.py``.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

from authkit.models import utcnow
from authkit.salesforce.auth import ClientCredentialsAuth, JwtAuth, PasswordAuth, RefreshTokenAuth
from authkit.testing._fake_faults import FaultInjection, take
from authkit.testing._fake_http import Handler, Server
from authkit.testing._fake_oauth import Code, Session, generate_rsa_key_pair, public_key_from_pem

if TYPE_CHECKING:
    from authkit.testing.fake_bulk import FakeBulkApi
    from authkit.testing.fake_rest import FakeRestApi

__all__ = ["FakeSalesforce", "FakeUser", "ConnectedApp", "generate_rsa_key_pair"]

_INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


def _sf_id(prefix: str) -> str:
    """An 18-character Salesforce-looking id with a 3-character key prefix."""
    return prefix + secrets.token_hex(8)[:15].upper()


@dataclass
class FakeUser:
    """A user of the fake org.  ``repr()`` hides the password and security token."""

    username: str
    password: str
    security_token: str
    user_id: str = field(default_factory=lambda: _sf_id("005"))
    name: str = "Test User"
    email: str = "user@example.com"

    def __repr__(self) -> str:
        return f"FakeUser(username={self.username!r}, user_id={self.user_id!r})"


@dataclass
class ConnectedApp:
    """A connected app: its consumer key and secret, and for the JWT flow its keys.

    ``private_key_pem`` is set when the org generated the key pair
    (:meth:`FakeSalesforce.register_jwt_app`).  ``approved_users`` ``None``
    means every user is pre-authorized.  ``repr()`` hides the secret and key.
    """

    client_id: str
    client_secret: str
    public_key_pem: str | None = None
    private_key_pem: str | None = None
    run_as: str | None = None
    rotate_refresh_tokens: bool = False
    approved_users: set[str] | None = None
    scope: str = "api refresh_token"
    callback_urls: set[str] | None = None  # None: any loopback/https callback is accepted
    require_secret_for_web_server: bool = False

    def __repr__(self) -> str:
        return (
            f"ConnectedApp(client_id={self.client_id!r}, jwt={self.public_key_pem is not None}, "
            f"run_as={self.run_as!r}, rotate_refresh_tokens={self.rotate_refresh_tokens})"
        )


class FakeSalesforce(FaultInjection):
    """A local org.  See the module docstring for usage.

    ``session_idle_timeout`` (seconds) ends a session not used for that long,
    measured with ``clock`` (a function returning aware UTC datetimes).
    ``token_delay`` (seconds) makes the token endpoint slow, to widen race
    windows.  ``tamper_signatures = True`` makes every response ``signature``
    wrong.  ``jwt_audiences`` holds extra accepted JWT ``aud`` values.
    ``api_limit`` is the daily limit reported in ``Sforce-Limit-Info``.
    """

    def __init__(
        self,
        *,
        session_idle_timeout: float = 7200.0,
        token_delay: float = 0.0,
        api_limit: int = 15000,
        clock: Callable[[], datetime] | None = None,
        rest: FakeRestApi | None = None,
    ) -> None:
        self.session_idle_timeout = session_idle_timeout
        self.token_delay = token_delay
        self.api_limit = api_limit
        self.org_id = _sf_id("00D")
        self.token_requests = 0
        self.api_requests = 0
        self.requests_log: list[tuple[str, str, int]] = []
        self.jwt_audiences: set[str] = set()
        self.tamper_signatures = False
        self.omit_signatures = False  # token responses without a signature (as a proxy that strips it)
        self.instance_url_override: str | None = None  # token responses name this instance instead
        self._clock = clock or utcnow
        self._mutex = threading.RLock()
        self._users: dict[str, FakeUser] = {}
        self._apps: dict[str, ConnectedApp] = {}
        self._sessions: dict[str, Session] = {}
        self._refresh_tokens: dict[str, tuple[str, str]] = {}  # token -> (client_id, username)
        self._families: dict[str, str] = {}  # refresh token -> its family (the first token of a rotation chain)
        self._codes: dict[str, Code] = {}
        self._subject_tokens: dict[str, tuple[str, str]] = {}  # subject token -> (token type, username)
        self.authorize_as: str | None = None  # the user the "browser" logs in as (default_user)
        self.deny_authorization = False
        self.code_lifetime = 900.0  # Salesforce: an authorization code is valid for 15 minutes
        self.revoke_requests = 0
        super().__init__()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._default_app: ConnectedApp | None = None
        self.rest: FakeRestApi | None = rest if rest is not None else _default_rest()
        self.bulk: FakeBulkApi | None = _default_bulk(self.rest)  # Bulk API 2.0 over rest's records
        self.default_user = self.add_user("user@example.com")

    def __repr__(self) -> str:
        state = f"{self.login_url}" if self._server is not None else "stopped"
        return f"FakeSalesforce({state}, users={len(self._users)}, apps={len(self._apps)})"

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> FakeSalesforce:
        """Start serving on an ephemeral port of 127.0.0.1 (idempotent)."""
        if self._server is not None:
            return self
        server = Server(("127.0.0.1", 0), Handler)
        server.org = self
        self._server = server
        # A short poll interval makes stop() (and so every test's teardown) quick.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="FakeSalesforce", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._mutex:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeSalesforce:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeSalesforce is not running; call start() or use it as a context manager")
        return int(self._server.server_address[1])

    @property
    def login_url(self) -> str:
        """``http://127.0.0.1:<port>``: pass it as ``login_url`` / ``domain_url``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def instance_url(self) -> str:
        """The instance the token responses point to: the same server."""
        return self.login_url

    # -- setup --------------------------------------------------------------

    def add_user(
        self,
        username: str,
        password: str | None = None,
        security_token: str | None = None,
        *,
        name: str = "Test User",
        email: str | None = None,
    ) -> FakeUser:
        """Create (or replace) a user; a password / security token is generated when not given."""
        user = FakeUser(
            username=username,
            password=password if password is not None else secrets.token_urlsafe(12),
            security_token=security_token if security_token is not None else secrets.token_hex(12),
            name=name,
            email=email or username,
        )
        with self._mutex:
            self._users[username] = user
        return user

    def register_app(
        self,
        client_id: str | None = None,
        client_secret: str | None = None,
        *,
        public_key_pem: str | None = None,
        run_as: str | None = None,
        rotate_refresh_tokens: bool = False,
        approved_users: set[str] | None = None,
        scope: str = "api refresh_token",
        callback_urls: set[str] | None = None,
        require_secret_for_web_server: bool = False,
    ) -> ConnectedApp:
        """Register a connected app.

        ``public_key_pem`` (a PEM public key or certificate) enables the JWT
        flow; ``run_as`` (a username) enables the client credentials flow;
        ``callback_urls`` limits the web-server flow's redirect URIs (``None``:
        any); ``require_secret_for_web_server`` makes its code exchange need
        the secret (Salesforce's "Require Secret for Web Server Flow").
        """
        app = ConnectedApp(
            client_id=client_id or "3MVG9" + secrets.token_urlsafe(24),
            client_secret=client_secret or secrets.token_hex(32).upper(),
            public_key_pem=public_key_pem,
            run_as=run_as,
            rotate_refresh_tokens=rotate_refresh_tokens,
            approved_users=approved_users,
            scope=scope,
            callback_urls=callback_urls,
            require_secret_for_web_server=require_secret_for_web_server,
        )
        if public_key_pem is not None:
            public_key_from_pem(public_key_pem)  # fail now on bad key material
        with self._mutex:
            self._apps[app.client_id] = app
        return app

    def register_jwt_app(self, username: str | None = None, **options: Any) -> ConnectedApp:
        """Register an app with a freshly generated RSA key pair (``app.private_key_pem``).

        ``username`` is created if the org does not have it yet.
        """
        if username is not None and username not in self._users:
            self.add_user(username)
        private_pem, public_pem = generate_rsa_key_pair()
        app = self.register_app(public_key_pem=public_pem, **options)
        app.private_key_pem = private_pem
        return app

    def issue_refresh_token(self, client_id: str, username: str | None = None) -> str:
        """A refresh token for ``username`` (default: ``default_user``), as after the web-server flow."""
        username = username or self.default_user.username
        with self._mutex:
            if client_id not in self._apps:
                raise ValueError("unknown client_id; register_app() first")
            if username not in self._users:
                raise ValueError(f"unknown user {username!r}; add_user() first")
            token = self._new_refresh_token(client_id, username, None)
        return token

    def _new_refresh_token(self, client_id: str, username: str, family: str | None) -> str:
        token = f"5Aep861{secrets.token_urlsafe(40)}"
        self._refresh_tokens[token] = (client_id, username)
        self._families[token] = family or token
        return token

    def revoke(self, token: str) -> bool:
        """Revoke an access token (its session) or a refresh token (with every token of its
        rotation chain and every session minted from them); False if the org did not know it."""
        with self._mutex:
            if self._sessions.pop(token, None) is not None:
                return True
            if token not in self._refresh_tokens:
                return False
            family = self._families.get(token, token)
            for rt in [rt for rt, fam in self._families.items() if fam == family]:
                self._refresh_tokens.pop(rt, None)
                self._families.pop(rt, None)
            for access in [a for a, session in self._sessions.items() if session.family == family]:
                del self._sessions[access]
            return True

    def add_subject_token(self, token: str, username: str | None = None,
                          token_type: str = "urn:ietf:params:oauth:token-type:access_token") -> None:
        """Accept ``token`` (from an "identity provider") in the token exchange flow as ``username``.

        What the org's token exchange handler would do: validate the token and map it to a user.
        """
        username = username or self.default_user.username
        with self._mutex:
            if username not in self._users:
                raise ValueError(f"unknown user {username!r}; add_user() first")
            self._subject_tokens[token] = (token_type, username)

    def authorize(self, url: str) -> str:
        """Play the browser: open the authorize ``url``, log in as :attr:`authorize_as`
        (default: ``default_user``), approve, and return the redirect URL Salesforce sends
        the browser to (``redirect_uri?code=...&state=...``, or ``?error=...``)."""
        import requests

        response = requests.get(url, allow_redirects=False, timeout=30)
        if response.status_code != 302:
            raise AssertionError(f"the authorize endpoint answered {response.status_code}: {response.text[:200]}")
        return response.headers["Location"]

    def expire_sessions(self) -> None:
        """End every issued session: each access token now gets ``INVALID_SESSION_ID``."""
        with self._mutex:
            self._sessions.clear()

    @property
    def active_sessions(self) -> int:
        """How many sessions are alive now."""
        with self._mutex:
            now = self._clock()
            return sum(1 for s in self._sessions.values() if not self._idle(s, now))

    # -- conveniences: an AuthSession against this org ----------------------

    def _app_for_tests(self) -> ConnectedApp:
        with self._mutex:
            if self._default_app is None:
                self._default_app = self.register_jwt_app(run_as=self.default_user.username)
            return self._default_app

    def jwt_auth(self, **kwargs: Any) -> JwtAuth:
        """A :class:`~authkit.salesforce.JwtAuth` for ``default_user`` on an app registered for you."""
        app = self._app_for_tests()
        assert app.private_key_pem is not None
        kwargs.setdefault("login_url", self.login_url)
        return JwtAuth(app.client_id, self.default_user.username, app.private_key_pem, **kwargs)

    def password_auth(self, **kwargs: Any) -> PasswordAuth:
        """A :class:`~authkit.salesforce.PasswordAuth` for ``default_user``."""
        app, user = self._app_for_tests(), self.default_user
        kwargs.setdefault("login_url", self.login_url)
        return PasswordAuth(
            app.client_id, app.client_secret, user.username, user.password, user.security_token, **kwargs
        )

    def client_credentials_auth(self, **kwargs: Any) -> ClientCredentialsAuth:
        """A :class:`~authkit.salesforce.ClientCredentialsAuth` running as ``default_user``."""
        app = self._app_for_tests()
        return ClientCredentialsAuth(app.client_id, app.client_secret, self.login_url, **kwargs)

    def refresh_token_auth(self, **kwargs: Any) -> RefreshTokenAuth:
        """A :class:`~authkit.salesforce.RefreshTokenAuth` with a refresh token issued for ``default_user``."""
        app = self._app_for_tests()
        kwargs.setdefault("login_url", self.login_url)
        kwargs.setdefault("client_secret", app.client_secret)
        return RefreshTokenAuth(app.client_id, self.issue_refresh_token(app.client_id), **kwargs)

    # -- bearer-checked resources -------------------------------------------

    def _idle(self, session: Session, now: datetime) -> bool:
        return now - session.last_used > timedelta(seconds=self.session_idle_timeout)

    def _session(self, authorization: str | None) -> Session | None:
        """The live session the header names, touched; ``None`` if missing, unknown or idle too long."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() not in ("bearer", "oauth") or not token:
            return None
        with self._mutex:
            session = self._sessions.get(token.strip())
            if session is None:
                return None
            now = self._clock()
            if self._idle(session, now):
                del self._sessions[token.strip()]
                return None
            session.last_used = now
            return session

    def _limit_headers(self) -> dict[str, str]:
        return {"Sforce-Limit-Info": f"api-usage={self.api_requests}/{self.api_limit}"}

    def _data(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes, authorization: str | None,
        content_type: str | None = None,
        request_headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        if self._session(authorization) is None:
            return 401, {"WWW-Authenticate": "Token"}, json.dumps(_INVALID_SESSION).encode()
        with self._mutex:
            self.api_requests += 1
            headers = self._limit_headers()
            injected = take(self._injected, path)
        if injected is not None:
            return injected.status, {**headers, **injected.headers}, injected.body
        if self.rest is None:
            missing = [{"message": "FakeRestApi is not available", "errorCode": "NOT_FOUND"}]
            return 404, headers, json.dumps(missing).encode()
        if self.bulk is not None and path.split("/")[4:5] == ["jobs"]:  # /services/data/vXX.X/jobs/...
            status, extra, payload = self.bulk.handle(method, path, query, body, content_type)
        else:
            status, extra, payload = self.rest.handle(method, path, query, body, self.instance_url, request_headers)
        return status, {**headers, **extra}, payload

    def _userinfo(self, authorization: str | None) -> tuple[int, dict[str, str], bytes]:
        session = self._session(authorization)
        if session is None:
            return 403, {"Content-Type": "text/plain"}, b"Bad_OAuth_Token"
        user = session.user
        info = {
            "sub": f"{self.login_url}/id/{self.org_id}/{user.user_id}",
            "user_id": user.user_id,
            "organization_id": self.org_id,
            "preferred_username": user.username,
            "nickname": user.username.split("@")[0],
            "name": user.name,
            "email": user.email,
            "email_verified": True,
            "zoneinfo": "America/Los_Angeles",
            "locale": "en_US",
            "user_type": "STANDARD",
            "active": True,
            "urls": {"rest": f"{self.instance_url}/services/data/v{{version}}/"},
        }
        return 200, {}, json.dumps(info).encode()


def _default_rest() -> FakeRestApi | None:
    try:
        from authkit.testing.fake_rest import FakeRestApi
    except ImportError:  # the data API module is optional for auth-only tests
        return None
    return FakeRestApi()


def _default_bulk(rest: FakeRestApi | None) -> FakeBulkApi | None:
    if rest is None:
        return None
    from authkit.testing.fake_bulk import FakeBulkApi

    return FakeBulkApi(rest)
