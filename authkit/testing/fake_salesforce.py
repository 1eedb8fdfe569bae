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
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt

from authkit.models import utcnow
from authkit.salesforce._oauth import response_signature
from authkit.salesforce.auth import JWT_BEARER_GRANT, ClientCredentialsAuth, JwtAuth, PasswordAuth, RefreshTokenAuth

if TYPE_CHECKING:
    from authkit.testing.fake_bulk import FakeBulkApi
    from authkit.testing.fake_rest import FakeRestApi

__all__ = ["FakeSalesforce", "FakeUser", "ConnectedApp", "generate_rsa_key_pair"]

logger = logging.getLogger("authkit.testing")

_JSON = "application/json;charset=UTF-8"
_INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
_TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
_JWT_MAX_LIFETIME = 180 + 30  # Salesforce wants exp at most 3 minutes ahead; allow some clock skew


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


@dataclass
class _Session:
    user: FakeUser
    app: ConnectedApp
    last_used: datetime
    family: str | None = None  # the refresh token family it came from (revoking that ends it)


@dataclass
class _Code:
    """An authorization code waiting for its exchange."""

    client_id: str
    username: str
    redirect_uri: str
    challenge: str | None
    method: str | None
    scope: str
    issued: float


@dataclass
class _Injected:
    status: int
    body: bytes
    headers: dict[str, str]
    count: int
    path_prefix: str | None = None


class _OAuthError(Exception):
    """A token endpoint refusal, as Salesforce words it."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(error)
        self.error = error
        self.description = description
        self.status = status


def generate_rsa_key_pair() -> tuple[str, str]:
    """A fresh 2048-bit RSA key pair as ``(private PEM, public PEM)`` text."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return private_pem, public_pem


def _public_key_from_pem(pem: str) -> Any:
    """The public key of a PEM public key or X.509 certificate (what Salesforce asks you to upload)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    data = pem.encode()
    if b"CERTIFICATE" in data:
        return x509.load_pem_x509_certificate(data).public_key()
    return serialization.load_pem_public_key(data)


class FakeSalesforce:
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
        self._sessions: dict[str, _Session] = {}
        self._refresh_tokens: dict[str, tuple[str, str]] = {}  # token -> (client_id, username)
        self._families: dict[str, str] = {}  # refresh token -> its family (the first token of a rotation chain)
        self._codes: dict[str, _Code] = {}
        self._subject_tokens: dict[str, tuple[str, str]] = {}  # subject token -> (token type, username)
        self.authorize_as: str | None = None  # the user the "browser" logs in as (default_user)
        self.deny_authorization = False
        self.code_lifetime = 900.0  # Salesforce: an authorization code is valid for 15 minutes
        self.revoke_requests = 0
        self._injected: list[_Injected] = []
        self._token_injected: list[_Injected] = []
        self._drop_token_connections = 0
        self._server: ThreadingHTTPServer | None = None
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
        server = _Server(("127.0.0.1", 0), _Handler)
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
            _public_key_from_pem(public_key_pem)  # fail now on bad key material
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

    def inject_error(
        self,
        status: int,
        error_code: str,
        message: str = "injected error",
        count: int = 1,
        path_prefix: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``count`` REST requests (under ``path_prefix``, if given) with this error."""
        body = json.dumps([{"message": message, "errorCode": error_code, "fields": []}]).encode()
        with self._mutex:
            self._injected.append(_Injected(status, body, dict(headers or {}), count, path_prefix))

    def inject_token_error(
        self,
        status: int,
        error: str | None = None,
        error_description: str = "",
        count: int = 1,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> None:
        """Answer the next ``count`` token requests with ``status`` and an OAuth error body.

        With ``error=None`` the body is ``body`` (default empty), e.g. a 503
        from a load balancer or a 302 to a login page.
        """
        if error is not None:
            body = json.dumps({"error": error, "error_description": error_description}).encode()
        with self._mutex:
            self._token_injected.append(_Injected(status, body or b"", dict(headers or {}), count))

    def drop_token_connections(self, count: int = 1) -> None:
        """Read the next ``count`` token requests, then close the connection without answering.

        The request has reached the server (a refresh token may be spent), as
        when a proxy times out or a connection resets mid-response.
        """
        with self._mutex:
            self._drop_token_connections += count

    def clear_injected_errors(self) -> int:
        """Forget every error and dropped connection injected but not served yet; return how many.

        For a test that injected more failures than its code consumed (a retry
        it expected did not happen), before the next step of the test.
        """
        with self._mutex:
            pending = self.pending_injected_errors
            self._injected.clear()
            self._token_injected.clear()
            self._drop_token_connections = 0
        return pending

    @property
    def pending_injected_errors(self) -> int:
        """How many injected errors and dropped connections are still to be served."""
        with self._mutex:
            return (sum(i.count for i in self._injected) + sum(i.count for i in self._token_injected)
                    + self._drop_token_connections)

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

    # -- the token endpoint -------------------------------------------------

    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        grant = form.get("grant_type", "")
        try:
            if grant == JWT_BEARER_GRANT:
                user, app = self._jwt_grant(form.get("assertion", ""))
                refresh = None
            elif grant == "refresh_token":
                user, app, refresh = self._refresh_grant(form)
            elif grant == "client_credentials":
                user, app = self._client_credentials_grant(form)
                refresh = None
            elif grant == "password":
                user, app = self._password_grant(form)
                refresh = None
            elif grant == "authorization_code":
                user, app, refresh = self._authorization_code_grant(form)
            elif grant == _TOKEN_EXCHANGE_GRANT:
                user, app, refresh = self._token_exchange_grant(form)
            else:
                raise _OAuthError("unsupported_grant_type", "grant type not supported")
        except _OAuthError as exc:
            body = {"error": exc.error, "error_description": exc.description}
            return exc.status, {}, json.dumps(body).encode()
        issued = self._issue(user, app, refresh, form.get("refresh_token") if grant == "refresh_token" else None)
        if grant == _TOKEN_EXCHANGE_GRANT:
            issued["issued_token_type"] = "urn:ietf:params:oauth:token-type:access_token"
        return 200, {}, json.dumps(issued).encode()

    def _issue(self, user: FakeUser, app: ConnectedApp, refresh_token: str | None,
               used_refresh_token: str | None = None) -> dict[str, str]:
        access_token = f"{self.org_id}!AQ{secrets.token_urlsafe(60)}"
        with self._mutex:
            family_of = refresh_token or used_refresh_token
            family = self._families.get(family_of) if family_of else None
            self._sessions[access_token] = _Session(user, app, self._clock(), family)
        identity_url = f"{self.login_url}/id/{self.org_id}/{user.user_id}"
        issued_at = str(int(time.time() * 1000))
        response = {
            "access_token": access_token,
            # tamper_signatures: what a client sees when something altered the response on the way.
            "signature": response_signature(
                app.client_secret + ("x" if self.tamper_signatures else ""), identity_url, issued_at
            ),
            "scope": app.scope,
            "instance_url": self.instance_url_override or self.instance_url,
            "id": identity_url,
            "token_type": "Bearer",
            "issued_at": issued_at,
        }
        if refresh_token is not None:
            response["refresh_token"] = refresh_token
        if self.omit_signatures:
            del response["signature"]
        return response

    def _app(self, client_id: str) -> ConnectedApp:
        app = self._apps.get(client_id)
        if app is None:
            raise _OAuthError("invalid_client_id", "client identifier invalid")
        return app

    def _check_secret(self, app: ConnectedApp, secret: str | None) -> None:
        if secret is None or not hmac.compare_digest(secret.encode(), app.client_secret.encode()):
            raise _OAuthError("invalid_client", "invalid client credentials")

    def _approved(self, app: ConnectedApp, username: str) -> FakeUser:
        user = self._users.get(username)
        if user is None or (app.approved_users is not None and username not in app.approved_users):
            raise _OAuthError("invalid_grant", "user hasn't approved this consumer")
        return user

    def _jwt_grant(self, assertion: str) -> tuple[FakeUser, ConnectedApp]:
        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            raise _OAuthError("invalid_grant", "invalid assertion") from None
        with self._mutex:
            app = self._app(str(claims.get("iss", "")))
        if app.public_key_pem is None or header.get("alg") != "RS256":
            raise _OAuthError("invalid_grant", "invalid assertion")
        audiences = {self.login_url, *self.jwt_audiences}
        try:
            claims = jwt.decode(
                assertion,
                _public_key_from_pem(app.public_key_pem),
                algorithms=["RS256"],
                audience=sorted(audiences),
                options={"require": ["iss", "sub", "aud", "exp"]},
            )
        except jwt.InvalidAudienceError:
            raise _OAuthError("invalid_grant", "audience is invalid") from None
        except jwt.ExpiredSignatureError:
            raise _OAuthError("invalid_grant", "expired authorization code") from None
        except jwt.PyJWTError:
            raise _OAuthError("invalid_grant", "invalid assertion") from None
        if claims["exp"] > time.time() + _JWT_MAX_LIFETIME:
            raise _OAuthError("invalid_grant", "invalid assertion")
        with self._mutex:
            return self._approved(app, str(claims["sub"])), app

    def _refresh_grant(self, form: dict[str, str]) -> tuple[FakeUser, ConnectedApp, str | None]:
        with self._mutex:
            app = self._app(form.get("client_id", ""))
            if "client_secret" in form:
                self._check_secret(app, form["client_secret"])
            owner = self._refresh_tokens.get(form.get("refresh_token", ""))
            if owner is None or owner[0] != app.client_id or owner[1] not in self._users:
                raise _OAuthError("invalid_grant", "expired access/refresh token")
            user = self._users[owner[1]]
            if not app.rotate_refresh_tokens:
                return user, app, None
            # Rotation: the used refresh token is spent, a new one comes back.
            del self._refresh_tokens[form["refresh_token"]]
            family = self._families.pop(form["refresh_token"], form["refresh_token"])
            return user, app, self._new_refresh_token(app.client_id, user.username, family)

    def _client_credentials_grant(self, form: dict[str, str]) -> tuple[FakeUser, ConnectedApp]:
        with self._mutex:
            app = self._apps.get(form.get("client_id", ""))
            if app is None:
                raise _OAuthError("invalid_client", "invalid client credentials")
            self._check_secret(app, form.get("client_secret"))
            if app.run_as is None or app.run_as not in self._users:
                raise _OAuthError("invalid_grant", "no client credentials user enabled")
            return self._users[app.run_as], app

    def _password_grant(self, form: dict[str, str]) -> tuple[FakeUser, ConnectedApp]:
        with self._mutex:
            app = self._app(form.get("client_id", ""))
            self._check_secret(app, form.get("client_secret"))
            user = self._users.get(form.get("username", ""))
            given = form.get("password", "").encode()
            if user is None or not hmac.compare_digest(given, (user.password + user.security_token).encode()):
                raise _OAuthError("invalid_grant", "authentication failure")
            return self._approved(app, user.username), app

    def _authorization_code_grant(self, form: dict[str, str]) -> tuple[FakeUser, ConnectedApp, str | None]:
        with self._mutex:
            app = self._app(form.get("client_id", ""))
            if "client_secret" in form or app.require_secret_for_web_server:
                self._check_secret(app, form.get("client_secret"))
            code = self._codes.pop(form.get("code", ""), None)  # single use, even when refused below
            if code is None or code.client_id != app.client_id:
                raise _OAuthError("invalid_grant", "invalid authorization code")
            if time.monotonic() - code.issued > self.code_lifetime:
                raise _OAuthError("invalid_grant", "expired authorization code")
            if form.get("redirect_uri") != code.redirect_uri:
                raise _OAuthError("invalid_grant", "redirect_uri must match configuration")
            if code.challenge is not None:
                verifier = form.get("code_verifier", "")
                digest = hashlib.sha256(verifier.encode()).digest()
                given = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
                if code.method != "S256":
                    given = verifier
                if not verifier or not hmac.compare_digest(given.encode(), code.challenge.encode()):
                    raise _OAuthError("invalid_grant", "invalid code verifier")
            elif "code_verifier" in form:
                raise _OAuthError("invalid_grant", "invalid code verifier")
            user = self._approved(app, code.username)
            refresh = None
            if "refresh_token" in code.scope.split() and "refresh_token" in app.scope.split():
                refresh = self._new_refresh_token(app.client_id, user.username, None)
            return user, app, refresh

    def _token_exchange_grant(self, form: dict[str, str]) -> tuple[FakeUser, ConnectedApp, str | None]:
        with self._mutex:
            app = self._app(form.get("client_id", ""))
            if "client_secret" in form:
                self._check_secret(app, form["client_secret"])
            subject, token_type = form.get("subject_token", ""), form.get("subject_token_type", "")
            if not subject or not token_type:
                raise _OAuthError("invalid_request", "missing required parameter: subject_token or subject_token_type")
            known = self._subject_tokens.get(subject)
            if known is None:
                raise _OAuthError("invalid_grant", "invalid subject token")
            if known[0] != token_type:
                raise _OAuthError("invalid_request", "unsupported subject token type")
            user = self._approved(app, known[1])
            refresh = None
            if "refresh_token" in form.get("scope", "").split() and "refresh_token" in app.scope.split():
                refresh = self._new_refresh_token(app.client_id, user.username, None)
            return user, app, refresh

    def _authorize(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        """``GET /services/oauth2/authorize``: the user logs in and approves at once; 302 to the callback."""
        args = {key: values[-1] for key, values in query.items()}
        with self._mutex:
            app = self._apps.get(args.get("client_id", ""))
            redirect_uri = args.get("redirect_uri", "")
            if app is None:
                return _error_page("OAUTH_EC_APP_NOT_FOUND", "invalid_client_id: client identifier invalid")
            if not redirect_uri or (app.callback_urls is not None and redirect_uri not in app.callback_urls):
                return _error_page("redirect_uri_mismatch", "redirect_uri must match configuration")
            state = args.get("state")

            def back(**params: str) -> tuple[int, dict[str, str], bytes]:
                if state is not None:
                    params["state"] = state
                separator = "&" if "?" in redirect_uri else "?"
                return 302, {"Location": redirect_uri + separator + urlencode(params)}, b""

            if args.get("response_type") != "code":
                return back(error="unsupported_response_type", error_description="response type not supported")
            method = args.get("code_challenge_method")
            challenge = args.get("code_challenge")
            if method is not None and method not in ("S256", "plain"):
                return back(error="invalid_request", error_description="invalid code_challenge_method")
            if self.deny_authorization:
                return back(error="access_denied", error_description="end-user denied authorization")
            username = self.authorize_as or self.default_user.username
            if username not in self._users:
                return back(error="access_denied", error_description="user does not exist")
            code = "aPrx" + secrets.token_urlsafe(40)
            self._codes[code] = _Code(app.client_id, username, redirect_uri, challenge,
                                      method or ("S256" if challenge else None),
                                      args.get("scope", app.scope), time.monotonic())
        return back(code=code)

    def _revoke_endpoint(self, method: str, query: dict[str, list[str]], body: bytes
                         ) -> tuple[int, dict[str, str], bytes]:
        """``/services/oauth2/revoke`` as Salesforce answers it: 200, or 400 with an OAuth error body."""
        with self._mutex:
            self.revoke_requests += 1
        token = (_form(body) if method == "POST" else {k: v[-1] for k, v in query.items()}).get("token", "")
        if not token:
            return 400, {}, json.dumps({"error": "unsupported_token_type",
                                        "error_description": "Token type not supported"}).encode()
        if not self.revoke(token):
            return 400, {}, json.dumps({"error": "invalid_token", "error_description": "Token was invalid"}).encode()
        return 200, {}, b""

    # -- bearer-checked resources -------------------------------------------

    def _idle(self, session: _Session, now: datetime) -> bool:
        return now - session.last_used > timedelta(seconds=self.session_idle_timeout)

    def _session(self, authorization: str | None) -> _Session | None:
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
            injected = _take(self._injected, path)
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


def _take(queue: list[_Injected], path: str) -> _Injected | None:
    """Consume one use of the first injected answer that applies to ``path`` (caller holds the lock)."""
    for item in queue:
        if item.path_prefix is None or path.startswith(item.path_prefix):
            item.count -= 1
            if item.count <= 0:
                queue.remove(item)
            return item
    return None


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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # 64 threads connecting at once must not hit a full backlog
    org: FakeSalesforce


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30  # idle keep-alive connections end instead of pinning a thread forever
    # Headers and body go out as two writes; without TCP_NODELAY the body waits ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        with self.server.org._mutex:
            self.server.org._connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.org._mutex:
                self.server.org._connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        # Only the method and path reach the log, never headers or bodies (tokens).
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def _dispatch(self, method: str) -> None:
        org = self.server.org
        parts = urlsplit(self.path)
        path = parts.path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        auth = self.headers.get("Authorization")
        try:
            if path == "/services/oauth2/token":
                result = self._token_endpoint(method, body)
                if result is None:
                    return
            elif path == "/services/oauth2/userinfo" or path.startswith("/id/"):
                result = org._userinfo(auth)
            elif path == "/services/oauth2/revoke" and method in ("POST", "GET"):
                result = org._revoke_endpoint(method, parse_qs(parts.query, keep_blank_values=True), body)
            elif path == "/services/oauth2/authorize" and method == "GET":
                result = org._authorize(parse_qs(parts.query, keep_blank_values=True))
            elif path.startswith(("/services/data", "/services/apexrest")):
                result = org._data(method, path, parse_qs(parts.query, keep_blank_values=True), body, auth,
                                   self.headers.get("Content-Type"), dict(self.headers.items()))
            else:
                error = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
                result = (404, {}, json.dumps(error).encode())
        except Exception:
            logger.exception("FakeSalesforce failed on %s %s", method, path)
            error = [{"errorCode": "UNKNOWN_EXCEPTION", "message": "An unexpected error occurred"}]
            result = (500, {}, json.dumps(error).encode())
        status, headers, payload = result
        with org._mutex:
            org.requests_log.append((method, path, status))
        logger.debug("FakeSalesforce %s %s -> %d", method, path, status)
        self.send_response(status)
        headers = {"Content-Type": _JSON, **headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if method != "HEAD" and payload:
            self.wfile.write(payload)

    def _token_endpoint(self, method: str, body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        org = self.server.org
        with org._mutex:
            org.token_requests += 1
            drop = org._drop_token_connections > 0
            if drop:
                org._drop_token_connections -= 1
                injected = None
            else:
                injected = _take(org._token_injected, "")
        if org.token_delay > 0:
            time.sleep(org.token_delay)
        if drop:
            # The request arrived (and for a refresh grant, the token is spent) but no answer comes.
            if method == "POST":
                form = _form(body)
                if form.get("grant_type") == "refresh_token":
                    org._token(form)
            with org._mutex:
                org.requests_log.append((method, "/services/oauth2/token", 0))
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return None
        if injected is not None:
            return injected.status, injected.headers, injected.body
        if method != "POST":
            return 405, {}, json.dumps({"error": "invalid_request", "error_description": "must use HTTP POST"}).encode()
        return org._token(_form(body))


def _error_page(code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    """What Salesforce shows the browser when it cannot redirect back: an error page, no redirect."""
    page = f"<html><body><h1>error={code}</h1><p>{message}</p></body></html>"
    return 400, {"Content-Type": "text/html;charset=UTF-8"}, page.encode()


def _form(body: bytes) -> dict[str, str]:
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[-1] for key, values in parsed.items()}
