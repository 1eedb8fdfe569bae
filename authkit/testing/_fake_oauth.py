"""The OAuth endpoints of :class:`~authkit.testing.FakeSalesforce`: ``/services/oauth2/token`` for
every flow authkit supports (JWT bearer, refresh token with optional rotation, client credentials,
password, authorization code with PKCE, token exchange), ``authorize`` (the browser's half of the
web-server flow) and ``revoke``, verifying what they are given for real and refusing with
Salesforce's own error bodies.

Like :mod:`authkit.testing._fake_composite`, each function takes the org and the request and
returns ``(status, extra headers, body bytes)``; the org's state stays on the org.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

import jwt

from authkit.salesforce._oauth import response_signature
from authkit.salesforce.auth import JWT_BEARER_GRANT, TOKEN_EXCHANGE_GRANT

if TYPE_CHECKING:
    from authkit.testing.fake_salesforce import ConnectedApp, FakeSalesforce, FakeUser

__all__ = ["Session", "Code", "token_endpoint", "authorize_endpoint", "revoke_endpoint", "generate_rsa_key_pair",
           "public_key_from_pem", "form_fields"]

_JWT_MAX_LIFETIME = 180 + 30  # Salesforce wants exp at most 3 minutes ahead; allow some clock skew


@dataclass
class Session:
    """An issued access token's session."""

    user: FakeUser
    app: ConnectedApp
    last_used: datetime
    family: str | None = None  # the refresh token family it came from (revoking that ends it)


@dataclass
class Code:
    """An authorization code waiting for its exchange."""

    client_id: str
    username: str
    redirect_uri: str
    challenge: str | None
    method: str | None
    scope: str
    issued: float


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


def public_key_from_pem(pem: str) -> Any:
    """The public key of a PEM public key or X.509 certificate (what Salesforce asks you to upload)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    data = pem.encode()
    if b"CERTIFICATE" in data:
        return x509.load_pem_x509_certificate(data).public_key()
    return serialization.load_pem_public_key(data)


def token_endpoint(org: FakeSalesforce, form: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """``POST /services/oauth2/token`` with ``form``: a new session (and refresh token, when the grant
    gives one), or the OAuth error Salesforce answers."""
    grant = form.get("grant_type", "")
    try:
        if grant == JWT_BEARER_GRANT:
            user, app = _jwt_grant(org, form.get("assertion", ""))
            refresh = None
        elif grant == "refresh_token":
            user, app, refresh = _refresh_grant(org, form)
        elif grant == "client_credentials":
            user, app = _client_credentials_grant(org, form)
            refresh = None
        elif grant == "password":
            user, app = _password_grant(org, form)
            refresh = None
        elif grant == "authorization_code":
            user, app, refresh = _authorization_code_grant(org, form)
        elif grant == TOKEN_EXCHANGE_GRANT:
            user, app, refresh = _token_exchange_grant(org, form)
        else:
            raise _OAuthError("unsupported_grant_type", "grant type not supported")
    except _OAuthError as exc:
        body = {"error": exc.error, "error_description": exc.description}
        return exc.status, {}, json.dumps(body).encode()
    issued = _issue(org, user, app, refresh, form.get("refresh_token") if grant == "refresh_token" else None)
    if grant == TOKEN_EXCHANGE_GRANT:
        issued["issued_token_type"] = "urn:ietf:params:oauth:token-type:access_token"
    return 200, {}, json.dumps(issued).encode()


def _issue(org: FakeSalesforce, user: FakeUser, app: ConnectedApp, refresh_token: str | None,
           used_refresh_token: str | None = None) -> dict[str, str]:
    access_token = f"{org.org_id}!AQ{secrets.token_urlsafe(60)}"
    with org._mutex:
        family_of = refresh_token or used_refresh_token
        family = org._families.get(family_of) if family_of else None
        org._sessions[access_token] = Session(user, app, org._clock(), family)
    identity_url = f"{org.login_url}/id/{org.org_id}/{user.user_id}"
    issued_at = str(int(time.time() * 1000))
    response = {
        "access_token": access_token,
        # tamper_signatures: what a client sees when something altered the response on the way.
        "signature": response_signature(
            app.client_secret + ("x" if org.tamper_signatures else ""), identity_url, issued_at
        ),
        "scope": app.scope,
        "instance_url": org.instance_url_override or org.instance_url,
        "id": identity_url,
        "token_type": "Bearer",
        "issued_at": issued_at,
    }
    if refresh_token is not None:
        response["refresh_token"] = refresh_token
    if org.omit_signatures:
        del response["signature"]
    return response


def _app(org: FakeSalesforce, client_id: str) -> ConnectedApp:
    app = org._apps.get(client_id)
    if app is None:
        raise _OAuthError("invalid_client_id", "client identifier invalid")
    return app


def _check_secret(app: ConnectedApp, secret: str | None) -> None:
    if secret is None or not hmac.compare_digest(secret.encode(), app.client_secret.encode()):
        raise _OAuthError("invalid_client", "invalid client credentials")


def _approved(org: FakeSalesforce, app: ConnectedApp, username: str) -> FakeUser:
    user = org._users.get(username)
    if user is None or (app.approved_users is not None and username not in app.approved_users):
        raise _OAuthError("invalid_grant", "user hasn't approved this consumer")
    return user


def _jwt_grant(org: FakeSalesforce, assertion: str) -> tuple[FakeUser, ConnectedApp]:
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False})
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        raise _OAuthError("invalid_grant", "invalid assertion") from None
    with org._mutex:
        app = _app(org, str(claims.get("iss", "")))
    if app.public_key_pem is None or header.get("alg") != "RS256":
        raise _OAuthError("invalid_grant", "invalid assertion")
    audiences = {org.login_url, *org.jwt_audiences}
    try:
        claims = jwt.decode(
            assertion,
            public_key_from_pem(app.public_key_pem),
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
    with org._mutex:
        return _approved(org, app, str(claims["sub"])), app


def _refresh_grant(org: FakeSalesforce, form: dict[str, str]) -> tuple[FakeUser, ConnectedApp, str | None]:
    with org._mutex:
        app = _app(org, form.get("client_id", ""))
        if "client_secret" in form:
            _check_secret(app, form["client_secret"])
        owner = org._refresh_tokens.get(form.get("refresh_token", ""))
        if owner is None or owner[0] != app.client_id or owner[1] not in org._users:
            raise _OAuthError("invalid_grant", "expired access/refresh token")
        user = org._users[owner[1]]
        if not app.rotate_refresh_tokens:
            return user, app, None
        # Rotation: the used refresh token is spent, a new one comes back.
        del org._refresh_tokens[form["refresh_token"]]
        family = org._families.pop(form["refresh_token"], form["refresh_token"])
        return user, app, org._new_refresh_token(app.client_id, user.username, family)


def _client_credentials_grant(org: FakeSalesforce, form: dict[str, str]) -> tuple[FakeUser, ConnectedApp]:
    with org._mutex:
        app = org._apps.get(form.get("client_id", ""))
        if app is None:
            raise _OAuthError("invalid_client", "invalid client credentials")
        _check_secret(app, form.get("client_secret"))
        if app.run_as is None or app.run_as not in org._users:
            raise _OAuthError("invalid_grant", "no client credentials user enabled")
        return org._users[app.run_as], app


def _password_grant(org: FakeSalesforce, form: dict[str, str]) -> tuple[FakeUser, ConnectedApp]:
    with org._mutex:
        app = _app(org, form.get("client_id", ""))
        _check_secret(app, form.get("client_secret"))
        user = org._users.get(form.get("username", ""))
        given = form.get("password", "").encode()
        if user is None or not hmac.compare_digest(given, (user.password + user.security_token).encode()):
            raise _OAuthError("invalid_grant", "authentication failure")
        return _approved(org, app, user.username), app


def _authorization_code_grant(org: FakeSalesforce, form: dict[str, str]) -> tuple[FakeUser, ConnectedApp, str | None]:
    with org._mutex:
        app = _app(org, form.get("client_id", ""))
        if "client_secret" in form or app.require_secret_for_web_server:
            _check_secret(app, form.get("client_secret"))
        code = org._codes.pop(form.get("code", ""), None)  # single use, even when refused below
        if code is None or code.client_id != app.client_id:
            raise _OAuthError("invalid_grant", "invalid authorization code")
        if time.monotonic() - code.issued > org.code_lifetime:
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
        user = _approved(org, app, code.username)
        refresh = None
        if "refresh_token" in code.scope.split() and "refresh_token" in app.scope.split():
            refresh = org._new_refresh_token(app.client_id, user.username, None)
        return user, app, refresh


def _token_exchange_grant(org: FakeSalesforce, form: dict[str, str]) -> tuple[FakeUser, ConnectedApp, str | None]:
    with org._mutex:
        app = _app(org, form.get("client_id", ""))
        if "client_secret" in form:
            _check_secret(app, form["client_secret"])
        subject, token_type = form.get("subject_token", ""), form.get("subject_token_type", "")
        if not subject or not token_type:
            raise _OAuthError("invalid_request", "missing required parameter: subject_token or subject_token_type")
        known = org._subject_tokens.get(subject)
        if known is None:
            raise _OAuthError("invalid_grant", "invalid subject token")
        if known[0] != token_type:
            raise _OAuthError("invalid_request", "unsupported subject token type")
        user = _approved(org, app, known[1])
        refresh = None
        if "refresh_token" in form.get("scope", "").split() and "refresh_token" in app.scope.split():
            refresh = org._new_refresh_token(app.client_id, user.username, None)
        return user, app, refresh


def authorize_endpoint(org: FakeSalesforce, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
    """``GET /services/oauth2/authorize``: the user logs in and approves at once; 302 to the callback."""
    args = {key: values[-1] for key, values in query.items()}
    with org._mutex:
        app = org._apps.get(args.get("client_id", ""))
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
        if org.deny_authorization:
            return back(error="access_denied", error_description="end-user denied authorization")
        username = org.authorize_as or org.default_user.username
        if username not in org._users:
            return back(error="access_denied", error_description="user does not exist")
        code = "aPrx" + secrets.token_urlsafe(40)
        org._codes[code] = Code(app.client_id, username, redirect_uri, challenge,
                                method or ("S256" if challenge else None),
                                args.get("scope", app.scope), time.monotonic())
    return back(code=code)


def revoke_endpoint(org: FakeSalesforce, method: str, query: dict[str, list[str]], body: bytes
                    ) -> tuple[int, dict[str, str], bytes]:
    """``/services/oauth2/revoke`` as Salesforce answers it: 200, or 400 with an OAuth error body."""
    with org._mutex:
        org.revoke_requests += 1
    token = (form_fields(body) if method == "POST" else {k: v[-1] for k, v in query.items()}).get("token", "")
    if not token:
        return 400, {}, json.dumps({"error": "unsupported_token_type",
                                    "error_description": "Token type not supported"}).encode()
    if not org.revoke(token):
        return 400, {}, json.dumps({"error": "invalid_token", "error_description": "Token was invalid"}).encode()
    return 200, {}, b""


def _error_page(code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    """What Salesforce shows the browser when it cannot redirect back: an error page, no redirect."""
    page = f"<html><body><h1>error={code}</h1><p>{message}</p></body></html>"
    return 400, {"Content-Type": "text/html;charset=UTF-8"}, page.encode()


def form_fields(body: bytes) -> dict[str, str]:
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[-1] for key, values in parsed.items()}
