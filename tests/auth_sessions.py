"""An auth session of each minting flow for a FakeSalesforce's default user, for the auth tests::

    auth = make("jwt", org, app, token_store=store)    # app: org.register_jwt_app(run_as=...)

``token_exchange`` trades :data:`SUBJECT`, which the org must accept (``org.add_subject_token(SUBJECT)``).
Also what those tests do with a session: :func:`call_api` as SalesforceClient would,
:func:`in_threads` many at once, :func:`refused` for the error a mint ends with.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import requests

from authkit.errors import AuthenticationError
from authkit.salesforce import (
    AuthSession,
    ClientCredentialsAuth,
    JwtAuth,
    PasswordAuth,
    RefreshTokenAuth,
    TokenExchangeAuth,
)
from authkit.testing import ConnectedApp, FakeSalesforce

SUBJECT = "idp-access-token-0123456789"


def make(flow: str, org: FakeSalesforce, app: ConnectedApp, **options: Any) -> AuthSession:
    """A session of ``flow`` for the org's default user (fast retries for tests)."""
    options.setdefault("backoff", 0.01)
    user = org.default_user
    if flow == "jwt":
        assert app.private_key_pem is not None
        return JwtAuth(app.client_id, user.username, app.private_key_pem, login_url=org.login_url, **options)
    if flow == "refresh_token":
        rt = options.pop("refresh_token", None) or org.issue_refresh_token(app.client_id)
        options.setdefault("client_secret", app.client_secret)
        return RefreshTokenAuth(app.client_id, rt, login_url=org.login_url, **options)
    if flow == "client_credentials":
        return ClientCredentialsAuth(app.client_id, app.client_secret, org.login_url, **options)
    if flow == "password":
        return PasswordAuth(app.client_id, app.client_secret, user.username, user.password, user.security_token,
                            login_url=org.login_url, **options)
    if flow == "token_exchange":
        options.setdefault("client_secret", app.client_secret)
        return TokenExchangeAuth(app.client_id, SUBJECT, "access_token", login_url=org.login_url, **options)
    raise ValueError(f"unknown flow {flow!r}")


def call_api(auth: AuthSession) -> str:
    """What SalesforceClient does: use the token; on a rejection invalidate it and retry once."""
    token = auth.access_token()
    response = requests.get(auth.instance_url + "/services/oauth2/userinfo",
                            headers={"Authorization": f"Bearer {token}"}, timeout=30)
    if response.status_code == 403:
        auth.invalidate(token)
        token = auth.access_token()
        response = requests.get(auth.instance_url + "/services/oauth2/userinfo",
                                headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 200, response.text
    return token


def in_threads(n: int, fn: Callable[[], Any]) -> list[Any]:
    """Run ``fn`` in ``n`` threads released together; return results (or exceptions)."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def refused(auth: AuthSession) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as info:
        auth.access_token()
    return info.value
