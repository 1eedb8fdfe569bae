"""Salesforce auth sessions against a real local org (FakeSalesforce): every flow, every
error, single-flight under threads, after a fork, no leaked secrets.  The shared token store
(sessions, threads and processes minting once between them) is ``test_token_sharing.py``."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from authkit.errors import AuthenticationError, ConfigurationError
from authkit.salesforce import (
    AuthSession,
    ClientCredentialsAuth,
    JwtAuth,
    PasswordAuth,
    RefreshTokenAuth,
    StaticTokenAuth,
)
from authkit.salesforce._oauth import normalize_url
from authkit.salesforce.auth import default_audience
from authkit.storage import MemoryStorage
from authkit.testing import ConnectedApp, FakeSalesforce
from tests.auth_sessions import call_api, in_threads, make, refused
from tests.clock import FakeClock

FLOWS = ["jwt", "refresh_token", "client_credentials", "password"]


@pytest.fixture
def org(clock: FakeClock) -> Iterator[FakeSalesforce]:
    with FakeSalesforce(clock=clock) as fake:
        yield fake


@pytest.fixture
def app(org: FakeSalesforce) -> ConnectedApp:
    return org.register_jwt_app(run_as=org.default_user.username)


# -- the contract --------------------------------------------------------------------


def test_auth_session_is_abstract_with_a_no_op_invalidate() -> None:
    with pytest.raises(TypeError):
        AuthSession()  # type: ignore[abstract]

    class Fixed(AuthSession):
        def access_token(self) -> str:
            return "t"

        @property
        def instance_url(self) -> str:
            return "https://x.my.salesforce.com"

    fixed = Fixed()
    fixed.invalidate("t")
    assert fixed.access_token() == "t"
    with pytest.raises(TypeError):
        fixed.invalidate(None)  # type: ignore[arg-type]


def test_static_token_auth() -> None:
    auth = StaticTokenAuth("00Dxx!secret-static", "https://acme.my.salesforce.com/")
    assert auth.instance_url == "https://acme.my.salesforce.com"
    assert auth.access_token() == "00Dxx!secret-static"
    auth.invalidate("00Dxx!secret-static")  # cannot refresh: still the same token
    assert auth.access_token() == "00Dxx!secret-static"
    assert "secret-static" not in repr(auth)
    with pytest.raises(ValueError):
        StaticTokenAuth("", "https://acme.my.salesforce.com")
    with pytest.raises(TypeError):
        StaticTokenAuth(None, "https://acme.my.salesforce.com")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        StaticTokenAuth("t", "http://acme.my.salesforce.com")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://login.salesforce.com", "https://login.salesforce.com"),
        ("https://Acme.My.Salesforce.com/", "https://acme.my.salesforce.com"),
        ("https://acme.my.salesforce.com:8443", "https://acme.my.salesforce.com:8443"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:1", "http://localhost:1"),
        ("http://[::1]:9", "http://[::1]:9"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert normalize_url(url, "login_url") == expected


@pytest.mark.parametrize(
    "url",
    ["http://login.salesforce.com", "ftp://x", "login.salesforce.com", "https://x.com/services",
     "https://x.com?a=1", "https://user:pw@x.com", "https://x.com:99999", ""],
)
def test_normalize_url_rejects(url: str) -> None:
    with pytest.raises(ValueError) as info:
        normalize_url(url, "login_url")
    assert "pw" not in str(info.value) or "user:pw" not in str(info.value)


@pytest.mark.parametrize(
    ("login_url", "audience"),
    [
        ("https://login.salesforce.com", "https://login.salesforce.com"),
        ("https://test.salesforce.com", "https://test.salesforce.com"),
        ("https://acme.my.salesforce.com", "https://login.salesforce.com"),
        ("https://acme--uat.sandbox.my.salesforce.com", "https://test.salesforce.com"),
        ("https://acme.my.site.com", "https://acme.my.site.com"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ],
)
def test_default_jwt_audience(login_url: str, audience: str) -> None:
    assert default_audience(login_url) == audience


# -- every flow: happy path ----------------------------------------------------------------


@pytest.mark.parametrize("flow", FLOWS)
def test_flow_mints_once_and_caches(flow: str, org: FakeSalesforce, app: ConnectedApp) -> None:
    auth = make(flow, org, app)
    token = call_api(auth)
    assert auth.instance_url == org.instance_url
    assert auth.access_token() == token and call_api(auth) == token
    assert org.token_requests == 1
    assert token not in repr(auth) and app.client_secret not in repr(auth)


def test_instance_url_before_any_token_mints_one(org: FakeSalesforce, app: ConnectedApp) -> None:
    auth = make("jwt", org, app)
    assert auth.instance_url == org.instance_url
    assert org.token_requests == 1
    auth.access_token()
    assert org.token_requests == 1


def test_jwt_assertion_claims(org: FakeSalesforce, app: ConnectedApp) -> None:
    auth = make("jwt", org, app)
    assert isinstance(auth, JwtAuth)
    form = auth._grant()
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert jwt.get_unverified_header(form["assertion"])["alg"] == "RS256"
    claims = jwt.decode(form["assertion"], options={"verify_signature": False})
    assert claims["iss"] == app.client_id and claims["sub"] == org.default_user.username
    assert claims["aud"] == org.login_url
    assert time.time() < claims["exp"] <= time.time() + 181


def test_jwt_private_key_forms(org: FakeSalesforce, app: ConnectedApp, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    pem = app.private_key_pem
    assert pem is not None
    key_file = tmp_path / "server.key"
    key_file.write_text(pem)
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"open sesame"))
    enc_file = tmp_path / "enc.key"
    enc_file.write_bytes(encrypted)
    user = org.default_user.username
    for private_key, passphrase in [(pem, None), (pem.encode(), None), (str(key_file), None), (key_file, None),
                                    (encrypted, "open sesame"), (enc_file, b"open sesame")]:
        auth = JwtAuth(app.client_id, user, private_key, login_url=org.login_url, passphrase=passphrase)
        assert auth.access_token()


def test_jwt_private_key_errors_never_show_the_key(org: FakeSalesforce, app: ConnectedApp, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = app.private_key_pem
    assert pem is not None
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"right"))
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    broken = pem[:200] + "garbage" + pem[220:]
    cases: list[tuple[Any, Any]] = [
        (encrypted, None), (encrypted, "wrong"), (pem, "unneeded"), (ec_pem, None), (broken, None),
        (str(tmp_path / "missing.key"), None),
    ]
    for private_key, passphrase in cases:
        with pytest.raises(ConfigurationError) as info:
            JwtAuth(app.client_id, "u@example.com", private_key, login_url=org.login_url, passphrase=passphrase)
        text = f"{info.value} {info.value!r} {info.value.__cause__!r}"
        assert "BEGIN" not in text and pem[40:80] not in text
    with pytest.raises(TypeError):
        JwtAuth(app.client_id, "u@example.com", 12345, login_url=org.login_url)  # type: ignore[arg-type]


def test_jwt_audience_override(org: FakeSalesforce, app: ConnectedApp) -> None:
    auth = make("jwt", org, app, audience="https://community.example.com")
    with pytest.raises(AuthenticationError) as info:
        auth.access_token()
    assert (info.value.error, info.value.error_description) == ("invalid_grant", "audience is invalid")
    org.jwt_audiences.add("https://community.example.com")
    assert auth.access_token()


def test_bad_arguments(org: FakeSalesforce, app: ConnectedApp) -> None:
    with pytest.raises(ValueError):
        make("jwt", org, app, max_token_age=0)
    with pytest.raises(TypeError):
        make("jwt", org, app, max_token_age="1h")
    with pytest.raises(TypeError):
        make("jwt", org, app, on_refresh_token="print")
    with pytest.raises(TypeError):
        make("jwt", org, app, token_store="sqlite://")
    with pytest.raises(TypeError):
        make("jwt", org, app, session=object())
    with pytest.raises(ValueError):
        make("jwt", org, app, timeout=0)
    with pytest.raises(ValueError):
        make("jwt", org, app, retries=-1)
    with pytest.raises(ValueError):
        JwtAuth("c", "u", app.private_key_pem or "", login_url="http://login.salesforce.com")
    with pytest.raises(ValueError):
        PasswordAuth("c", "s", "", "p", login_url=org.login_url)
    with pytest.raises(TypeError):
        ClientCredentialsAuth("c", None, org.login_url)  # type: ignore[arg-type]


# -- errors ------------------------------------------------------------------------------


def test_jwt_errors(org: FakeSalesforce, app: ConnectedApp) -> None:
    assert app.private_key_pem is not None
    unknown_client = JwtAuth("3MVG9nope", org.default_user.username, app.private_key_pem, login_url=org.login_url)
    error = refused(unknown_client)
    assert (error.error, error.error_description, error.status_code) == (
        "invalid_client_id", "client identifier invalid", 400)
    assert "invalid_client_id" in str(error)
    unknown_user = JwtAuth(app.client_id, "ghost@example.com", app.private_key_pem, login_url=org.login_url)
    assert refused(unknown_user).error_description == "user hasn't approved this consumer"
    other = org.register_jwt_app()
    assert other.private_key_pem is not None
    wrong_key = JwtAuth(app.client_id, org.default_user.username, other.private_key_pem, login_url=org.login_url)
    assert refused(wrong_key).error_description == "invalid assertion"


def test_refresh_token_errors(org: FakeSalesforce, app: ConnectedApp) -> None:
    error = refused(make("refresh_token", org, app, refresh_token="5Aep861bogus"))
    assert (error.error, error.error_description) == ("invalid_grant", "expired access/refresh token")
    error = refused(make("refresh_token", org, app, client_secret="wrong"))
    assert (error.error, error.error_description) == ("invalid_client", "invalid client credentials")


def test_client_credentials_and_password_errors(org: FakeSalesforce, app: ConnectedApp) -> None:
    cc = ClientCredentialsAuth(app.client_id, "wrong", org.login_url)
    assert refused(cc).error == "invalid_client"
    no_run_as = org.register_app()
    cc = ClientCredentialsAuth(no_run_as.client_id, no_run_as.client_secret, org.login_url)
    assert refused(cc).error_description == "no client credentials user enabled"
    user = org.default_user
    pw = PasswordAuth(app.client_id, app.client_secret, user.username, user.password, "", login_url=org.login_url)
    error = refused(pw)
    assert (error.error, error.error_description, error.status_code) == (
        "invalid_grant", "authentication failure", 400)


@pytest.mark.parametrize("flow", FLOWS)
def test_a_bad_credential_never_loops(flow: str, org: FakeSalesforce, app: ConnectedApp) -> None:
    """One call, one request; 64 threads queued behind a failing mint share its failure."""
    org.inject_token_error(400, "invalid_grant", "authentication failure", count=1000)
    auth = make(flow, org, app)
    refused(auth)
    assert org.token_requests == 1
    org.token_delay = 0.3
    results = in_threads(64, auth.access_token)
    assert all(isinstance(r, AuthenticationError) for r in results)
    assert org.token_requests == 2
    refused(auth)  # a later call tries again (once): the caller decides when to give up
    assert org.token_requests == 3


@pytest.mark.parametrize("flow", FLOWS)
def test_signature_mismatch(flow: str, org: FakeSalesforce, app: ConnectedApp) -> None:
    org.tamper_signatures = True
    options = {"client_secret": app.client_secret} if flow == "jwt" else {}
    error = refused(make(flow, org, app, **options))
    assert error.error == "invalid_signature" and "signature" in str(error)
    if flow == "jwt":  # without the secret there is nothing to verify with
        assert make("jwt", org, app).access_token()


# -- transient failures, redirects, timeouts -------------------------------------------------


@pytest.mark.parametrize("flow", ["jwt", "client_credentials", "password"])
def test_transient_failures_are_retried_with_bounded_backoff(
    flow: str, org: FakeSalesforce, app: ConnectedApp, caplog: pytest.LogCaptureFixture
) -> None:
    org.inject_token_error(503, body=b"<html>Maintenance</html>", count=1)
    org.drop_token_connections(1)
    with caplog.at_level(logging.WARNING, "authkit.salesforce"):
        assert make(flow, org, app).access_token()
    assert org.token_requests == 3
    assert caplog.text.count("retrying") == 2
    org.inject_token_error(500, body=b"", count=10)
    error = refused(make(flow, org, app, retries=2))
    assert error.status_code == 500 and error.error is None
    assert org.token_requests == 6


def test_a_refresh_grant_is_never_resent_once_it_may_have_reached_the_server(
    org: FakeSalesforce, app: ConnectedApp
) -> None:
    rotating = org.register_app(rotate_refresh_tokens=True)
    rt = org.issue_refresh_token(rotating.client_id)
    auth = RefreshTokenAuth(rotating.client_id, rt, rotating.client_secret, login_url=org.login_url, backoff=0.01)
    org.drop_token_connections(1)  # the server spent the refresh token, the answer got lost
    error = refused(auth)
    assert "not retried" in str(error) and org.token_requests == 1
    org.inject_token_error(503, body=b"", count=1)
    refused(make("refresh_token", org, app))
    assert org.token_requests == 2


def test_an_unsent_refresh_grant_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:  # a port nobody listens on: the connection is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    auth = RefreshTokenAuth("3MVG9x", "5Aep861-the-refresh-token", login_url=f"http://127.0.0.1:{port}",
                            retries=2, backoff=0.01)
    with caplog.at_level(logging.WARNING, "authkit.salesforce"):
        error = refused(auth)
    assert caplog.text.count("retrying") == 2
    assert error.status_code is None and isinstance(error.__cause__, requests.ConnectionError)


def test_redirects_are_not_followed(org: FakeSalesforce, app: ConnectedApp) -> None:
    org.inject_token_error(302, headers={"Location": org.login_url + "/elsewhere"})
    error = refused(make("jwt", org, app))
    assert error.status_code == 302 and "redirect" in str(error)
    assert [entry[1] for entry in org.requests_log] == ["/services/oauth2/token"]


def test_token_endpoint_timeout(org: FakeSalesforce, app: ConnectedApp) -> None:
    org.token_delay = 1.0
    started = time.perf_counter()
    error = refused(make("jwt", org, app, timeout=0.2, retries=0))
    assert time.perf_counter() - started < 0.9
    assert isinstance(error.__cause__, requests.Timeout)


def test_malformed_success_responses(org: FakeSalesforce, app: ConnectedApp) -> None:
    org.inject_token_error(200, body=b"<html>not json</html>")
    assert "no access_token" in str(refused(make("jwt", org, app)))
    org.inject_token_error(200, body=b'{"access_token": "x", "instance_url": "http://evil.example.com"}')
    assert "instance_url" in str(refused(make("jwt", org, app)))
    org.inject_token_error(400, body=b"Bad Request")
    error = refused(make("jwt", org, app))
    assert error.status_code == 400 and error.error is None


# -- single flight and compare-and-swap ---------------------------------------------------------


@pytest.mark.parametrize("flow", FLOWS)
def test_64_threads_cold_then_expired_cause_one_request_each(
    flow: str, org: FakeSalesforce, app: ConnectedApp
) -> None:
    auth = make(flow, org, app)
    org.token_delay = 0.2
    first = in_threads(64, lambda: call_api(auth))
    assert org.token_requests == 1 and len(set(first)) == 1
    org.expire_sessions()
    second = in_threads(64, lambda: call_api(auth))
    assert not [r for r in second if isinstance(r, Exception)]
    assert org.token_requests == 2 and len(set(second)) == 1 and second[0] != first[0]


def test_invalidate_is_compare_and_swap(org: FakeSalesforce, app: ConnectedApp) -> None:
    auth = make("jwt", org, app)
    token = auth.access_token()
    auth.invalidate("some-older-token")
    assert auth.access_token() == token and org.token_requests == 1
    auth.invalidate(token)
    new = auth.access_token()
    assert new != token and org.token_requests == 2
    auth.invalidate(token)  # a late 401 for the old token changes nothing
    assert auth.access_token() == new and org.token_requests == 2
    with pytest.raises(TypeError):
        auth.invalidate(None)  # type: ignore[arg-type]


def test_max_token_age(org: FakeSalesforce, app: ConnectedApp, clock: FakeClock) -> None:
    store = MemoryStorage(clock=clock)
    auth = make("jwt", org, app, max_token_age=600, clock=clock, token_store=store)
    token = auth.access_token()
    clock.advance(599)
    assert auth.access_token() == token
    clock.advance(2)
    renewed = auth.access_token()
    assert renewed != token and org.token_requests == 2
    stored = store.get_token(auth.token_id or "")
    assert stored is not None and stored.access_token == renewed and stored.expires_at is not None


# -- rotation ------------------------------------------------------------------------------------


def test_rotated_refresh_tokens_are_adopted_persisted_and_announced(org: FakeSalesforce) -> None:
    rotating = org.register_app(rotate_refresh_tokens=True)
    initial = org.issue_refresh_token(rotating.client_id)
    seen: list[str] = []
    also: list[str] = []
    store = MemoryStorage()
    auth = RefreshTokenAuth(rotating.client_id, initial, rotating.client_secret, login_url=org.login_url,
                            token_store=store, on_refresh_token=[seen.append, also.append])
    token = auth.access_token()
    assert len(seen) == 1 and seen == also and seen[0] != initial
    stored = store.get_token(auth.token_id or "")
    assert stored is not None and stored.refresh_token == seen[0] and stored.access_token == token
    auth.invalidate(token)
    auth.access_token()  # works only if the rotated token was adopted: `initial` is spent
    assert len(seen) == 2 and org.token_requests == 2
    stored = store.get_token(auth.token_id or "")
    assert stored is not None and stored.refresh_token == seen[1]

    # Another process configured with the (spent) initial token takes the newest one from the store.
    org.expire_sessions()
    other = RefreshTokenAuth(rotating.client_id, initial, rotating.client_secret, login_url=org.login_url,
                             token_store=store)
    assert other.token_id == auth.token_id
    call_api(other)
    assert org.token_requests == 3


def test_a_failing_refresh_token_callback_does_not_fail_the_login(
    org: FakeSalesforce, caplog: pytest.LogCaptureFixture
) -> None:
    rotating = org.register_app(rotate_refresh_tokens=True)

    def broken(_: str) -> None:
        raise RuntimeError("vault is down")

    auth = RefreshTokenAuth(rotating.client_id, org.issue_refresh_token(rotating.client_id), login_url=org.login_url,
                            on_refresh_token=broken)
    with caplog.at_level(logging.ERROR, "authkit.salesforce"):
        assert auth.access_token()
    assert "on_refresh_token callback failed" in caplog.text


def test_configured_refresh_token_is_tried_when_the_stored_one_is_refused(org: FakeSalesforce) -> None:
    app = org.register_app()
    old = org.issue_refresh_token(app.client_id)
    store = MemoryStorage()
    first = RefreshTokenAuth(app.client_id, old, login_url=org.login_url, token_store=store, username="u")
    first.invalidate(first.access_token())
    org.revoke(old)  # the user re-authorized: a new refresh token was configured everywhere
    new = org.issue_refresh_token(app.client_id)
    second = RefreshTokenAuth(app.client_id, new, login_url=org.login_url, token_store=store, username="u")
    assert second.access_token()
    stored = store.get_token(second.token_id or "")
    assert stored is not None and stored.refresh_token == new


# -- after a fork ----------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_a_fresh_lock_and_connection_pool(org: FakeSalesforce, app: ConnectedApp) -> None:
    auth = make("jwt", org, app)
    assert isinstance(auth, JwtAuth)
    token = auth.access_token()  # leaves a kept-alive connection in the pool
    parent_session = auth._endpoint.session
    with auth._mint_lock:  # as if a parent thread were minting at the moment of the fork
        pid = os.fork()
        if pid == 0:  # the child: exit code says what went wrong
            signal.alarm(30)  # a deadlocked child dies instead of hanging the suite
            code = 0
            try:
                code = 1 if auth._endpoint.session is parent_session else code
                code = 2 if auth.access_token() != token else code
                auth.invalidate(token)
                code = 3 if auth.access_token() == token else code
            except BaseException:
                code = 4
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert org.token_requests == 2
    assert auth.access_token() == token  # the parent is untouched


# -- secrets never leak ------------------------------------------------------------------------------


def test_no_secret_in_logs_reprs_or_errors(
    org: FakeSalesforce, app: ConnectedApp, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    rotating = org.register_app(rotate_refresh_tokens=True)
    initial_rt = org.issue_refresh_token(rotating.client_id)
    user = org.default_user
    assert app.private_key_pem is not None
    secrets = {app.client_secret, rotating.client_secret, user.password, user.security_token,
               user.password + user.security_token, initial_rt}
    secrets |= {line for line in app.private_key_pem.splitlines() if "-----" not in line}
    texts: list[str] = []
    rotated: list[str] = []
    store = MemoryStorage()
    with caplog.at_level(logging.DEBUG):
        sessions: list[AuthSession] = [
            make(flow, org, app, token_store=store) for flow in ("jwt", "client_credentials", "password")
        ]
        sessions.append(RefreshTokenAuth(rotating.client_id, initial_rt, rotating.client_secret,
                                         login_url=org.login_url, token_store=store, on_refresh_token=rotated.append))
        for auth in sessions:
            token = call_api(auth)
            secrets.add(token)
            auth.invalidate(token)
            secrets.add(call_api(auth))
            texts.append(repr(auth))
            assert isinstance(auth, JwtAuth | ClientCredentialsAuth | PasswordAuth | RefreshTokenAuth)
            if isinstance(auth, JwtAuth):
                secrets.add(auth._grant()["assertion"])
        secrets |= set(rotated)
        texts += [repr(t) for t in store.list_user_tokens(user.username)]
        # Every kind of failure, with the secrets in play.
        failing: list[AuthSession] = [
            make("password", org, app),
            PasswordAuth(app.client_id, app.client_secret, user.username, "wrong-" + user.password,
                         login_url=org.login_url),
            RefreshTokenAuth(rotating.client_id, initial_rt, rotating.client_secret, login_url=org.login_url),
            make("jwt", org, app, client_secret=app.client_secret),
        ]
        for auth in failing:
            org.tamper_signatures = auth is failing[0] or auth is failing[3]
            with pytest.raises(AuthenticationError) as info:
                auth.access_token()
            error: BaseException | None = info.value
            while error is not None:
                texts += [str(error), repr(error)]
                error = error.__cause__ or error.__context__
    texts.append(caplog.text)
    texts += [record.getMessage() for record in caplog.records]
    joined = "\n".join(texts)
    assert "eyJ" not in joined  # no JWT (assertion) anywhere
    leaked = [s for s in secrets if s and s in joined]
    assert not leaked, f"{len(leaked)} secret(s) leaked"
