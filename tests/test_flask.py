"""The Flask integration: server-side sessions, the extension, ``flask authkit cleanup``.

Through Flask's test client on every backend in ``tests/backends.py``, and
through a real threaded werkzeug server with concurrent ``requests`` clients.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask, flash, get_flashed_messages, jsonify, request, session
from flask.sessions import SecureCookieSessionInterface
from werkzeug.serving import make_server

from authkit.contrib.flask import (
    DEFAULT_NON_PERMANENT_LIFETIME,
    AuthKit,
    AuthKitSession,
    AuthKitSessionInterface,
    regenerate_session,
)
from authkit.contrib.session_ids import stored_session_id
from authkit.errors import ConfigurationError, StorageUnavailableError
from authkit.maintenance import CLEANUP_LOCK
from authkit.models import CleanupReport, SessionData
from authkit.storage import AuthStorage, MemoryStorage
from tests.backends import BACKENDS
from tests.clock import FakeClock
from tests.session_calls import Recording, quiet_reset, settled_turns
from tests.store_contents import store_contents
from tests.threads import run_threads

SID = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def module_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def storage(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, module_clock: FakeClock
) -> Iterator[AuthStorage]:
    """One storage per backend for the module; tests use fresh session ids, so they do not meet."""
    with BACKENDS[request.param](tmp_path_factory.mktemp(request.param), module_clock) as backend:
        yield backend


def make_app(storage: AuthStorage | None, **config: Any) -> Flask:
    """The test app; ``storage=None``: AuthKit opens ``AUTHKIT_STORAGE_URL`` itself."""
    app = Flask(__name__)
    app.config.update(TESTING=True, **config)
    AuthKit(app, storage=storage)

    @app.get("/noop")
    def noop() -> str:
        return "ok"

    @app.get("/peek")
    def peek() -> Any:
        return jsonify(dict(session))

    @app.get("/set")
    def set_() -> str:
        session.update(request.args)
        return "ok"

    @app.get("/permanent")
    def permanent() -> str:
        session.permanent = True
        session["p"] = 1
        return "ok"

    @app.get("/count")
    def count() -> str:
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    @app.get("/login")
    def login() -> str:
        regenerate_session()
        session["user_id"] = request.args["user"]
        return "ok"

    @app.get("/logout")
    def logout() -> str:
        session.clear()
        return "ok"

    @app.get("/flash")
    def flash_() -> str:
        flash("saved", "info")
        return "ok"

    @app.get("/flashes")
    def flashes() -> Any:
        return jsonify(get_flashed_messages(with_categories=True))

    @app.get("/types")
    def types() -> str:
        session["tuple"] = (1, "two")
        session["bytes"] = b"\x00\xff"
        session["when"] = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
        session["uuid"] = uuid.UUID(int=7)
        return "ok"

    @app.get("/types/check")
    def types_check() -> Any:
        return jsonify(
            tuple=session["tuple"] == (1, "two"),
            bytes=session["bytes"] == b"\x00\xff",
            when=session["when"] == datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
            uuid=session["uuid"] == uuid.UUID(int=7),
        )

    @app.get("/bad")
    def bad() -> str:
        session["x"] = object()
        return "ok"

    return app


def set_cookies(response: Any) -> list[str]:
    return list(response.headers.getlist("Set-Cookie"))


def sid_of(response: Any, name: str = "session") -> str:
    for header in set_cookies(response):
        if header.startswith(f"{name}="):
            return str(header.split(";", 1)[0].split("=", 1)[1])
    raise AssertionError(f"no {name} cookie set: {set_cookies(response)}")


# -- sessions ----------------------------------------------------------------


def test_untouched_or_read_only_empty_session_writes_nothing(storage: AuthStorage) -> None:
    app = make_app(storage)
    client = app.test_client()
    before = storage.count_active_sessions()
    assert set_cookies(client.get("/noop")) == []
    response = client.get("/peek")  # accessed, still empty
    assert set_cookies(response) == []
    assert response.json == {}
    assert "Cookie" in response.headers.get("Vary", "")
    assert storage.count_active_sessions() == before


def test_set_then_read_stores_json_server_side(storage: AuthStorage) -> None:
    client = make_app(storage).test_client()
    response = client.get("/set?color=blue")
    sid = sid_of(response)
    assert SID.match(sid)
    record = storage.get_session(stored_session_id(sid))
    assert isinstance(record, SessionData)
    assert record.data == {"color": "blue"}
    assert record.user_id == "anonymous"
    assert record.ip_address == "127.0.0.1"
    assert client.get("/peek").json == {"color": "blue"}
    # Only the id reaches the browser.
    assert "blue" not in " ".join(set_cookies(response))


def test_cookie_flags_come_from_flask_config(storage: AuthStorage) -> None:
    app = make_app(
        storage,
        SESSION_COOKIE_NAME="sid",
        SESSION_COOKIE_DOMAIN="example.test",
        SESSION_COOKIE_PATH="/app",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PARTITIONED=True,
    )
    response = app.test_client().get("/set?a=1")
    (header,) = set_cookies(response)
    assert header.startswith("sid=")
    for flag in ("Domain=example.test", "Path=/app", "Secure", "HttpOnly", "SameSite=Strict", "Partitioned"):
        assert flag in header, header
    assert "Expires" not in header  # not permanent: a browser-session cookie


def test_defaults_cookie_flags(storage: AuthStorage) -> None:
    (header,) = set_cookies(make_app(storage).test_client().get("/set?a=1"))
    assert "HttpOnly" in header and "Path=/" in header
    assert "Secure" not in header


def test_permanent_session_slides_with_each_request(storage: AuthStorage, module_clock: FakeClock) -> None:
    app = make_app(storage, PERMANENT_SESSION_LIFETIME=timedelta(minutes=30))
    client = app.test_client()
    response = client.get("/permanent")
    sid = sid_of(response)
    assert "Expires=" in set_cookies(response)[0]
    first = storage.get_session(stored_session_id(sid))
    assert first is not None and first.expires_at is not None
    assert abs((first.expires_at - storage.now()) - timedelta(minutes=30)) < timedelta(seconds=5)

    module_clock.advance(20 * 60)
    response = client.get("/noop")  # untouched, but refreshed: SESSION_REFRESH_EACH_REQUEST
    assert sid_of(response) == sid
    second = storage.get_session(stored_session_id(sid))
    assert second is not None and second.expires_at is not None
    assert second.expires_at - first.expires_at >= timedelta(minutes=19)
    assert second.created_at == first.created_at

    module_clock.advance(20 * 60)  # 40 minutes after login, 20 after the last request
    assert client.get("/peek").json == {"_permanent": True, "p": 1}

    module_clock.advance(31 * 60)  # idle longer than the lifetime
    assert client.get("/peek").json == {}
    assert storage.get_session(stored_session_id(sid)) is None


def test_non_permanent_session_has_a_server_side_idle_lifetime(
    storage: AuthStorage, module_clock: FakeClock
) -> None:
    app = make_app(storage)
    client = app.test_client()
    sid = sid_of(client.get("/set?a=1"))
    record = storage.get_session(stored_session_id(sid))
    assert record is not None and record.expires_at is not None
    assert abs((record.expires_at - storage.now()) - DEFAULT_NON_PERMANENT_LIFETIME) < timedelta(seconds=5)
    module_clock.advance(3600)
    response = client.get("/noop")
    assert set_cookies(response) == []  # the record slides, the browser-session cookie is not re-sent
    refreshed = storage.get_session(stored_session_id(sid))
    assert refreshed is not None and refreshed.expires_at is not None
    assert refreshed.expires_at - record.expires_at >= timedelta(minutes=59)
    module_clock.advance(DEFAULT_NON_PERMANENT_LIFETIME.total_seconds() + 1)
    assert client.get("/peek").json == {}


def test_custom_non_permanent_lifetime(storage: AuthStorage) -> None:
    app = make_app(storage, AUTHKIT_SESSION_LIFETIME=600)
    sid = sid_of(app.test_client().get("/set?a=1"))
    record = storage.get_session(stored_session_id(sid))
    assert record is not None and record.expires_at is not None
    assert abs((record.expires_at - storage.now()) - timedelta(seconds=600)) < timedelta(seconds=5)


def test_no_refresh_each_request_writes_only_changes(storage: AuthStorage, module_clock: FakeClock) -> None:
    app = make_app(storage, SESSION_REFRESH_EACH_REQUEST=False)
    client = app.test_client()
    sid = sid_of(client.get("/permanent"))
    record = storage.get_session(stored_session_id(sid))
    module_clock.advance(60)
    assert set_cookies(client.get("/peek")) == []
    assert storage.get_session(stored_session_id(sid)) == record  # not written
    assert sid_of(client.get("/set?b=2")) == sid
    changed = storage.get_session(stored_session_id(sid))
    assert changed is not None and record is not None and changed.last_activity > record.last_activity


def test_regenerate_on_login_moves_the_session_and_deletes_the_old_record(storage: AuthStorage) -> None:
    client = make_app(storage).test_client()
    before = sid_of(client.get("/set?cart=3"))
    response = client.get("/login?user=alice")
    after = sid_of(response)
    assert after != before and SID.match(after)
    assert storage.get_session(stored_session_id(before)) is None
    record = storage.get_session(stored_session_id(after))
    assert record is not None and record.user_id == "alice"
    assert record.data == {"cart": "3", "user_id": "alice"}
    assert [s.session_id for s in storage.list_user_sessions("alice")] == [stored_session_id(after)]
    assert client.get("/peek").json == {"cart": "3", "user_id": "alice"}
    # An attacker holding the old id gets nothing.
    other = make_app(storage).test_client()
    other.set_cookie("session", before)
    assert other.get("/peek").json == {}


def test_regenerate_of_a_new_session(storage: AuthStorage) -> None:
    client = make_app(storage).test_client()
    sid = sid_of(client.get("/login?user=bob"))
    record = storage.get_session(stored_session_id(sid))
    assert record is not None and record.user_id == "bob"


def test_regenerate_session_needs_the_authkit_interface() -> None:
    app = Flask(__name__)
    app.secret_key = "test"
    assert isinstance(app.session_interface, SecureCookieSessionInterface)
    with app.test_request_context("/"):
        app.session_interface.open_session(app, request)
        with pytest.raises(RuntimeError, match="AuthKit"):
            regenerate_session()


def test_clear_deletes_record_and_cookie(storage: AuthStorage) -> None:
    client = make_app(storage).test_client()
    sid = sid_of(client.get("/set?a=1"))
    response = client.get("/logout")
    (header,) = set_cookies(response)
    assert header.startswith("session=;") and ("Max-Age=0" in header or "1970" in header)
    assert storage.get_session(stored_session_id(sid)) is None
    assert client.get("/peek").json == {}


def test_logout_elsewhere_is_not_undone_by_a_concurrent_request(storage: AuthStorage) -> None:
    app = make_app(storage)

    @app.get("/slow-write")
    def slow_write() -> str:
        session["late"] = True
        # A logout in another request lands while this one runs.
        storage.delete_session(stored_session_id(request.cookies["session"]))
        return "ok"

    client = app.test_client()
    sid = sid_of(client.get("/set?a=1"))
    response = client.get("/slow-write")
    assert storage.get_session(stored_session_id(sid)) is None  # not resurrected
    (header,) = set_cookies(response)
    assert header.startswith("session=;")


def test_flask_values_round_trip_through_tagged_json(storage: AuthStorage) -> None:
    client = make_app(storage).test_client()
    sid = sid_of(client.get("/types"))
    assert client.get("/types/check").json == {"tuple": True, "bytes": True, "when": True, "uuid": True}
    record = storage.get_session(stored_session_id(sid))
    assert record is not None
    json.dumps(record.data)  # stored as plain JSON, never pickled


def test_flash_messages_work(storage: AuthStorage) -> None:
    client = make_app(storage).test_client()
    client.get("/flash")
    assert client.get("/flashes").json == [["info", "saved"]]
    assert client.get("/flashes").json == []


def test_non_json_value_is_type_error(storage: AuthStorage) -> None:
    client = make_app(storage).test_client()
    with pytest.raises(TypeError, match="JSON"):
        client.get("/bad")


@pytest.mark.parametrize("cookie", ["forged-but-plausible-id", "x" * 300, "\u00e9t\u00e9"])
def test_unknown_or_invalid_cookie_is_a_new_empty_session(storage: AuthStorage, cookie: str) -> None:
    client = make_app(storage).test_client()
    client.set_cookie("session", cookie)
    response = client.get("/peek")
    assert response.json == {}
    assert set_cookies(response) == []
    sid = sid_of(client.get("/set?a=1"))
    assert sid != cookie and SID.match(sid)


def test_user_id_key_setting(storage: AuthStorage) -> None:
    app = make_app(storage, AUTHKIT_SESSION_USER_KEY="uid")
    sid = sid_of(app.test_client().get("/set?uid=99"))
    record = storage.get_session(stored_session_id(sid))
    assert record is not None and record.user_id == "99"


def test_session_object_new_flag(storage: AuthStorage) -> None:
    app = make_app(storage)
    seen: list[bool] = []

    @app.get("/new")
    def new() -> str:
        assert isinstance(session._get_current_object(), AuthKitSession)  # type: ignore[attr-defined]
        seen.append(session.new)
        session["x"] = 1
        return "ok"

    client = app.test_client()
    client.get("/new")
    client.get("/new")
    assert seen == [True, False]


# -- the extension --------------------------------------------------------------


def test_extension_opens_storage_from_url_and_closes_it() -> None:
    app = Flask(__name__)
    app.config["AUTHKIT_STORAGE_URL"] = "memory://"
    ext = AuthKit()
    ext.init_app(app)
    assert isinstance(app.session_interface, AuthKitSessionInterface)
    storage = ext.get_storage(app)
    assert isinstance(storage, MemoryStorage)
    assert app.session_interface.storage is storage
    with app.app_context():
        assert ext.storage is storage
    with pytest.raises(RuntimeError, match="already"):
        ext.init_app(app)
    ext.close(app)


def test_extension_bad_settings() -> None:
    app = Flask(__name__)
    app.config["AUTHKIT_STORAGE_URL"] = "nosuch://x"
    ext = AuthKit(app)  # the storage opens on first use: an app whose database is down still starts
    with pytest.raises(ConfigurationError, match="unknown storage scheme"):
        ext.get_storage(app)
    result = app.test_cli_runner().invoke(args=["authkit", "cleanup"])
    assert result.exit_code == 2
    assert result.stderr.startswith("authkit: error: bad storage configuration: unknown storage scheme")
    app2 = Flask(__name__)
    app2.config.update(AUTHKIT_STORAGE_URL="memory://", AUTHKIT_SESSION_LIFETIME=-1)
    with pytest.raises(ValueError):
        AuthKit(app2)


def test_extension_can_leave_flask_sessions_alone() -> None:
    app = Flask(__name__)
    app.config.update(AUTHKIT_STORAGE_URL="memory://", AUTHKIT_SESSIONS=False)
    AuthKit(app)
    assert isinstance(app.session_interface, SecureCookieSessionInterface)


def test_storage_is_shared_by_requests_not_closed_per_request() -> None:
    closed: list[int] = []

    class Tracking(MemoryStorage):
        def close(self) -> None:
            closed.append(1)

    storage = Tracking()
    app = make_app(storage)
    client = app.test_client()
    for _ in range(3):
        client.get("/count")
    assert closed == []
    assert client.get("/count").text == "4"


def test_salesforce_without_settings_is_configuration_error() -> None:
    app = Flask(__name__)
    app.config["AUTHKIT_STORAGE_URL"] = "memory://"
    ext = AuthKit(app)
    with app.app_context(), pytest.raises(ConfigurationError, match="AUTHKIT_SALESFORCE_FLOW"):
        ext.salesforce  # noqa: B018


# -- flask authkit cleanup ----------------------------------------------------------


def test_cleanup_command(storage: AuthStorage) -> None:
    app = make_app(storage)
    storage.store_kv("flask-cleanup-probe", b"x", ttl=0.001)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["authkit", "cleanup", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["status"] == "ok" and summary["kv"] >= 0
    result = runner.invoke(args=["authkit", "cleanup", "--batch-size", "10"])
    assert result.exit_code == 0
    assert result.output.count("\n") == 1 and result.output.startswith("cleanup: deleted ")


def test_cleanup_command_skips_when_another_cleanup_runs(storage: AuthStorage) -> None:
    app = make_app(storage)
    with storage.lock(CLEANUP_LOCK, timeout=5):
        result = app.test_cli_runner().invoke(args=["authkit", "cleanup"])
    assert result.exit_code == 0
    assert result.output.strip() == "skipped: another cleanup is running"


def test_cleanup_command_failure_is_one_line_and_nonzero() -> None:
    class Down(MemoryStorage):
        def _cleanup_batch(self, now: datetime, limit: int, *kinds: object) -> CleanupReport:
            raise StorageUnavailableError("cannot reach the storage server")

    app = make_app(Down())
    result = app.test_cli_runner().invoke(args=["authkit", "cleanup"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.stderr == "authkit: error: StorageUnavailableError: cannot reach the storage server\n"


def test_cleanup_command_rejects_bad_batch_size(storage: AuthStorage) -> None:
    result = make_app(storage).test_cli_runner().invoke(args=["authkit", "cleanup", "--batch-size", "0"])
    assert result.exit_code == 2


# -- a real threaded server ------------------------------------------------------------


@pytest.fixture
def server(storage: AuthStorage) -> Iterator[str]:
    app = make_app(storage, PERMANENT_SESSION_LIFETIME=timedelta(minutes=5))
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join(timeout=10)
        httpd.server_close()


def test_threaded_server_concurrent_clients_keep_their_own_sessions(server: str, storage: AuthStorage) -> None:
    sids: dict[int, str] = {}
    mutex = threading.Lock()

    def user(n: int) -> None:
        with requests.Session() as http:
            assert http.get(f"{server}/login", params={"user": f"u{n}"}, timeout=10).ok
            for expected in range(1, 11):
                assert http.get(f"{server}/count", timeout=10).text == str(expected)
            data = http.get(f"{server}/peek", timeout=10).json()
            assert data == {"user_id": f"u{n}", "n": 10}
            with mutex:
                sids[n] = http.cookies["session"]
            assert http.get(f"{server}/logout", timeout=10).ok
            assert "session" not in http.cookies
            assert http.get(f"{server}/peek", timeout=10).json() == {}

    run_threads(user, 8)
    assert len(set(sids.values())) == 8
    assert all(storage.get_session(stored_session_id(sid)) is None for sid in sids.values())


def test_threaded_server_logout_wins_over_concurrent_requests(server: str, storage: AuthStorage) -> None:
    """Many requests on one session while it logs out: afterwards it stays logged out."""
    for _ in range(3):
        with requests.Session() as http:
            http.get(f"{server}/login", params={"user": "racer"}, timeout=10)
            sid = http.cookies["session"]
            stop = threading.Event()
            errors: list[BaseException] = []

            def hammer(sid: str = sid, stop: threading.Event = stop, errors: list[BaseException] = errors) -> None:
                try:
                    with requests.Session() as other:
                        other.cookies.set("session", sid)
                        while not stop.is_set():
                            other.get(f"{server}/set", params={"x": "1"}, timeout=10)
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=hammer) for _ in range(4)]
            for t in threads:
                t.start()
            assert http.get(f"{server}/logout", timeout=10).ok
            stop.set()
            for t in threads:
                t.join()
            assert errors == []
            assert storage.get_session(stored_session_id(sid)) is None


def test_storage_url_app_shares_one_storage_across_threads(tmp_path: Path) -> None:
    app = Flask(__name__)
    app.config["AUTHKIT_STORAGE_URL"] = "memory://"
    ext = AuthKit(app)
    seen: list[AuthStorage] = []

    @app.get("/which")
    def which() -> str:
        seen.append(ext.storage)
        return "ok"

    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_port}/which"
        run_threads(lambda _: requests.get(url, timeout=10), 6)
    finally:
        httpd.shutdown()
        thread.join(timeout=10)
        httpd.server_close()
    assert len(seen) == 6 and all(s is seen[0] for s in seen)
    ext.close(app)


# -- lock-free saves on the atomic primitives, digests, round trips ----------------------


def test_every_save_is_one_primitive_call_and_takes_no_lock() -> None:
    storage = Recording()
    app = make_app(storage)

    @app.get("/append")
    def append() -> str:
        session["cart"].append(3)  # a change Flask's session does not notice
        return "ok"

    client = app.test_client()
    client.get("/set?cart=x")
    assert storage.take() == ["create"]  # no cookie: nothing to read
    client.get("/peek")
    assert storage.take() == ["get", "touch"]  # unchanged data: only the expiry slides
    client.get("/set?cart=y")
    assert storage.take() == ["get", "replace"]
    client.get("/set?cart=y")  # set to what it was: nothing to rewrite
    assert storage.take() == ["get", "touch"]
    client.get("/login?user=ann")
    assert storage.take() == ["get", "delete", "create"]  # the old id goes, a new one is made
    sid = client.get_cookie("session")
    assert sid is not None
    record = storage.get_session(stored_session_id(sid.value))
    assert record is not None
    storage.replace_session(record.session_id, SessionData(session_id="", user_id="ann", data={"cart": [1]}))
    storage.take()
    client.get("/append")
    assert storage.take() == ["get", "replace"]  # the data differs from what was read: rewritten
    assert client.get("/peek").json == {"cart": [1, 3]}
    storage.take()
    client.get("/logout")
    assert storage.take() == ["get", "delete"]
    app.config["SESSION_REFRESH_EACH_REQUEST"] = False
    client.get("/set?a=1")
    storage.take()
    client.get("/peek")
    assert storage.take() == ["get"]  # nothing changed, nothing to refresh: no write at all


def test_a_session_expired_while_the_request_ran_is_not_brought_back(
    storage: AuthStorage, module_clock: FakeClock
) -> None:
    app = make_app(storage, PERMANENT_SESSION_LIFETIME=timedelta(minutes=5))

    @app.get("/outlive")
    def outlive() -> str:
        session.get("p")
        module_clock.advance(6 * 60)  # the request outlives the session
        return "ok"

    client = app.test_client()
    sid = sid_of(client.get("/permanent"))
    (header,) = set_cookies(client.get("/outlive"))  # touch_session finds nothing live
    assert header.startswith("session=;")
    assert storage.get_session(stored_session_id(sid)) is None


def test_the_store_holds_a_digest_of_the_session_id_never_the_cookie_value(storage: AuthStorage) -> None:
    client = make_app(storage).test_client()
    first = sid_of(client.get("/set?a=1"))
    second = sid_of(client.get("/login?user=digest-user"))
    client.get("/count")
    contents = store_contents(storage)
    assert first not in contents and second not in contents
    assert stored_session_id(second) in contents  # the scan does see the sessions
    assert [s.session_id for s in storage.list_user_sessions("digest-user")] == [stored_session_id(second)]
    with make_app(storage).test_request_context(headers={"Cookie": f"session={second}"}):
        assert isinstance(session._get_current_object(), AuthKitSession)  # type: ignore[attr-defined]
        assert session.stored_id == stored_session_id(second)  # type: ignore[attr-defined]
    # A copy of the database opens nothing: the stored id, sent as a cookie, is no session.
    thief = make_app(storage).test_client()
    thief.set_cookie("session", stored_session_id(second))
    assert thief.get("/peek").json == {}


def test_log_out_everywhere_else_keeps_this_session(storage: AuthStorage) -> None:
    app = make_app(storage)

    @app.get("/logout-elsewhere")
    def logout_elsewhere() -> str:
        current = session._get_current_object()  # type: ignore[attr-defined]
        return str(storage.delete_user_sessions(session["user_id"], keep=current.stored_id))

    browsers = [app.test_client() for _ in range(3)]
    for browser in browsers:
        browser.get("/login?user=everywhere")
    assert browsers[0].get("/logout-elsewhere").text == "2"
    assert browsers[0].get("/peek").json == {"user_id": "everywhere"}
    assert browsers[1].get("/peek").json == {} and browsers[2].get("/peek").json == {}


def test_round_trips_per_request_on_redis() -> None:
    from urllib.parse import urlsplit

    from authkit.storage.redis import RedisStorage
    from tests.backends import drop_redis_keys
    from tests.services import REDIS_URL, require, unique_prefix
    from tests.tcp_proxy import TcpProxy

    parts = urlsplit(require(REDIS_URL, "Redis"))
    prefix = unique_prefix("r").rstrip("_") + ":"
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy:
        storage = RedisStorage.from_url(proxy.url(REDIS_URL), prefix=prefix)
        try:
            client = make_app(storage).test_client()
            client.get("/set?warm=up")
            client.get("/logout")

            def turns(path: str) -> int:
                quiet_reset(proxy)
                assert client.get(path).status_code == 200
                return settled_turns(proxy)

            assert turns("/set?a=1") == 1  # create_session
            assert turns("/count") == 2  # read + replace_session
            assert turns("/peek") == 2  # read + touch_session
            assert turns("/login?user=rt") == 3  # read + delete the old id + create the new one
            assert turns("/logout") == 2  # read + delete_session
        finally:
            drop_redis_keys(storage._client, prefix)
            storage.close()


def test_64_concurrent_requests_on_64_sessions_on_postgresql_all_answer() -> None:
    """No lock in a save: 64 requests at once on default pool options all get 200 (no pool starvation)."""
    from authkit.storage.sql import SqlStorage
    from tests.services import POSTGRES_URL, require, unique_prefix

    storage = SqlStorage(require(POSTGRES_URL, "PostgreSQL"), prefix=unique_prefix("s"))
    app = make_app(storage)
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_port}"
    try:
        cookies = []
        for n in range(64):
            response = requests.get(f"{base}/login", params={"user": f"u{n}"}, timeout=60)
            assert response.status_code == 200
            cookies.append(response.cookies["session"])
        statuses: list[int] = []
        mutex = threading.Lock()

        def request(n: int) -> None:
            response = requests.get(f"{base}/count", cookies={"session": cookies[n]}, timeout=120)
            with mutex:
                statuses.append(response.status_code)
            assert response.text == "1"

        run_threads(request, 64)
        assert statuses == [200] * 64
        assert {s.user_id for s in storage.list_user_sessions("u7")} == {"u7"}
    finally:
        httpd.shutdown()
        thread.join(timeout=10)
        httpd.server_close()
        storage.drop_schema()
        storage.close()


# -- the shared Salesforce client -------------------------------------------------------


def salesforce_app(storage: AuthStorage, org: Any, key_file: Path, **config: Any) -> tuple[Flask, AuthKit]:
    jwt_app = org.register_jwt_app(run_as=org.default_user.username)
    key_file.write_text(jwt_app.private_key_pem)
    app = Flask(__name__)
    app.config.update(
        TESTING=True,
        AUTHKIT_SALESFORCE_FLOW="jwt",
        AUTHKIT_SALESFORCE_CLIENT_ID=jwt_app.client_id,
        AUTHKIT_SALESFORCE_USERNAME=org.default_user.username,
        AUTHKIT_SALESFORCE_PRIVATE_KEY_FILE=str(key_file),
        AUTHKIT_SALESFORCE_LOGIN_URL=org.login_url,
        AUTHKIT_SALESFORCE_API_VERSION="61.0",
        **config,
    )
    ext = AuthKit(app, storage=storage)

    @app.get("/accounts")
    def accounts() -> Any:
        return jsonify([r["Name"] for r in ext.salesforce.query("SELECT Id, Name FROM Account ORDER BY Name")])

    return app, ext


# The token store itself is tested on every backend by the Salesforce tests; here, one
# in-process and one file store show the wiring.
@pytest.mark.parametrize("backend", [name for name in ("memory", "sqlite-file") if name in BACKENDS])
def test_salesforce_client_is_shared_by_threads_and_mints_once(backend: str, tmp_path: Path) -> None:
    from authkit.salesforce import SalesforceClient
    from authkit.testing import FakeSalesforce

    with BACKENDS[backend](tmp_path, FakeClock()) as storage, FakeSalesforce() as org:
        assert org.rest is not None
        org.rest.insert("Account", {"Name": "Acme"})
        app, ext = salesforce_app(storage, org, tmp_path / "sf.key")
        httpd = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        results: list[Any] = []
        try:
            url = f"http://127.0.0.1:{httpd.server_port}/accounts"
            run_threads(lambda _: results.append(requests.get(url, timeout=30).json()), 8)
        finally:
            httpd.shutdown()
            thread.join(timeout=10)
            httpd.server_close()
        assert results == [["Acme"]] * 8
        assert org.token_requests == 1  # one login for every thread
        client = ext.get_salesforce(app)
        assert isinstance(client, SalesforceClient)
        assert client is ext.get_salesforce(app)
        # The token is in the app's storage: a second app (another worker) on it does not log in again.
        app2 = Flask(__name__)
        app2.config.update({k: v for k, v in app.config.items() if k.startswith("AUTHKIT_SALESFORCE_")})
        ext2 = AuthKit(app2, storage=storage)
        with app2.app_context():
            assert [r["Name"] for r in ext2.salesforce.query("SELECT Id, Name FROM Account")] == ["Acme"]
        assert org.token_requests == 1
        ext.close(app)
        ext2.close(app2)


def test_salesforce_from_a_ready_auth_session(tmp_path: Path) -> None:
    from authkit.testing import FakeSalesforce

    with FakeSalesforce() as org:
        app = Flask(__name__)
        app.config.update(AUTHKIT_STORAGE_URL="memory://", AUTHKIT_SALESFORCE_AUTH=org.password_auth)
        ext = AuthKit(app)
        with app.app_context():
            assert ext.salesforce.get("limits") is not None
        assert org.token_requests == 1
        ext.close(app)


def test_salesforce_bad_settings_are_configuration_errors() -> None:
    app = Flask(__name__)
    app.config.update(AUTHKIT_STORAGE_URL="memory://", AUTHKIT_SALESFORCE_FLOW="oauth-magic")
    ext = AuthKit(app)
    with app.app_context(), pytest.raises(ConfigurationError, match="unknown Salesforce flow"):
        ext.salesforce  # noqa: B018


def test_salesforce_client_given_to_the_extension_is_used_and_not_closed() -> None:
    from authkit.salesforce import SalesforceClient, StaticTokenAuth

    closed: list[int] = []

    class Tracking(SalesforceClient):
        def close(self) -> None:
            closed.append(1)
            super().close()

    given = Tracking(StaticTokenAuth("not-a-real-token", "https://example.my.salesforce.com"))
    app = Flask(__name__)
    app.config["AUTHKIT_STORAGE_URL"] = "memory://"
    ext = AuthKit(app, salesforce=given)
    assert ext.get_salesforce(app) is given
    ext.close(app)
    assert closed == []
    given.close()


# -- the real `flask` command ------------------------------------------------------------


def _subprocess_env(**extra: str) -> dict[str, str]:
    import os

    root = str(Path(__file__).resolve().parent.parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHKIT_", "SF_", "FLASK_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def test_flask_command_line_cleanup(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    args = [sys.executable, "-m", "flask", "--app", "examples/flask_app", "authkit", "cleanup", "--json"]
    ok = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=60,
                        env=_subprocess_env(AUTHKIT_STORAGE_URL=f"sqlite:///{tmp_path / 'a.db'}"))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["status"] == "ok"
    bad = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=60,
                         env=_subprocess_env(AUTHKIT_STORAGE_URL="nosuch://x"))
    assert bad.returncode == 2  # configuration: as `authkit cleanup` exits
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("authkit: error: bad storage configuration: unknown storage scheme")
    assert json.loads(bad.stdout)["status"] == "error"


def test_another_process_shares_the_sessions(tmp_path: Path) -> None:
    """Two processes (two gunicorn workers) on one file storage: a session from one works on the other."""
    import subprocess
    import sys

    pytest.importorskip("authkit.storage.sql")
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    app = make_app(None, AUTHKIT_STORAGE_URL=url)
    ext = AuthKit()  # any instance reaches the app's state
    client = app.test_client()
    sid = sid_of(client.get("/login?user=worker-a"))
    child = (
        "import json\n"
        "from flask import Flask, session\n"
        "from authkit.contrib.flask import AuthKit\n"
        "app = Flask('worker_b')\n"
        f"app.config['AUTHKIT_STORAGE_URL'] = {url!r}\n"
        "ext = AuthKit(app)\n"
        "@app.get('/peek')\n"
        "def peek():\n"
        "    session['seen_by'] = 'worker-b'\n"
        "    return dict(session)\n"
        "client = app.test_client()\n"
        f"client.set_cookie('session', {sid!r})\n"
        "print(json.dumps(client.get('/peek').json))\n"
        "ext.close(app)\n"
    )
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60,
                            env=_subprocess_env())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"user_id": "worker-a", "seen_by": "worker-b"}
    assert client.get("/peek").json == {"user_id": "worker-a", "seen_by": "worker-b"}
    assert ext.get_storage(app).get_session(stored_session_id(sid)) is not None
    ext.close(app)


@pytest.mark.parametrize("value", [
    {"n": 1, "s": "x", "f": 1.5, "b": True, "none": None, "list": [1, [2, {"k": "v"}]], "d": {"a": {"b": []}}},
    {"t": (1, (2, 3)), "bytes": b"\x00", "when": datetime(2030, 1, 2, tzinfo=timezone.utc), "u": uuid.UUID(int=3)},
    {" t": [1], "nested": {" di": {"x": 1}}, "lone": {" t": "not a tag"}},  # dicts that look like tags
    {"inf": float("inf"), "nan_in_list": [float("nan")], "big": 10**30},
    {"intkey": {1: "a", 2: "b"}},  # JSON turns the keys into strings
    {"deep": [[[[[[["x"]]]]]]], "empty": {}, "emptylist": []},
])
def test_session_encoding_matches_flasks_tagged_json_round_trip(value: dict[str, Any]) -> None:
    """The fast paths give exactly what TaggedJSONSerializer's text round trip gives."""
    from flask.json.tag import TaggedJSONSerializer

    serializer = TaggedJSONSerializer()
    interface = AuthKitSessionInterface(MemoryStorage())
    session_ = AuthKitSession(value)
    expected_stored = json.loads(serializer.dumps(dict(session_)))
    stored = interface._encode(session_)
    assert json.dumps(stored, sort_keys=True) == json.dumps(expected_stored, sort_keys=True)
    assert repr(interface._decode(stored)) == repr(serializer.loads(json.dumps(stored)))


def test_a_taken_id_is_never_overwritten_a_new_one_is_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    from authkit.errors import StorageError

    storage = MemoryStorage()
    app = make_app(storage)
    draws = iter(["taken-id-0000", "taken-id-0000", "fresh-id-0001"] + ["taken-id-0000"] * 3)
    monkeypatch.setattr("authkit.contrib.flask.secrets.token_urlsafe", lambda n: next(draws))
    assert sid_of(app.test_client().get("/set?owner=first")) == "taken-id-0000"
    # The second browser's first draw is taken: create_session refuses it, the next draw is used.
    assert sid_of(app.test_client().get("/set?owner=second")) == "fresh-id-0001"
    first = storage.get_session(stored_session_id("taken-id-0000"))
    assert first is not None and first.data == {"owner": "first"}  # untouched
    with pytest.raises(StorageError, match="random source"):
        app.test_client().get("/set?owner=third")  # three taken draws in a row: something is broken
