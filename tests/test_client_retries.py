"""Transient retries (UNABLE_TO_LOCK_ROW for any method, 500 only for idempotent ones), the User-Agent,
and the events the client reports — against FakeSalesforce."""

from __future__ import annotations

from typing import Any

import pytest
import requests

import authkit
from authkit.errors import ApiError
from authkit.salesforce import SalesforceClient, StaticTokenAuth, events
from authkit.testing import FakeSalesforce
from authkit.testing.fake_rest import FakeRestApi

V = "/services/data/v62.0"


@pytest.fixture
def sf(sf: SalesforceClient) -> SalesforceClient:
    sf.get("limits")  # mint the token now, so request counts below are the calls' own
    return sf


def sent(org: FakeSalesforce, method: str, path: str) -> int:
    return sum(1 for m, p, _ in org.requests_log if m == method and p == V + path)


def test_post_is_never_resent_on_500(org: FakeSalesforce, sf: SalesforceClient) -> None:
    org.inject_error(500, "UNKNOWN_EXCEPTION", "An unexpected error occurred", path_prefix=V + "/sobjects/Account")
    before = sent(org, "POST", "/sobjects/Account")
    with events.recording() as seen, pytest.raises(ApiError) as info:
        sf.sobject("Account").create({"Name": "once"})
    assert info.value.status_code == 500
    assert sent(org, "POST", "/sobjects/Account") - before == 1
    assert not [e for e in seen if e.name == events.TRANSIENT_RETRY]


@pytest.mark.parametrize("method", ["PATCH", "POST"])
def test_non_idempotent_500_not_resent(org: FakeSalesforce, sf: SalesforceClient, method: str) -> None:
    org.inject_error(500, "UNKNOWN_EXCEPTION", path_prefix=V + "/apex")
    before = len(org.requests_log)
    with pytest.raises(ApiError):
        sf.request(method, "/services/data/v62.0/apex", json={})
    assert len(org.requests_log) - before == 1


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT"])
def test_idempotent_500_is_resent(org: FakeSalesforce, sf: SalesforceClient, method: str) -> None:
    org.inject_error(500, "UNKNOWN_EXCEPTION", count=2, path_prefix=V + "/limits")
    before = len(org.requests_log)
    with events.recording() as seen:
        if method == "GET":
            assert sf.get("limits")["DailyApiRequests"]
        else:
            with pytest.raises(ApiError) as info:  # the fake allows only GET here: a 405 after two 500s
                sf.request(method, "limits")
            assert info.value.status_code == 405
    assert len(org.requests_log) - before == 3
    retries = [e for e in seen if e.name == events.TRANSIENT_RETRY]
    assert [(e["status"], e["attempt"], e["source"]) for e in retries] == [(500, 1, "client"), (500, 2, "client")]
    assert retries[0]["path"] == V + "/limits" and retries[0]["method"] == method


def test_unable_to_lock_row_is_resent_even_for_post(org: FakeSalesforce, rest: FakeRestApi,
                                                   sf: SalesforceClient) -> None:
    org.inject_error(400, "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record", count=2,
                     path_prefix=V + "/sobjects/Account")
    before = sent(org, "POST", "/sobjects/Account")
    with events.recording() as seen:
        created = sf.sobject("Account").create({"Name": "locked then fine"})
    assert created["success"]
    assert sent(org, "POST", "/sobjects/Account") - before == 3
    assert [r["Name"] for r in rest.records("Account")] == ["locked then fine"]  # applied once
    assert [e["error_code"] for e in seen if e.name == events.TRANSIENT_RETRY] == ["UNABLE_TO_LOCK_ROW"] * 2


def test_retries_are_bounded(org: FakeSalesforce, rest: FakeRestApi) -> None:
    with SalesforceClient(org.jwt_auth(), retries=2, backoff_factor=0) as sf:
        sf.get("limits")
        org.inject_error(400, "UNABLE_TO_LOCK_ROW", count=10, path_prefix=V + "/sobjects/Account")
        before = sent(org, "POST", "/sobjects/Account")
        with pytest.raises(ApiError) as info:
            sf.sobject("Account").create({"Name": "x"})
        assert info.value.error_code == "UNABLE_TO_LOCK_ROW"
        assert sent(org, "POST", "/sobjects/Account") - before == 3
    org.clear_injected_errors()
    with SalesforceClient(org.jwt_auth(), retries=0) as sf:
        org.inject_error(500, "UNKNOWN_EXCEPTION", path_prefix=V + "/limits")
        with pytest.raises(ApiError):
            sf.get("limits")


def test_backoff_is_jittered_and_grows(org: FakeSalesforce, rest: FakeRestApi) -> None:
    with SalesforceClient(org.jwt_auth(), retries=3, backoff_factor=0.004) as sf:
        sf.get("limits")
        org.inject_error(500, "UNKNOWN_EXCEPTION", count=3, path_prefix=V + "/limits")
        with events.recording() as seen:
            sf.get("limits")
    delays = [e["delay"] for e in seen if e.name == events.TRANSIENT_RETRY]
    assert len(delays) == 3
    for n, delay in enumerate(delays):
        base = 0.004 * 2**n
        assert base * 0.5 <= delay <= base * 1.5


def test_execute_anonymous_is_not_resent_on_500(org: FakeSalesforce, sf: SalesforceClient,
                                                rest: FakeRestApi) -> None:
    org.inject_error(500, "UNKNOWN_EXCEPTION", path_prefix=V + "/tooling/executeAnonymous")
    with pytest.raises(ApiError):
        sf.tooling.execute_anonymous("insert new Account(Name='x');")
    assert rest.executed_apex == []
    assert sf.tooling.execute_anonymous("insert new Account(Name='x');")["success"]
    assert len(rest.executed_apex) == 1


def test_every_request_names_authkit(org: FakeSalesforce, sf: SalesforceClient) -> None:
    agents: list[str] = []

    def hook(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        agents.append(str(response.request.headers.get("User-Agent")))

    sf.session.hooks["response"].append(hook)
    sf.get("limits")
    sf.query("SELECT Id FROM Account").total_size  # noqa: B018 - the request is the point
    sf.post("composite/sobjects", json={"records": []})
    assert agents and all(a.startswith(f"authkit/{authkit.__version__} ") for a in agents)
    assert sf.get("limits", headers={"User-Agent": "mine/1.0"})
    assert agents[-1] == "mine/1.0"


def test_events_for_401_retry_and_api_usage_carry_no_secret(org: FakeSalesforce, sf: SalesforceClient) -> None:
    token = sf.auth.access_token()
    org.expire_sessions()
    with events.recording() as seen:
        sf.get("limits")
    names = [e.name for e in seen]
    assert events.UNAUTHORIZED_RETRY in names and events.API_USAGE in names
    retry = next(e for e in seen if e.name == events.UNAUTHORIZED_RETRY)
    assert retry.fields == {"method": "GET", "path": V + "/limits"}
    usage = next(e for e in seen if e.name == events.API_USAGE)
    assert usage["used"] >= 1 and usage["limit"] == org.api_limit
    fresh = sf.auth.access_token()
    for event in seen:
        assert token not in repr(event) and fresh not in repr(event)


def test_static_token_401_emits_nothing_to_retry(org: FakeSalesforce, rest: FakeRestApi) -> None:
    with SalesforceClient(StaticTokenAuth("00Dbad!token", org.instance_url)) as sf, events.recording() as seen:
        with pytest.raises(authkit.SessionExpiredError):
            sf.get("limits")
    assert [e.name for e in seen if e.name == events.UNAUTHORIZED_RETRY] == []


def test_hooks_and_emit_rules(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[events.Event] = []
    remove = events.add_hook(seen.append)

    def broken(event: events.Event) -> None:
        raise RuntimeError("a hook that fails")

    events.add_hook(broken)
    try:
        with caplog.at_level("INFO", logger="authkit.salesforce.events"):
            events.emit(events.TOKEN_MINTED, flow="JwtAuth", instance_url="https://x.my.salesforce.com")
        assert [e.name for e in seen] == [events.TOKEN_MINTED]
        assert "token_minted flow=JwtAuth" in caplog.text
        assert "a hook that fails" in caplog.text or "hook failed" in caplog.text
        with pytest.raises(ValueError):
            events.emit("made_up")
        for field in ("access_token", "client_secret", "password", "assertion", "private_key"):
            with pytest.raises(ValueError):
                events.emit(events.TOKEN_MINTED, **{field: "x"})
        with pytest.raises(TypeError):
            events.add_hook("not callable")  # type: ignore[arg-type]
    finally:
        remove()
        events.remove_hook(broken)
    events.emit(events.TOKEN_INVALIDATED, flow="JwtAuth")
    assert len(seen) == 1  # removed: nothing more arrives


def test_auth_flows_report_mints_and_invalidations(org: FakeSalesforce, rest: FakeRestApi) -> None:
    auth = org.jwt_auth()
    with events.recording() as seen:
        token = auth.access_token()
        auth.invalidate("not the current token")  # a stale one: nothing dropped, nothing reported
        auth.invalidate(token)
        auth.access_token()
    assert [e.name for e in seen] == [events.TOKEN_MINTED, events.TOKEN_INVALIDATED, events.TOKEN_MINTED]
    assert seen[0].fields == {"flow": "JwtAuth", "instance_url": org.instance_url}
    assert token not in repr(seen)


def test_auth_flows_report_revokes(org: FakeSalesforce) -> None:
    auth = org.jwt_auth()
    token = auth.access_token()
    with events.recording() as seen:
        assert auth.revoke()
        assert not auth.revoke()  # nothing held any more: nothing revoked, nothing reported
    assert [e.name for e in seen] == [events.TOKEN_REVOKED]
    assert seen[0].fields == {"flow": "JwtAuth", "refresh_revoked": False}
    assert token not in repr(seen)


def test_adapter_retries_are_reported(org: FakeSalesforce, sf: SalesforceClient) -> None:
    org.inject_error(503, "SERVER_UNAVAILABLE", path_prefix=V + "/limits")
    with events.recording() as seen:
        assert sf.get("limits", params={"q": "secret filter"})
    retries = [e for e in seen if e.name == events.TRANSIENT_RETRY]
    assert [(e["status"], e["source"], e["attempt"]) for e in retries] == [(503, "adapter", 1)]
    assert retries[0]["path"] == V + "/limits?q=..."
