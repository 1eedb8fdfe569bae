"""The flows added with contract v2 (web server + PKCE, token exchange, revoke), the package
layout and its shared options, the one settings parser, and the token-response checks
(signature, instance_url, private keys) — all against a real local org (FakeSalesforce)."""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pytest
import requests

from authkit.errors import AuthenticationError, ConfigurationError
from authkit.salesforce import (
    ClientCredentialsAuth,
    FlowOptions,
    JwtAuth,
    PasswordAuth,
    RefreshTokenAuth,
    StaticTokenAuth,
    TokenExchangeAuth,
    WebServerFlow,
)
from authkit.salesforce._oauth import TokenEndpoint, trusted_instance_url
from authkit.salesforce.auth import JWT_BEARER_GRANT, TOKEN_EXCHANGE_GRANT, default_audience, pkce_challenge
from authkit.salesforce.settings import FLOWS, build_auth, flow_keys, flow_name
from authkit.storage import MemoryStorage, open_storage
from authkit.testing import ConnectedApp, FakeSalesforce
from tests.auth_sessions import SUBJECT, make
from tests.clock import FakeClock
from tests.threads import run_threads

MINTING = ["jwt", "refresh_token", "client_credentials", "password", "token_exchange"]


@pytest.fixture
def org(clock: FakeClock) -> Iterator[FakeSalesforce]:
    with FakeSalesforce(clock=clock) as fake:
        fake.add_subject_token(SUBJECT)
        yield fake


@pytest.fixture
def app(org: FakeSalesforce) -> ConnectedApp:
    return org.register_jwt_app(run_as=org.default_user.username)


def browser_login(org: FakeSalesforce, flow: WebServerFlow, **changes: str) -> tuple[str, str, str]:
    """The browser's part: open the URL, log in, come back. ``(code, returned state, verifier)``."""
    url, _, verifier = flow.authorization_url()
    params = {k: v[-1] for k, v in parse_qs(urlsplit(org.authorize(url)).query).items()}
    params.update(changes)
    assert params.get("state") is not None
    return params["code"], params["state"], verifier


def userinfo(org: FakeSalesforce, token: str) -> int:
    return requests.get(org.instance_url + "/services/oauth2/userinfo",
                        headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code


# -- layout and options -----------------------------------------------------------------


def test_every_import_path_still_works() -> None:
    from authkit.salesforce import auth

    assert JWT_BEARER_GRANT == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert TOKEN_EXCHANGE_GRANT == "urn:ietf:params:oauth:grant-type:token-exchange"
    assert default_audience("https://test.salesforce.com") == "https://test.salesforce.com"
    for name in auth.__all__:
        assert getattr(auth, name) is not None
    import authkit.salesforce as sf

    for name in ("WebServerFlow", "TokenExchangeAuth", "FlowOptions", "JwtAuth", "StaticTokenAuth"):
        assert name in sf.__all__ and getattr(sf, name) is getattr(auth, name)
    # one module per flow, internals private
    assert JwtAuth.__module__ == "authkit.salesforce.auth._jwt"
    assert TokenExchangeAuth.__module__ == "authkit.salesforce.auth._token_exchange"


def test_flow_options_object_and_keywords_are_the_same(org: FakeSalesforce, app: ConnectedApp) -> None:
    opts = FlowOptions(timeout=(2.0, 7.0), retries=1, backoff=0.01, max_token_age=60)
    by_object = make("jwt", org, app, options=opts)
    by_keywords = make("jwt", org, app, timeout=(2.0, 7.0), retries=1, backoff=0.01, max_token_age=60)
    assert by_object.options == by_keywords.options == opts
    overridden = make("client_credentials", org, app, options=opts, retries=0)
    assert overridden.options == replace(opts, retries=0) and opts.retries == 1
    assert by_object.access_token() and by_keywords.access_token()
    with pytest.raises(TypeError, match="colour"):
        make("jwt", org, app, colour=1)
    with pytest.raises(TypeError):
        make("jwt", org, app, options={"retries": 1})
    for bad in ({"retries": -1}, {"timeout": 0}, {"backoff": -1}, {"lock_timeout": -2}, {"max_token_age": 0}):
        with pytest.raises(ValueError):
            FlowOptions(**bad)
    with pytest.raises(TypeError):
        FlowOptions(session=object())  # type: ignore[arg-type]


@pytest.mark.parametrize("flow", ["jwt", "client_credentials", "password"])
def test_on_refresh_token_only_where_a_refresh_token_can_come(flow: str, org: FakeSalesforce,
                                                             app: ConnectedApp) -> None:
    with pytest.raises(TypeError, match="on_refresh_token"):
        make(flow, org, app, on_refresh_token=print)


def test_refresh_flows_take_on_refresh_token(org: FakeSalesforce, app: ConnectedApp) -> None:
    seen: list[str] = []
    exchange = make("token_exchange", org, app, on_refresh_token=seen.append, scopes=["api", "refresh_token"])
    assert exchange.access_token()
    assert len(seen) == 1 and seen[0].startswith("5Aep861")
    assert make("refresh_token", org, app, on_refresh_token=seen.append).access_token()


# -- the web-server flow ------------------------------------------------------------------


def test_authorization_url_carries_pkce_and_state(org: FakeSalesforce, app: ConnectedApp) -> None:
    flow = WebServerFlow(app.client_id, "http://localhost:1717/OauthRedirect", login_url=org.login_url)
    url, state, verifier = flow.authorization_url()
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    assert urlunsplit(parts._replace(query="")) == org.login_url + "/services/oauth2/authorize"
    assert query == {"response_type": "code", "client_id": app.client_id,
                     "redirect_uri": "http://localhost:1717/OauthRedirect", "state": state,
                     "code_challenge": pkce_challenge(verifier), "code_challenge_method": "S256",
                     "scope": "api refresh_token"}
    assert 43 <= len(verifier) <= 128 and len(state) >= 32
    # RFC 7636 appendix B
    rfc_verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(rfc_verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert flow.authorization_url("mine")[1] == "mine"
    second = flow.authorization_url()
    assert second[1] != state and second[2] != verifier  # fresh every time


def test_web_server_flow_end_to_end_through_the_store(org: FakeSalesforce, app: ConnectedApp) -> None:
    store = MemoryStorage()
    flow = WebServerFlow(app.client_id, "http://127.0.0.1:16799/cb", client_secret=app.client_secret,
                         login_url=org.login_url, backoff=0.01)
    code, _, verifier = browser_login(org, flow)
    auth = flow.exchange(code, verifier, token_store=store)
    assert isinstance(auth, RefreshTokenAuth) and auth.username == org.default_user.username
    token = auth.access_token()
    assert org.token_requests == 1 and userinfo(org, token) == 200  # the exchange's own token, no refresh
    stored = store.get_token(auth.token_id or "")
    assert stored is not None and stored.access_token == token and stored.refresh_token == auth.refresh_token
    # Another process finds it by username alone, and refreshes with the stored refresh token.
    later = RefreshTokenAuth(app.client_id, None, app.client_secret, org.login_url, store,
                             username=org.default_user.username)
    assert later.access_token() == token and org.token_requests == 1
    org.expire_sessions()
    later.invalidate(token)
    assert later.access_token() != token and org.token_requests == 2


def test_wrong_state_wrong_verifier_reused_code(org: FakeSalesforce, app: ConnectedApp) -> None:
    flow = WebServerFlow(app.client_id, "http://127.0.0.1:16799/cb", login_url=org.login_url)
    url, state, verifier = flow.authorization_url()
    returned = parse_qs(urlsplit(org.authorize(url)).query)
    with pytest.raises(AuthenticationError, match="wrong state") as info:
        flow.check_state(state, "forged-" + state)
    assert info.value.error == "invalid_state"
    with pytest.raises(AuthenticationError):
        flow.check_state(state, None)
    flow.check_state(state, returned["state"][0])

    code, _, verifier = browser_login(org, flow)
    _, other_verifier = flow.authorization_url()[1:]
    with pytest.raises(AuthenticationError) as refused:
        flow.exchange(code, other_verifier)
    assert (refused.value.error, refused.value.error_description) == ("invalid_grant", "invalid code verifier")
    with pytest.raises(AuthenticationError) as reused:  # a code is single-use, even after a refusal
        flow.exchange(code, verifier)
    assert reused.value.error == "invalid_grant"

    code, _, verifier = browser_login(org, flow)
    elsewhere = WebServerFlow(app.client_id, "http://127.0.0.1:16798/cb", login_url=org.login_url)
    with pytest.raises(AuthenticationError, match="redirect_uri"):
        elsewhere.exchange(code, verifier)


def test_web_server_flow_refusals(org: FakeSalesforce, app: ConnectedApp) -> None:
    flow = WebServerFlow(app.client_id, "http://127.0.0.1:16799/cb", login_url=org.login_url)
    org.deny_authorization = True
    denied = parse_qs(urlsplit(org.authorize(flow.authorization_url()[0])).query)
    assert denied["error"] == ["access_denied"] and "state" in denied
    org.deny_authorization = False
    no_refresh = WebServerFlow(app.client_id, "http://127.0.0.1:16799/cb", login_url=org.login_url, scopes=["api"])
    code, _, verifier = browser_login(org, no_refresh)
    with pytest.raises(AuthenticationError, match="refresh_token scope"):
        no_refresh.exchange(code, verifier)
    strict = org.register_app(require_secret_for_web_server=True)
    flow = WebServerFlow(strict.client_id, "http://127.0.0.1:16799/cb", login_url=org.login_url)
    code, _, verifier = browser_login(org, flow)
    with pytest.raises(AuthenticationError) as info:
        flow.exchange(code, verifier)
    assert info.value.error == "invalid_client"
    with pytest.raises(ValueError):
        WebServerFlow(app.client_id, "not a url", login_url=org.login_url)
    with pytest.raises(TypeError):
        WebServerFlow(app.client_id, "http://127.0.0.1/cb", scopes="api refresh_token")
    unknown = WebServerFlow("nobody", "http://127.0.0.1:16799/cb", login_url=org.login_url)
    page = requests.get(unknown.authorization_url()[0], allow_redirects=False, timeout=30)
    assert page.status_code == 400 and "Location" not in page.headers


def test_refresh_token_auth_without_a_refresh_token(org: FakeSalesforce, app: ConnectedApp) -> None:
    with pytest.raises(ValueError, match="token_store and username"):
        RefreshTokenAuth(app.client_id, None, login_url=org.login_url)
    empty = RefreshTokenAuth(app.client_id, None, login_url=org.login_url, token_store=MemoryStorage(),
                             username="nobody@example.com")
    with pytest.raises(AuthenticationError, match="log in first"):
        empty.access_token()
    assert org.token_requests == 0


# -- token exchange -----------------------------------------------------------------------


def test_token_exchange_mints_once_and_shares(org: FakeSalesforce, app: ConnectedApp) -> None:
    store = MemoryStorage()
    auth = make("token_exchange", org, app, token_store=store, username="pat@example.com")
    assert auth.subject_token_type == "urn:ietf:params:oauth:token-type:access_token"
    token = auth.access_token()
    assert auth.access_token() == token and org.token_requests == 1 and userinfo(org, token) == 200
    twin = make("token_exchange", org, app, token_store=store, username="pat@example.com")
    assert twin.access_token() == token and org.token_requests == 1
    twin.invalidate("not-the-token")
    assert twin.access_token() == token
    twin.invalidate(token)
    assert twin.access_token() != token and org.token_requests == 2


def test_token_exchange_callable_subject_and_refusals(org: FakeSalesforce, app: ConnectedApp) -> None:
    calls: list[int] = []

    def subject() -> str:
        calls.append(1)
        return SUBJECT

    auth = make("token_exchange", org, app)
    auth = TokenExchangeAuth(app.client_id, subject, "urn:ietf:params:oauth:token-type:access_token",
                             login_url=org.login_url, backoff=0.01)
    token = auth.access_token()
    auth.invalidate(token)
    auth.access_token()
    assert len(calls) == 2  # a fresh subject token for every mint
    unknown = TokenExchangeAuth(app.client_id, "never-issued", "access_token", login_url=org.login_url)
    with pytest.raises(AuthenticationError) as info:
        unknown.access_token()
    assert (info.value.error, info.value.error_description) == ("invalid_grant", "invalid subject token")
    wrong_type = TokenExchangeAuth(app.client_id, SUBJECT, "id_token", login_url=org.login_url)
    with pytest.raises(AuthenticationError) as info:
        wrong_type.access_token()
    assert info.value.error == "invalid_request"
    with pytest.raises(ValueError):
        TokenExchangeAuth(app.client_id, SUBJECT, "carrier-pigeon", login_url=org.login_url)
    with pytest.raises(ValueError, match="username"):
        TokenExchangeAuth(app.client_id, subject, "jwt", login_url=org.login_url, token_store=MemoryStorage())


def test_64_threads_racing_a_token_exchange_cause_one_request(app: ConnectedApp) -> None:
    with FakeSalesforce(token_delay=0.2) as slow:
        exchanger = slow.register_app()
        slow.add_subject_token(SUBJECT)
        auth = TokenExchangeAuth(exchanger.client_id, SUBJECT, "access_token", login_url=slow.login_url,
                                 client_secret=exchanger.client_secret)
        tokens: list[str] = []
        run_threads(lambda _: tokens.append(auth.access_token()), 64)
        assert len(set(tokens)) == 1 and slow.token_requests == 1
        auth.invalidate(tokens[0])
        run_threads(lambda _: tokens.append(auth.access_token()), 64)
        assert len(set(tokens)) == 2 and slow.token_requests == 2


# -- revoke ---------------------------------------------------------------------------------


@pytest.mark.parametrize("flow", MINTING)
def test_revoke_ends_the_token_everywhere(flow: str, org: FakeSalesforce, app: ConnectedApp) -> None:
    store = MemoryStorage()
    auth = make(flow, org, app, token_store=store)
    token = auth.access_token()
    assert store.get_token(auth.token_id) is not None and userinfo(org, token) == 200
    assert auth.revoke() is True
    assert userinfo(org, token) == 403 and store.get_token(auth.token_id) is None
    assert org.revoke_requests == (2 if flow == "refresh_token" else 1)
    requests_before = org.token_requests
    if flow == "refresh_token":
        with pytest.raises(AuthenticationError, match="revoked"):
            auth.access_token()
        assert org.token_requests == requests_before  # nothing sent with a revoked token
    else:
        assert auth.access_token() != token and org.token_requests == requests_before + 1


def test_revoke_a_refresh_token_ends_it_for_everyone(org: FakeSalesforce, app: ConnectedApp) -> None:
    refresh = org.issue_refresh_token(app.client_id)
    auth = make("refresh_token", org, app, refresh_token=refresh)
    other = make("refresh_token", org, app, refresh_token=refresh)  # another holder, no shared store
    token = other.access_token()
    auth.revoke()
    assert userinfo(org, token) == 403  # access tokens minted from it end too
    other.invalidate(token)
    with pytest.raises(AuthenticationError) as info:
        other.access_token()
    assert info.value.error == "invalid_grant"
    assert auth.revoke() is False  # nothing left to revoke


def test_revoke_endpoint_answers(org: FakeSalesforce, app: ConnectedApp) -> None:
    endpoint = TokenEndpoint(org.login_url, backoff=0.01)
    assert endpoint.revoke("never-issued") is False
    response = requests.post(org.login_url + "/services/oauth2/revoke", data={"token": "never-issued"}, timeout=30)
    assert response.status_code == 400 and response.json() == {"error": "invalid_token",
                                                                "error_description": "Token was invalid"}
    response = requests.post(org.login_url + "/services/oauth2/revoke", data={}, timeout=30)
    assert response.json()["error"] == "unsupported_token_type"
    down = TokenEndpoint("http://127.0.0.1:1", retries=0)
    with pytest.raises(AuthenticationError, match="revoking the token"):
        down.revoke("x")


def _adopt_from_store(url: str, login_url: str, client_id: str, secret: str, refresh: str, results: Any,
                      go: Any) -> None:
    """Another process: the same flow and identity over the shared SQLite store.  It reports the
    token it adopted, waits for ``go``, then uses that token as an API client would."""
    try:
        with open_storage(url) as store:
            auth = RefreshTokenAuth(client_id, refresh, secret, login_url, store, username="etl@example.com",
                                    backoff=0.01)
            try:
                token = auth.access_token()
            except AuthenticationError as exc:
                results.put(("refused", exc.error or ""))
                return
            results.put(("token", token))
            if not go.wait(120):
                return
            status = requests.get(login_url + "/services/oauth2/userinfo",
                                  headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code
            if status == 200:
                results.put(("still usable", ""))
                return
            auth.invalidate(token)  # what SalesforceClient does after a rejection
            try:
                results.put(("new token", auth.access_token()))
            except AuthenticationError as exc:
                results.put(("refused", exc.error or ""))
    except Exception as exc:  # reported to the test, which fails on it
        results.put(("failed", repr(exc)))


def test_a_revoked_token_is_not_used_by_another_process_through_the_store(
        org: FakeSalesforce, app: ConnectedApp, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    refresh = org.issue_refresh_token(app.client_id)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    go = ctx.Event()

    def other_process() -> Any:
        process = ctx.Process(target=_adopt_from_store,
                              args=(url, org.login_url, app.client_id, app.client_secret, refresh, results, go))
        process.start()
        return process

    processes = []
    try:
        with open_storage(url) as store:
            auth = RefreshTokenAuth(app.client_id, refresh, app.client_secret, org.login_url, store,
                                    username="etl@example.com")
            token = auth.access_token()
            processes.append(other_process())  # running, and holding the token it adopted
            assert results.get(timeout=120) == ("token", token) and org.token_requests == 1  # adopted, not minted
            auth.revoke()
            assert store.get_token(auth.token_id or "") is None
        go.set()
        # The running process's next call is rejected; the store gives it nothing, its own refresh
        # token is revoked: it cannot go on with the revoked grant.
        assert results.get(timeout=120) == ("refused", "invalid_grant")
        processes.append(other_process())  # a process started afterwards finds nothing to use either
        assert results.get(timeout=120) == ("refused", "invalid_grant")
        assert userinfo(org, token) == 403
    finally:
        go.set()
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()


# -- token responses: signature, instance_url --------------------------------------------


@pytest.mark.parametrize("flow", MINTING)
def test_a_missing_signature_is_refused_when_the_secret_is_known(flow: str, org: FakeSalesforce,
                                                                app: ConnectedApp) -> None:
    org.omit_signatures = True
    options = {"client_secret": app.client_secret} if flow == "jwt" else {}
    with pytest.raises(AuthenticationError) as info:
        make(flow, org, app, **options).access_token()
    assert info.value.error == "invalid_signature" and "no signature" in str(info.value)
    if flow in ("jwt", "refresh_token", "token_exchange"):  # the secret is optional: unsigned is fine without
        assert make(flow, org, app, client_secret=None).access_token()


@pytest.mark.parametrize("url", [
    "https://acme.my.salesforce.com", "https://acme--dev.sandbox.my.salesforce.com", "https://na139.salesforce.com",
    "https://acme.lightning.force.com", "https://acme.my.salesforce.mil", "https://acme.my.sfcrmproducts.cn",
    "https://login.example.org"])
def test_trusted_instance_urls(url: str) -> None:
    assert trusted_instance_url(url + "/", "https://login.example.org") == url


@pytest.mark.parametrize("url", [
    "http://evil.example:8080", "https://evil.example", "https://salesforce.com.evil.example",
    "https://evilsalesforce.com", "http://acme.my.salesforce.com", "https://user:pw@acme.my.salesforce.com",
    "https://acme.my.salesforce.com/services", "https://acme.my.salesforce.com?x=1", "https://login.example.org:8443",
    "", None])
def test_untrusted_instance_urls(url: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        trusted_instance_url(url, "https://login.example.org")


@pytest.mark.parametrize("instance", ["http://evil.example:8080", "https://evil.example",
                                      "http://localhost:1", "https://acme.my.salesforce.com/path"])
def test_a_token_response_naming_an_untrusted_instance_is_refused(instance: str, org: FakeSalesforce,
                                                                 app: ConnectedApp) -> None:
    org.instance_url_override = instance
    with pytest.raises(AuthenticationError) as info:
        make("jwt", org, app).access_token()
    assert info.value.error == "invalid_instance_url"


def test_a_stored_token_naming_an_untrusted_instance_is_not_adopted(
        org: FakeSalesforce, app: ConnectedApp, caplog: pytest.LogCaptureFixture) -> None:
    hits: list[str] = []

    class Evil(requests.adapters.BaseAdapter):  # records anything sent to the attacker's host
        def send(self, request: Any, **kwargs: Any) -> Any:
            hits.append(request.url)
            raise requests.ConnectionError("evil")

        def close(self) -> None:
            return

    store = MemoryStorage()
    first = make("jwt", org, app, token_store=store)
    token = first.access_token()
    stored = store.get_token(first.token_id)
    assert stored is not None
    for evil in ("http://evil.example:8080", "https://acme.my.salesforce.com.evil.example"):
        store.store_token(replace(stored, access_token="stolen-" + token,
                                  metadata={**stored.metadata, "instance_url": evil}))
        session = requests.Session()
        session.mount("http://evil.example", Evil())
        session.mount("https://acme.my.salesforce.com.evil.example", Evil())
        with caplog.at_level(logging.WARNING, logger="authkit"):
            later = make("jwt", org, app, token_store=store, session=session)
            fresh = later.access_token()
        assert fresh != "stolen-" + token and later.instance_url == org.instance_url
        from authkit.salesforce import SalesforceClient

        with SalesforceClient(later, session=session) as client:
            assert client.limits() is not None  # the API call goes to the real instance
        assert "untrusted instance_url" in caplog.text and evil not in caplog.text
    assert not hits and org.token_requests == 3


# -- private keys ----------------------------------------------------------------------------


def test_private_key_text_is_never_a_path_and_never_echoed(org: FakeSalesforce, app: ConnectedApp,
                                                          tmp_path: Path) -> None:
    pem = app.private_key_pem
    assert pem is not None
    body = "\n".join(pem.splitlines()[1:-1])  # the key without its -----BEGIN/-----END lines
    one_line = "".join(pem.splitlines()[1:-1])
    cases: list[Any] = [body, one_line, "garbage", Path("/etc/passwd"), "/etc/passwd", tmp_path,
                        str(tmp_path / "missing.key"), b"not a key"]
    for private_key in cases:
        with pytest.raises(ConfigurationError) as info:
            JwtAuth(app.client_id, "u@example.com", private_key, login_url=org.login_url)
        text = f"{info.value} {info.value!r} {info.value.__cause__!r} {info.value.__context__!r}"
        assert pem.splitlines()[1][:20] not in text and one_line[100:140] not in text
        assert "root:" not in text and "/etc/passwd" not in text and str(tmp_path) not in text
        assert "not a PEM private key" in text or "cannot read the JWT private key file" in text


# -- the settings parser ----------------------------------------------------------------------


def full_settings(flow: str) -> dict[str, Any]:
    base: dict[str, Any] = {"client_id": "3MVG9x", "login_url": "https://login.salesforce.com"}
    if flow == "jwt":
        from authkit.testing.fake_salesforce import generate_rsa_key_pair

        return {**base, "username": "u@example.com", "private_key": generate_rsa_key_pair()[0]}
    if flow == "refresh_token":
        return {**base, "refresh_token": "5Aep861x"}
    if flow == "client_credentials":
        return {"client_id": "3MVG9x", "client_secret": "s", "domain_url": "https://acme.my.salesforce.com"}
    if flow == "password":
        return {**base, "client_secret": "s", "username": "u@example.com", "password": "p"}
    if flow == "token_exchange":
        return {**base, "subject_token": "t", "subject_token_type": "jwt"}
    return {"access_token": "t", "instance_url": "https://acme.my.salesforce.com"}


def flask_name(key: str) -> str:
    return f"AUTHKIT_SALESFORCE_{key.upper()}"


@pytest.mark.parametrize("flow", FLOWS)
def test_settings_build_every_flow_with_either_spelling(flow: str) -> None:
    expected = {"jwt": JwtAuth, "refresh_token": RefreshTokenAuth, "client_credentials": ClientCredentialsAuth,
                "password": PasswordAuth, "token_exchange": TokenExchangeAuth, "static": StaticTokenAuth}[flow]
    for spelling in (flow, flow.replace("_", "-"), flow.upper().replace("_", "-")):
        assert isinstance(build_auth({"flow": spelling, **full_settings(flow)}), expected)
    assert flow_name(flow.replace("_", "-")) == flow


def _required(flow: str) -> list[str]:
    from authkit.salesforce.settings import _REQUIRED

    keys = list(_REQUIRED[flow])
    return keys + (["private_key"] if flow == "jwt" else ["refresh_token"] if flow == "refresh_token" else [])


@pytest.mark.parametrize(("flow", "key"), [(flow, key) for flow in FLOWS for key in _required(flow)])
def test_settings_name_every_missing_key(flow: str, key: str) -> None:
    settings = {"flow": flow, **full_settings(flow)}
    del settings[key]
    with pytest.raises(ConfigurationError) as info:
        build_auth(settings, names=flask_name)
    assert f"missing Salesforce setting {flask_name(key)}" in str(info.value)
    assert f"the {flow} flow" in str(info.value)
    settings[key] = "  "  # blank counts as missing
    with pytest.raises(ConfigurationError, match="missing Salesforce setting"):
        build_auth(settings, names=flask_name)


def test_settings_errors_name_the_setting() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown Salesforce flow 'saml' in AUTHKIT_SALESFORCE_FLOW"):
        build_auth({"flow": "saml"}, names=flask_name)
    with pytest.raises(ConfigurationError, match=r"jwt flow: unknown setting AUTHKIT_SALESFORCE_PASSWORD"):
        build_auth({"flow": "jwt", **full_settings("jwt"), "password": "x"}, names=flask_name)
    with pytest.raises(ConfigurationError, match="AUTHKIT_SALESFORCE_LOGIN_URL must use https"):
        build_auth({"flow": "jwt", **full_settings("jwt"), "login_url": "http://example.com"}, names=flask_name)
    with pytest.raises(ConfigurationError, match="AUTHKIT_SALESFORCE_RETRIES must be a whole number"):
        build_auth({"flow": "password", **full_settings("password"), "retries": "two"}, names=flask_name)
    with pytest.raises(ConfigurationError, match="AUTHKIT_SALESFORCE_TOKEN_TIMEOUT"):
        build_auth({"flow": "password", **full_settings("password"), "token_timeout": "1 2 3"}, names=flask_name)
    with pytest.raises(ConfigurationError, match=r"check AUTHKIT_SALESFORCE_PRIVATE_KEY_FILE"):
        build_auth({"flow": "jwt", **{**full_settings("jwt"), "private_key": None},
                    "private_key_file": "/etc/passwd"}, names=flask_name)
    assert flow_keys("static") == {"access_token", "instance_url"}


def test_settings_values_from_strings_and_the_store() -> None:
    store = MemoryStorage()
    auth = build_auth({"flow": "refresh-token", "client_id": "c", "username": "me@example.com",
                       "token_timeout": "3, 9", "retries": "1", "max_token_age": "3600", "backoff": "0.1"},
                      token_store=store)
    assert isinstance(auth, RefreshTokenAuth) and auth.refresh_token is None
    assert auth.options == FlowOptions(timeout=(3.0, 9.0), retries=1, max_token_age=3600.0, backoff=0.1)
    assert auth.token_id is not None
    unshared = build_auth({"flow": "password", **full_settings("password"), "token_store": None}, token_store=store)
    assert unshared.token_id is None


def test_concurrent_settings_parse_is_independent() -> None:
    # The parser keeps no state: threads building different flows at once get what they asked for.
    built: dict[int, Any] = {}
    lock = threading.Lock()

    def build(n: int) -> None:
        flow = FLOWS[n % len(FLOWS)]
        auth = build_auth({"flow": flow, **full_settings(flow)})
        with lock:
            built[n] = (flow, type(auth).__name__)

    run_threads(build, 12)
    assert {flow for flow, _ in built.values()} == set(FLOWS)


# -- no secret in logs, reprs or errors ------------------------------------------------------


def test_no_secret_in_logs_reprs_or_errors_of_the_new_flows(org: FakeSalesforce, app: ConnectedApp,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStorage()
    texts: list[str] = []
    secrets = {app.client_secret, SUBJECT}
    with caplog.at_level(logging.DEBUG):
        flow = WebServerFlow(app.client_id, "http://127.0.0.1:16799/cb", client_secret=app.client_secret,
                             login_url=org.login_url)
        code, state, verifier = browser_login(org, flow)
        secrets |= {code, verifier}
        for bad in (lambda: flow.check_state(state, "x"), lambda: flow.exchange(code, "wrong-verifier")):
            with pytest.raises(AuthenticationError) as info:
                bad()
            texts += [str(info.value), repr(info.value)]
        code, _, verifier = browser_login(org, flow)
        secrets |= {code, verifier}
        auth = flow.exchange(code, verifier, token_store=store)
        secrets |= {auth.access_token(), auth.refresh_token or ""}
        exchange = make("token_exchange", org, app, token_store=store, username="pat@example.com")
        secrets.add(exchange.access_token())
        texts += [repr(flow), repr(auth), repr(exchange), repr(auth.options), repr(store.get_token(auth.token_id))]
        auth.revoke()
        exchange.revoke()
        with pytest.raises(AuthenticationError) as info:
            auth.access_token()
        texts += [str(info.value), repr(info.value)]
    texts.append(caplog.text)
    assert "token revoked" in caplog.text  # the log is there, and says nothing secret
    leaked = [s for s in secrets if s and any(s in text for text in texts)]
    assert not leaked


def test_flask_and_django_errors_name_their_own_settings() -> None:
    flask = pytest.importorskip("flask")
    from authkit.contrib.flask import AuthKit

    app = flask.Flask(__name__)
    app.config.update(AUTHKIT_STORAGE_URL="memory://", AUTHKIT_SALESFORCE_FLOW="refresh-token",
                      AUTHKIT_SALESFORCE_CLIENT_ID="3MVG9x")
    ext = AuthKit(app)
    with app.app_context(), pytest.raises(ConfigurationError) as info:
        ext.salesforce  # noqa: B018
    assert "missing Salesforce setting AUTHKIT_SALESFORCE_REFRESH_TOKEN" in str(info.value)
    assert "AUTHKIT_SALESFORCE_USERNAME" in str(info.value)  # the other way to give it

    from authkit.contrib.django import _django_setting_name

    with pytest.raises(ConfigurationError, match=r"missing Salesforce setting AUTHKIT_SALESFORCE\['domain_url'\]"):
        build_auth({"flow": "client-credentials", "client_id": "c", "client_secret": "s"},
                   names=_django_setting_name)
