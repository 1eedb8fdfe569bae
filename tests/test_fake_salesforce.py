"""FakeSalesforce over real HTTP: the token endpoint, sessions, the /services/data plumbing, the fixture."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from authkit.salesforce._oauth import response_signature
from authkit.testing import ConnectedApp, FakeSalesforce
from authkit.testing.fake_salesforce import generate_rsa_key_pair
from tests.clock import FakeClock

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@pytest.fixture
def org(clock: FakeClock) -> Iterator[FakeSalesforce]:
    with FakeSalesforce(clock=clock, session_idle_timeout=600) as fake:
        yield fake


@pytest.fixture
def app(org: FakeSalesforce) -> ConnectedApp:
    return org.register_jwt_app(run_as=org.default_user.username)


def token(org: FakeSalesforce, **form: str) -> requests.Response:
    return requests.post(org.login_url + "/services/oauth2/token", data=form, timeout=10, allow_redirects=False)


def assertion(app: ConnectedApp, org: FakeSalesforce, **claims: Any) -> str:
    assert app.private_key_pem is not None
    body = {"iss": app.client_id, "sub": org.default_user.username, "aud": org.login_url,
            "exp": int(time.time()) + 180, **claims}
    return jwt.encode(body, app.private_key_pem, algorithm="RS256")


def oauth_error(response: requests.Response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["error"], body["error_description"]


def bearer(sid: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {sid}"}


# -- token endpoint: the four grants -------------------------------------------------


def test_jwt_grant_issues_a_signed_session(org: FakeSalesforce, app: ConnectedApp) -> None:
    response = token(org, grant_type=JWT_GRANT, assertion=assertion(app, org))
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {"access_token", "instance_url", "id", "token_type", "issued_at", "signature", "scope"}
    assert body["instance_url"] == org.instance_url and body["token_type"] == "Bearer"
    assert body["signature"] == response_signature(app.client_secret, body["id"], body["issued_at"])
    assert "refresh_token" not in body
    assert org.token_requests == 1 and org.active_sessions == 1


@pytest.mark.parametrize(
    ("claims", "error", "description"),
    [
        ({"aud": "https://login.salesforce.com"}, "invalid_grant", "audience is invalid"),
        ({"exp": int(time.time()) - 600}, "invalid_grant", "expired authorization code"),
        ({"exp": int(time.time()) + 3600}, "invalid_grant", "invalid assertion"),
        ({"sub": "nobody@example.com"}, "invalid_grant", "user hasn't approved this consumer"),
        ({"iss": "3MVG9unknown"}, "invalid_client_id", "client identifier invalid"),
    ],
)
def test_jwt_grant_errors(
    org: FakeSalesforce, app: ConnectedApp, claims: dict[str, Any], error: str, description: str
) -> None:
    response = token(org, grant_type=JWT_GRANT, assertion=assertion(app, org, **claims))
    assert oauth_error(response) == (400, error, description)


def test_jwt_grant_rejects_a_key_that_is_not_registered(org: FakeSalesforce, app: ConnectedApp) -> None:
    other_private, _ = generate_rsa_key_pair()
    forged = jwt.encode({"iss": app.client_id, "sub": org.default_user.username, "aud": org.login_url,
                         "exp": int(time.time()) + 60}, other_private, algorithm="RS256")
    refused = token(org, grant_type=JWT_GRANT, assertion=forged)
    assert oauth_error(refused) == (400, "invalid_grant", "invalid assertion")
    assert oauth_error(token(org, grant_type=JWT_GRANT, assertion="not.a.jwt")) == (
        400, "invalid_grant", "invalid assertion")


def test_jwt_grant_honours_approved_users_and_extra_audiences(org: FakeSalesforce) -> None:
    org.add_user("other@example.com")
    app = org.register_jwt_app(approved_users={"other@example.com"})
    refused = token(org, grant_type=JWT_GRANT, assertion=assertion(app, org))
    assert oauth_error(refused)[2] == "user hasn't approved this consumer"
    org.jwt_audiences.add("https://login.salesforce.com")
    ok = token(org, grant_type=JWT_GRANT,
               assertion=assertion(app, org, sub="other@example.com", aud="https://login.salesforce.com"))
    assert ok.status_code == 200


def test_refresh_grant_with_and_without_rotation(org: FakeSalesforce) -> None:
    plain = org.register_app()
    rt = org.issue_refresh_token(plain.client_id)
    first = token(org, grant_type="refresh_token", client_id=plain.client_id, refresh_token=rt)
    assert first.status_code == 200 and "refresh_token" not in first.json()
    again = token(org, grant_type="refresh_token", client_id=plain.client_id, refresh_token=rt,
                  client_secret=plain.client_secret)
    assert again.status_code == 200

    rotating = org.register_app(rotate_refresh_tokens=True)
    rt = org.issue_refresh_token(rotating.client_id)
    rotated = token(org, grant_type="refresh_token", client_id=rotating.client_id, refresh_token=rt)
    new_rt = rotated.json()["refresh_token"]
    assert new_rt != rt
    spent = token(org, grant_type="refresh_token", client_id=rotating.client_id, refresh_token=rt)
    assert oauth_error(spent) == (400, "invalid_grant", "expired access/refresh token")
    assert token(org, grant_type="refresh_token", client_id=rotating.client_id, refresh_token=new_rt).ok


def test_refresh_grant_errors(org: FakeSalesforce) -> None:
    app = org.register_app()
    rt = org.issue_refresh_token(app.client_id)
    assert oauth_error(token(org, grant_type="refresh_token", client_id="nope", refresh_token=rt)) == (
        400, "invalid_client_id", "client identifier invalid")
    assert oauth_error(token(org, grant_type="refresh_token", client_id=app.client_id, refresh_token=rt,
                             client_secret="wrong")) == (400, "invalid_client", "invalid client credentials")
    assert oauth_error(token(org, grant_type="refresh_token", client_id=app.client_id, refresh_token="bogus")) == (
        400, "invalid_grant", "expired access/refresh token")
    other = org.register_app()
    assert oauth_error(token(org, grant_type="refresh_token", client_id=other.client_id, refresh_token=rt))[1] == (
        "invalid_grant")
    org.revoke(rt)
    assert token(org, grant_type="refresh_token", client_id=app.client_id, refresh_token=rt).status_code == 400


def test_client_credentials_grant(org: FakeSalesforce, app: ConnectedApp) -> None:
    ok = token(org, grant_type="client_credentials", client_id=app.client_id, client_secret=app.client_secret)
    assert ok.status_code == 200
    assert oauth_error(token(org, grant_type="client_credentials", client_id=app.client_id,
                             client_secret="wrong")) == (400, "invalid_client", "invalid client credentials")
    no_user = org.register_app()
    assert oauth_error(token(org, grant_type="client_credentials", client_id=no_user.client_id,
                             client_secret=no_user.client_secret)) == (
        400, "invalid_grant", "no client credentials user enabled")


def test_password_grant(org: FakeSalesforce, app: ConnectedApp) -> None:
    user = org.add_user("pw@example.com", "hunter2", "TOKEN")
    form = {"grant_type": "password", "client_id": app.client_id, "client_secret": app.client_secret,
            "username": user.username}
    assert token(org, **form, password="hunter2TOKEN").status_code == 200
    assert oauth_error(token(org, **form, password="hunter2")) == (400, "invalid_grant", "authentication failure")
    assert oauth_error(token(org, **{**form, "username": "ghost@example.com"}, password="x"))[2] == (
        "authentication failure")
    assert oauth_error(token(org, **{**form, "client_secret": "no"}, password="hunter2TOKEN"))[1] == "invalid_client"


def test_unknown_grant_type_and_wrong_method(org: FakeSalesforce) -> None:
    assert oauth_error(token(org, grant_type="urn:ietf:params:oauth:grant-type:saml2-bearer")) == (
        400, "unsupported_grant_type", "grant type not supported")
    assert requests.get(org.login_url + "/services/oauth2/token", timeout=10).status_code == 405


def test_token_error_injection_delay_and_dropped_connections(org: FakeSalesforce, app: ConnectedApp) -> None:
    org.inject_token_error(503, body=b"<html>maintenance</html>", count=2)
    form = {"grant_type": "client_credentials", "client_id": app.client_id, "client_secret": app.client_secret}
    assert token(org, **form).status_code == 503
    assert token(org, **form).status_code == 503
    org.inject_token_error(302, headers={"Location": "https://example.com/login"})
    assert token(org, **form).status_code == 302
    org.inject_token_error(400, "invalid_grant", "authentication failure")
    assert oauth_error(token(org, **form)) == (400, "invalid_grant", "authentication failure")
    org.drop_token_connections(1)
    with pytest.raises(requests.ConnectionError):
        token(org, **form)
    org.token_delay = 0.2
    started = time.perf_counter()
    assert token(org, **form).status_code == 200
    assert time.perf_counter() - started >= 0.2
    assert org.token_requests == 6


# -- sessions and the bearer-checked resources -------------------------------------------


@pytest.fixture
def sid(org: FakeSalesforce, app: ConnectedApp) -> str:
    response = token(org, grant_type="client_credentials", client_id=app.client_id, client_secret=app.client_secret)
    return str(response.json()["access_token"])


def test_data_requires_a_live_session(org: FakeSalesforce, sid: str) -> None:
    for headers in ({}, bearer("00Dbogus!AQxyz"), {"Authorization": "Basic abc"}):
        response = requests.get(org.instance_url + "/services/data/", headers=headers, timeout=10)
        assert response.status_code == 401
        assert response.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    assert org.api_requests == 0
    response = requests.get(org.instance_url + "/services/data/", headers=bearer(sid), timeout=10)
    assert response.status_code != 401
    assert response.headers["Sforce-Limit-Info"] == "api-usage=1/15000"
    assert response.headers["Content-Type"].startswith("application/json")
    assert org.api_requests == 1
    oauth_header = requests.get(org.instance_url + "/services/data/", headers={"Authorization": f"OAuth {sid}"},
                                timeout=10)
    assert oauth_header.status_code != 401


def test_sessions_die_when_idle_and_on_expire_sessions(org: FakeSalesforce, sid: str, clock: FakeClock) -> None:
    url = org.instance_url + "/services/oauth2/userinfo"
    clock.advance(500)
    assert requests.get(url, headers=bearer(sid), timeout=10).status_code == 200  # touched: idle clock restarts
    clock.advance(500)
    assert requests.get(url, headers=bearer(sid), timeout=10).status_code == 200
    clock.advance(601)
    dead = requests.get(url, headers=bearer(sid), timeout=10)
    assert (dead.status_code, dead.text) == (403, "Bad_OAuth_Token")
    assert org.active_sessions == 0

    app = org.register_app(run_as=org.default_user.username)
    fresh = token(org, grant_type="client_credentials", client_id=app.client_id, client_secret=app.client_secret)
    sid2 = fresh.json()["access_token"]
    assert org.active_sessions == 1
    org.expire_sessions()
    assert requests.get(org.instance_url + "/services/data/", headers=bearer(sid2), timeout=10).status_code == 401


def test_userinfo(org: FakeSalesforce, sid: str) -> None:
    info = requests.get(org.instance_url + "/services/oauth2/userinfo", headers=bearer(sid), timeout=10).json()
    assert info["preferred_username"] == org.default_user.username
    assert info["user_id"] == org.default_user.user_id and info["organization_id"] == org.org_id
    assert {"name", "email"} <= set(info)


def test_inject_error_on_rest_requests(org: FakeSalesforce, sid: str) -> None:
    org.inject_error(503, "SERVER_UNAVAILABLE", "try later", count=2, path_prefix="/services/data/v62.0/query",
                     headers={"Retry-After": "1"})
    other = requests.get(org.instance_url + "/services/data/", headers=bearer(sid), timeout=10)
    assert other.status_code != 503
    for _ in range(2):
        hit = requests.get(org.instance_url + "/services/data/v62.0/query?q=SELECT+Id+FROM+Account",
                           headers=bearer(sid), timeout=10)
        assert hit.status_code == 503 and hit.headers["Retry-After"] == "1"
        assert hit.json() == [{"message": "try later", "errorCode": "SERVER_UNAVAILABLE", "fields": []}]
        assert hit.headers["Sforce-Limit-Info"].startswith("api-usage=")
    after = requests.get(org.instance_url + "/services/data/v62.0/query?q=SELECT+Id+FROM+Account",
                         headers=bearer(sid), timeout=10)
    assert after.status_code != 503


def test_request_log_and_unknown_paths(org: FakeSalesforce, sid: str) -> None:
    assert requests.get(org.instance_url + "/nowhere", timeout=10).status_code == 404
    assert ("POST", "/services/oauth2/token", 200) in org.requests_log
    assert ("GET", "/nowhere", 404) in org.requests_log
    assert sid not in repr(org.requests_log)


def test_revoke_endpoint(org: FakeSalesforce, sid: str) -> None:
    assert requests.post(org.login_url + "/services/oauth2/revoke", data={"token": sid}, timeout=10).ok
    assert requests.get(org.instance_url + "/services/data/", headers=bearer(sid), timeout=10).status_code == 401


def test_reprs_hide_secrets(org: FakeSalesforce, app: ConnectedApp) -> None:
    text = repr(org) + repr(app) + repr(org.default_user)
    assert app.client_secret not in text and org.default_user.password not in text
    assert org.default_user.security_token not in text
    assert app.private_key_pem is not None and "PRIVATE" not in text


def test_start_and_stop_are_idempotent() -> None:
    org = FakeSalesforce()
    with pytest.raises(RuntimeError):
        _ = org.login_url
    org.start()
    org.start()
    url = org.login_url
    session = requests.Session()
    assert session.get(url + "/x", timeout=10).status_code == 404  # a kept-alive connection
    org.stop()
    org.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/x", timeout=2)


# -- the pytest plugin -----------------------------------------------------------------


def test_pytest_plugin_fixture(tmp_path: Path) -> None:
    test_file = tmp_path / "test_user_code.py"
    test_file.write_text(textwrap.dedent("""
        import requests

        def test_my_code(fake_salesforce):
            auth = fake_salesforce.jwt_auth()
            token = auth.access_token()
            r = requests.get(fake_salesforce.instance_url + "/services/oauth2/userinfo",
                             headers={"Authorization": "Bearer " + token}, timeout=10)
            assert r.status_code == 200
            assert fake_salesforce.token_requests == 1

        def test_fresh_org_per_test(fake_salesforce):
            assert fake_salesforce.token_requests == 0
    """))
    installed = any(ep.value == "authkit.testing.pytest_plugin"
                    for ep in importlib.metadata.entry_points(group="pytest11"))
    plugin_args = [] if installed else ["-p", "authkit.testing.pytest_plugin"]
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin_args, str(test_file)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_json_bodies_are_json(org: FakeSalesforce) -> None:
    response = token(org, grant_type="nope")
    assert json.loads(response.content)["error"] == "unsupported_grant_type"


def test_injected_errors_can_be_counted_and_cleared() -> None:
    with FakeSalesforce() as org:
        assert org.pending_injected_errors == 0
        org.inject_error(503, "SERVER_UNAVAILABLE", count=2)
        org.inject_token_error(400, "invalid_grant", "expired", count=1)
        org.drop_token_connections(3)
        assert org.pending_injected_errors == 6
        assert org.clear_injected_errors() == 6
        assert org.pending_injected_errors == 0
        auth = org.jwt_auth()
        assert auth.access_token()  # nothing injected is served any more
        assert org.token_requests == 1


def test_movable_clock_moves_forward_only() -> None:
    from datetime import timedelta

    from authkit.testing import MovableClock

    clock = MovableClock()
    before = clock()
    clock.advance(3600)
    clock.advance(timedelta(minutes=1))
    assert clock() - before >= timedelta(minutes=61)
    assert clock.offset == timedelta(minutes=61)
    for bad, error in [(-1, ValueError), (timedelta(seconds=-1), ValueError), (float("nan"), ValueError),
                       ("1", TypeError), (True, TypeError)]:
        with pytest.raises(error):
            clock.advance(bad)  # type: ignore[arg-type]
    assert clock.offset == timedelta(minutes=61)


def test_movable_clock_expires_a_fake_org_session() -> None:
    from authkit.testing import MovableClock

    clock = MovableClock()
    with FakeSalesforce(clock=clock) as org:
        org.jwt_auth().access_token()
        assert org.active_sessions == 1
        clock.advance(24 * 3600)
        assert org.active_sessions == 0
