"""``authkit salesforce login`` / ``logout`` as users run them: a real subprocess, a real loopback
redirect, and the browser played by the test (directly, or as the ``$BROWSER`` the command opens)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests

from authkit import open_storage
from authkit.testing import ConnectedApp, FakeSalesforce
from tests.test_cli import _env, authkit, one_error_line, start

REDIRECT = "http://127.0.0.1:0/OauthRedirect"  # port 0: the command listens on a free port


@pytest.fixture
def org() -> Iterator[FakeSalesforce]:
    with FakeSalesforce() as fake:
        yield fake


@pytest.fixture
def app(org: FakeSalesforce) -> ConnectedApp:
    return org.register_app()


def login_env(org: FakeSalesforce, app: ConnectedApp, tmp_path: Path, **extra: str) -> dict[str, str]:
    return _env(SF_CLIENT_ID=app.client_id, SF_CLIENT_SECRET=app.client_secret, SF_LOGIN_URL=org.login_url,
                AUTHKIT_STORAGE_URL=f"sqlite:///{tmp_path / 'tokens.db'}", **extra)


def authorization_url(process: subprocess.Popen[str]) -> str:
    """The URL the command prints for the user (its stderr, before it waits)."""
    assert process.stderr is not None
    for _ in range(5):
        line = process.stderr.readline()
        if line.startswith("http"):
            return line.strip()
    raise AssertionError("the command printed no authorization URL")


def play_browser(org: FakeSalesforce, url: str, **changes: str) -> requests.Response:
    """Log in at the org, then follow its redirect to the command's loopback server."""
    location = urlsplit(org.authorize(url))
    params = {k: v[-1] for k, v in parse_qs(location.query).items()}
    params.update(changes)
    return requests.get(urlunsplit(location._replace(query=urlencode(params))), timeout=30)


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def test_login_then_use_then_logout(tmp_path: Path, org: FakeSalesforce, app: ConnectedApp) -> None:
    env = login_env(org, app, tmp_path)
    process = start("salesforce", "login", "--token-store", "--no-browser", "--redirect-uri", REDIRECT,
                    "--timeout", "60", cwd=tmp_path, env=env)
    page = play_browser(org, authorization_url(process))
    assert page.status_code == 200 and "You can close this window" in page.text
    code, out, err = finish(process)
    assert code == 0, err
    user = org.default_user.username
    assert out.splitlines()[0] == f"ok: logged in as {user} at {org.instance_url}"
    assert org.token_requests == 1
    with open_storage(env["AUTHKIT_STORAGE_URL"], create_schema=False) as store:
        [token] = store.list_user_tokens(user)
        assert token.refresh_token and token.metadata["flow"] == "refresh_token"
    assert token.refresh_token not in out + err and token.access_token not in out + err

    # Any process now uses the stored token, knowing only the username.
    check = authkit("salesforce", "check", "--flow", "refresh_token", "--username", user, "--token-store",
                    "--json", cwd=tmp_path, env=env)
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["username"] == user and org.token_requests == 1

    logout = authkit("salesforce", "logout", "--token-store", "--username", user, cwd=tmp_path, env=env)
    assert logout.returncode == 0, logout.stderr
    assert logout.stdout.startswith("ok: revoked the Salesforce token and removed it from")
    assert org.active_sessions == 0
    with open_storage(env["AUTHKIT_STORAGE_URL"], create_schema=False) as store:
        assert store.list_user_tokens(user) == []
    again = authkit("salesforce", "check", "--flow", "refresh-token", "--username", user, "--token-store",
                    cwd=tmp_path, env=env)
    assert again.returncode == 1 and "no refresh token" in one_error_line(again)
    nothing = authkit("salesforce", "logout", "--token-store", "--username", user, cwd=tmp_path, env=env)
    assert nothing.returncode == 0 and nothing.stdout.startswith("ok: nothing to revoke")


BROWSER_SCRIPT = """
import sys, requests
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit
location = urlsplit(requests.get(sys.argv[2], allow_redirects=False, timeout=30).headers["Location"])
params = {k: v[-1] for k, v in parse_qs(location.query).items()}
if sys.argv[1] == "forge":
    params["state"] = "forged"
requests.get(urlunsplit(location._replace(query=urlencode(params))), timeout=30)
"""


@pytest.mark.parametrize("mode", ["honest", "forge"])
def test_login_opens_the_browser_and_checks_state(mode: str, tmp_path: Path, org: FakeSalesforce,
                                                 app: ConnectedApp) -> None:
    script = tmp_path / "browser.py"
    script.write_text(BROWSER_SCRIPT)
    env = login_env(org, app, tmp_path, BROWSER=f"{sys.executable} {script} {mode} %s")
    result = authkit("salesforce", "login", "--token-store", "--redirect-uri", REDIRECT, "--timeout", "60",
                     "--json", cwd=tmp_path, env=env)
    if mode == "honest":
        assert result.returncode == 0, result.stderr
        assert "(opened in your browser)" in result.stderr
        data = json.loads(result.stdout)
        assert data["status"] == "ok" and data["username"] == org.default_user.username
    else:
        assert result.returncode == 1
        assert "wrong state" in result.stderr and "Traceback" not in result.stderr
        assert org.token_requests == 0  # the code was never used


def test_login_prints_the_refresh_token_only_when_asked(tmp_path: Path, org: FakeSalesforce,
                                                       app: ConnectedApp) -> None:
    env = login_env(org, app, tmp_path)
    process = start("salesforce", "login", "--print-refresh-token", "--no-browser", "--redirect-uri", REDIRECT,
                    cwd=tmp_path, env=env)
    play_browser(org, authorization_url(process))
    code, out, err = finish(process)
    assert code == 0, err
    refresh_token = out.strip()
    assert refresh_token.startswith("5Aep861") and refresh_token not in err
    assert not (tmp_path / "tokens.db").exists()  # no store was asked for


def test_login_failures_are_one_line(tmp_path: Path, org: FakeSalesforce, app: ConnectedApp) -> None:
    env = login_env(org, app, tmp_path)
    timed_out = authkit("salesforce", "login", "--token-store", "--no-browser", "--redirect-uri", REDIRECT,
                        "--timeout", "0.3", cwd=tmp_path, env=env)
    assert timed_out.returncode == 1 and "timed out after 0.3 s" in timed_out.stderr.splitlines()[-1]
    no_wait = authkit("salesforce", "login", "--token-store", "--no-browser", "--timeout", "0", cwd=tmp_path, env=env)
    assert no_wait.returncode == 2 and "argument --timeout: must be > 0 seconds" in one_error_line(no_wait)

    org.deny_authorization = True
    process = start("salesforce", "login", "--token-store", "--no-browser", "--redirect-uri", REDIRECT,
                    cwd=tmp_path, env=env)
    play_browser(org, authorization_url(process))
    code, _, err = finish(process)
    assert code == 1 and err.splitlines()[-1] == (
        "authkit: error: login refused: access_denied: end-user denied authorization")

    nowhere = authkit("salesforce", "login", "--no-browser", cwd=tmp_path, env=env)
    assert nowhere.returncode == 2 and "--token-store" in one_error_line(nowhere)
    remote = authkit("salesforce", "login", "--token-store", "--redirect-uri", "https://app.example.com/cb",
                     cwd=tmp_path, env=env)
    assert remote.returncode == 2 and "loopback" in one_error_line(remote)
    no_client = authkit("salesforce", "login", "--token-store", cwd=tmp_path,
                        env={k: v for k, v in env.items() if k != "SF_CLIENT_ID"})
    assert no_client.returncode == 2 and "SF_CLIENT_ID" in one_error_line(no_client)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = authkit("salesforce", "login", "--token-store", "--no-browser", "--redirect-uri",
                        f"http://localhost:{port}/OauthRedirect", cwd=tmp_path, env=env)
    assert taken.returncode == 1 and "cannot listen" in one_error_line(taken)


def test_private_key_problems_never_print_the_key_or_the_file(tmp_path: Path, org: FakeSalesforce) -> None:
    jwt_app = org.register_jwt_app(org.default_user.username)
    pem = jwt_app.private_key_pem
    assert pem is not None
    headless = "\n".join(pem.splitlines()[1:-1])
    base = _env(SF_CLIENT_ID=jwt_app.client_id, SF_USERNAME=org.default_user.username, SF_LOGIN_URL=org.login_url)
    for extra in ({"SF_PRIVATE_KEY_FILE": "/etc/passwd"}, {"SF_PRIVATE_KEY": headless},
                  {"SF_PRIVATE_KEY_FILE": headless}, {"SF_PRIVATE_KEY": "not a key"}):
        for json_flag in ([], ["--json"]):
            result = authkit("salesforce", "check", "--flow", "jwt", *json_flag, cwd=tmp_path, env={**base, **extra})
            assert result.returncode == 2, result.stderr
            text = result.stdout + result.stderr
            assert "not a PEM private key" in text or "cannot read the JWT private key file" in text
            assert "root:" not in text and pem.splitlines()[1][:24] not in text and "/etc/passwd" not in text
            assert "Traceback" not in text
