"""The Django session engine, modelled on Django's own ``tests/sessions_tests/tests.py``.

``SessionTestsMixin``'s tests, adapted to pytest functions (same names and
assertions), run against every backend in ``tests/backends.py``; then the
engine through Django's ``SessionMiddleware`` and test ``Client``, the
``clearsessions`` and ``authkit_cleanup`` commands, concurrent ``must_create``
collisions with threads, and a session read by another process.
"""

from __future__ import annotations

import asyncio
import base64
import json
import string
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings

from tests import django_settings

if not settings.configured:
    settings.configure(**{name: getattr(django_settings, name) for name in dir(django_settings) if name.isupper()})
django.setup()

from django.contrib.sessions.backends.base import CreateError, UpdateError  # noqa: E402
from django.core import management  # noqa: E402
from django.core.management.base import CommandError  # noqa: E402
from django.core.signing import TimestampSigner  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402

import authkit.contrib.django as authkit_django  # noqa: E402
from authkit.contrib import ANONYMOUS_USER_ID  # noqa: E402
from authkit.contrib.django.sessions import SessionStore  # noqa: E402
from authkit.contrib.session_ids import stored_session_id  # noqa: E402
from authkit.errors import ConfigurationError  # noqa: E402
from authkit.maintenance import CLEANUP_LOCK  # noqa: E402
from authkit.models import SessionData  # noqa: E402
from authkit.storage import AuthStorage, MemoryStorage  # noqa: E402
from tests.backends import BACKENDS  # noqa: E402
from tests.clock import FakeClock  # noqa: E402
from tests.session_calls import Recording, django_session_turns  # noqa: E402
from tests.store_contents import store_contents  # noqa: E402
from tests.threads import run_threads  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def module_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, module_clock: FakeClock
) -> Iterator[AuthStorage]:
    """One storage per backend for the whole module (schema set-up is the slow part)."""
    with BACKENDS[request.param](tmp_path_factory.mktemp(request.param), module_clock) as storage:
        yield storage


@pytest.fixture
def storage(backend: AuthStorage) -> Iterator[AuthStorage]:
    """The backend installed as the engine's storage through ``AUTHKIT_STORAGE``."""
    with override_settings(AUTHKIT_STORAGE=backend):
        yield backend


@pytest.fixture
def session(storage: AuthStorage) -> Iterator[SessionStore]:
    s = SessionStore()
    yield s
    # NB: like Django's tearDown, delete what the test created.
    s.delete()


backend_class = SessionStore


# -- SessionTestsMixin ------------------------------------------------------


def test_new_session(session: SessionStore) -> None:
    assert session.modified is False
    assert session.accessed is False


def test_get_empty(session: SessionStore) -> None:
    assert session.get("cat") is None


def test_getitem_empty(session: SessionStore) -> None:
    with pytest.raises(KeyError):
        session["cat"]


def test_store(session: SessionStore) -> None:
    session["cat"] = "dog"
    assert session.modified is True
    assert session.pop("cat") == "dog"


def test_pop(session: SessionStore) -> None:
    session["some key"] = "exists"
    # Need to reset these to pretend we haven't accessed it:
    session.accessed = False
    session.modified = False
    assert session.pop("some key") == "exists"
    assert session.accessed is True
    assert session.modified is True
    assert session.get("some key") is None


def test_pop_default(session: SessionStore) -> None:
    assert session.pop("some key", "does not exist") == "does not exist"
    assert session.accessed is True
    assert session.modified is False


def test_pop_default_named_argument(session: SessionStore) -> None:
    assert session.pop("some key", default="does not exist") == "does not exist"
    assert session.accessed is True
    assert session.modified is False


def test_pop_no_default_keyerror_raised(session: SessionStore) -> None:
    with pytest.raises(KeyError):
        session.pop("some key")


def test_setdefault(session: SessionStore) -> None:
    assert session.setdefault("foo", "bar") == "bar"
    assert session.setdefault("foo", "baz") == "bar"
    assert session.accessed is True
    assert session.modified is True


def test_update(session: SessionStore) -> None:
    session.update({"update key": 1})
    assert session.accessed is True
    assert session.modified is True
    assert session.get("update key", None) == 1


def test_has_key(session: SessionStore) -> None:
    session["some key"] = 1
    session.modified = False
    session.accessed = False
    assert "some key" in session
    assert session.accessed is True
    assert session.modified is False


def test_values(session: SessionStore) -> None:
    assert list(session.values()) == []
    assert session.accessed is True
    session["some key"] = 1
    session.modified = False
    session.accessed = False
    assert list(session.values()) == [1]
    assert session.accessed is True
    assert session.modified is False


def test_keys(session: SessionStore) -> None:
    session["x"] = 1
    session.modified = False
    session.accessed = False
    assert list(session.keys()) == ["x"]
    assert session.accessed is True
    assert session.modified is False


def test_items(session: SessionStore) -> None:
    session["x"] = 1
    session.modified = False
    session.accessed = False
    assert list(session.items()) == [("x", 1)]
    assert session.accessed is True
    assert session.modified is False


def test_clear(session: SessionStore) -> None:
    session["x"] = 1
    session.modified = False
    session.accessed = False
    assert list(session.items()) == [("x", 1)]
    session.clear()
    assert list(session.items()) == []
    assert session.accessed is True
    assert session.modified is True


def test_save(session: SessionStore) -> None:
    session.save()
    assert session.exists(session.session_key) is True


def test_delete(session: SessionStore) -> None:
    session.save()
    session.delete(session.session_key)
    assert session.exists(session.session_key) is False


def test_flush(session: SessionStore) -> None:
    session["foo"] = "bar"
    session.save()
    prev_key = session.session_key
    session.flush()
    assert session.exists(prev_key) is False
    assert session.session_key != prev_key
    assert session.session_key is None
    assert session.modified is True
    assert session.accessed is True


def test_cycle(session: SessionStore) -> None:
    session["a"], session["b"] = "c", "d"
    session.save()
    prev_key = session.session_key
    prev_data = list(session.items())
    session.cycle_key()
    assert session.exists(prev_key) is False
    assert session.session_key != prev_key
    assert list(session.items()) == prev_data


def test_cycle_with_no_session_cache(session: SessionStore) -> None:
    session["a"], session["b"] = "c", "d"
    session.save()
    prev_data = list(session.items())
    fresh = SessionStore(session.session_key)
    assert hasattr(fresh, "_session_cache") is False
    fresh.cycle_key()
    assert sorted(fresh.items()) == sorted(prev_data)
    fresh.delete()


def test_cycle_with_no_session_key(session: SessionStore) -> None:
    # A session never saved has no key: cycling creates one and keeps the data.
    session["a"] = "b"
    assert session.session_key is None
    session.cycle_key()
    assert session.session_key is not None
    assert session.exists(session.session_key) is True
    assert session["a"] == "b"


def test_save_doesnt_clear_data(session: SessionStore) -> None:
    session["a"] = "b"
    session.save()
    assert session["a"] == "b"


def test_invalid_key(storage: AuthStorage) -> None:
    # Submitting an invalid session key (either by guessing, or if the db has
    # removed the key) results in a new key being generated.
    session = SessionStore("1")
    try:
        session.save()
        assert session.session_key != "1"
        assert session.get("cat") is None
        session.delete()
    finally:
        session.delete("1")


def test_session_key_empty_string_invalid(session: SessionStore) -> None:
    """Falsey values (such as an empty string) are rejected."""
    session._session_key = ""
    assert session.session_key is None


def test_session_key_too_short_invalid(session: SessionStore) -> None:
    """Strings shorter than 8 characters are rejected."""
    session._session_key = "1234567"
    assert session.session_key is None


def test_session_key_valid_string_saved(session: SessionStore) -> None:
    """Strings of length 8 and up are accepted and stored."""
    session._session_key = "12345678"
    assert session.session_key == "12345678"


def test_session_key_is_read_only(session: SessionStore) -> None:
    with pytest.raises(AttributeError):
        session.session_key = session._get_new_session_key()


def test_load_overlong_key(session: SessionStore) -> None:
    # Longer than any storage accepts as an id: simply an unknown session.
    session._session_key = (string.ascii_letters + string.digits) * 20
    assert session.load() == {}
    assert session.exists((string.ascii_letters + string.digits) * 20) is False


# Custom session expiry


def test_default_expiry(session: SessionStore) -> None:
    # A normal session has a max age equal to settings.
    assert session.get_expiry_age() == settings.SESSION_COOKIE_AGE
    # So does a custom session with an idle expiration time of 0 (but it'll
    # expire at browser close).
    session.set_expiry(0)
    assert session.get_expiry_age() == settings.SESSION_COOKIE_AGE


def test_custom_expiry_seconds(session: SessionStore) -> None:
    modification = timezone.now()
    session.set_expiry(10)
    date = session.get_expiry_date(modification=modification)
    assert date == modification + timedelta(seconds=10)
    age = session.get_expiry_age(modification=modification)
    assert age == 10


def test_custom_expiry_timedelta(session: SessionStore, monkeypatch: pytest.MonkeyPatch) -> None:
    modification = timezone.now()
    # Pin timezone.now, because set_expiry calls it on this code path.
    with monkeypatch.context() as patch:
        patch.setattr(timezone, "now", lambda: modification)
        session.set_expiry(timedelta(seconds=10))
    date = session.get_expiry_date(modification=modification)
    assert date == modification + timedelta(seconds=10)
    age = session.get_expiry_age(modification=modification)
    assert age == 10


def test_custom_expiry_datetime(session: SessionStore) -> None:
    modification = timezone.now()
    session.set_expiry(modification + timedelta(seconds=10))
    date = session.get_expiry_date(modification=modification)
    assert date == modification + timedelta(seconds=10)
    age = session.get_expiry_age(modification=modification)
    assert age == 10


def test_custom_expiry_reset(session: SessionStore) -> None:
    session.set_expiry(None)
    session.set_expiry(10)
    session.set_expiry(None)
    assert session.get_expiry_age() == settings.SESSION_COOKIE_AGE


def test_get_expire_at_browser_close(session: SessionStore) -> None:
    # Tests get_expire_at_browser_close with different settings and different
    # set_expiry calls.
    with override_settings(SESSION_EXPIRE_AT_BROWSER_CLOSE=False):
        session.set_expiry(10)
        assert session.get_expire_at_browser_close() is False
        session.set_expiry(0)
        assert session.get_expire_at_browser_close() is True
        session.set_expiry(None)
        assert session.get_expire_at_browser_close() is False
    with override_settings(SESSION_EXPIRE_AT_BROWSER_CLOSE=True):
        session.set_expiry(10)
        assert session.get_expire_at_browser_close() is False
        session.set_expiry(0)
        assert session.get_expire_at_browser_close() is True
        session.set_expiry(None)
        assert session.get_expire_at_browser_close() is True


def test_decode(session: SessionStore) -> None:
    # Ensure we can decode what we encode.
    data = {"a test key": "a test value"}
    encoded = session.encode(data)
    assert session.decode(encoded) == data


def test_decode_failure_logged_to_security(session: SessionStore, caplog: pytest.LogCaptureFixture) -> None:
    for encoded in (base64.b64encode(b"flaskdj:alkdjf").decode("ascii"), "bad:encoded:value"):
        caplog.clear()
        with caplog.at_level("WARNING", logger="django.security.SuspiciousSession"):
            assert session.decode(encoded) == {}
        # The failed decode is logged.
        assert "Session data corrupted" in caplog.text


def test_decode_serializer_exception(session: SessionStore) -> None:
    signer = TimestampSigner(salt=session.key_salt)
    encoded = signer.sign(b"invalid data")
    assert session.decode(encoded) == {}


def test_actual_expiry(session: SessionStore) -> None:
    old_session_key = None
    new_session_key = None
    try:
        session["foo"] = "bar"
        session.set_expiry(-timedelta(seconds=10))
        session.save()
        old_session_key = session.session_key
        # With an expiry date in the past, the session expires instantly.
        new_session = SessionStore(session.session_key)
        new_session_key = new_session.session_key
        assert "foo" not in new_session
    finally:
        session.delete(old_session_key)
        session.delete(new_session_key)


def test_session_load_does_not_create_record(storage: AuthStorage) -> None:
    """Loading an unknown session key does not create a session record.

    Creating session records on load is a DOS vulnerability.
    """
    session = SessionStore("someunknownkey")
    session.load()
    assert session.session_key is None
    assert session.exists(session.session_key) is False
    # The provided unknown key was cycled, not reused.
    assert session.session_key != "someunknownkey"
    assert storage.get_session(stored_session_id("someunknownkey")) is None


def test_session_save_does_not_resurrect_session_logged_out_in_other_context(storage: AuthStorage) -> None:
    """Sessions shouldn't be resurrected by a concurrent request."""
    # Create new session.
    s1 = SessionStore()
    s1["test_data"] = "value1"
    s1.save(must_create=True)
    # Logout in another context.
    s2 = SessionStore(s1.session_key)
    s2.delete()
    # Modify session in first context.
    s1["test_data"] = "value2"
    with pytest.raises(UpdateError):
        # This should throw an exception as the session is deleted, not
        # resurrect the session.
        s1.save()
    assert s1.load() == {}
    assert storage.get_session(stored_session_id(s2.session_key or "missing-key")) is None


def test_save_must_create_on_existing_key_is_create_error(session: SessionStore) -> None:
    session["a"] = 1
    session.save()
    other = SessionStore(session.session_key)
    other["b"] = 2
    with pytest.raises(CreateError):
        other.save(must_create=True)
    # The existing record is untouched.
    assert SessionStore(session.session_key)["a"] == 1
    assert "b" not in SessionStore(session.session_key)


def test_clearsessions_command(storage: AuthStorage, module_clock: FakeClock) -> None:
    """clearsessions deletes expired sessions (through SessionStore.clear_expired)."""
    future = SessionStore()
    future["foo"] = "bar"
    future.set_expiry(3600)
    future.save()
    past = SessionStore()
    past["foo"] = "bar"
    past.set_expiry(-3600)
    past.save()
    before = storage.stats()["sessions_expired"]
    assert before >= 1
    assert stored_session_id(past.session_key) in set(storage.iter_session_ids())
    management.call_command("clearsessions")
    assert storage.stats()["sessions_expired"] == 0
    ids = set(storage.iter_session_ids())
    assert stored_session_id(past.session_key) not in ids
    assert stored_session_id(future.session_key) in ids
    future.delete()


# -- async (Django 5's a* methods) ------------------------------------------


def test_async_round_trip(storage: AuthStorage) -> None:
    async def scenario() -> None:
        s = SessionStore()
        await s.aset("cat", "dog")
        await s.asave()
        key = s.session_key
        assert key is not None and await s.aexists(key)
        loaded = SessionStore(key)
        assert await loaded.aget("cat") == "dog"
        await loaded.acycle_key()
        assert loaded.session_key != key
        assert not await loaded.aexists(key)
        await loaded.aflush()
        assert loaded.session_key is None

    asyncio.run(scenario())


# -- what authkit adds --------------------------------------------------------


def test_record_is_json_with_user_id_and_expiry(storage: AuthStorage) -> None:
    s = SessionStore()
    s["cart"] = (1, 2)  # Django's JSON serializer stores tuples as lists, as its db backend does
    s["nested"] = {"k": [True, None, 1.5]}
    s.save()
    record = storage.get_session(stored_session_id(s.session_key))
    assert isinstance(record, SessionData)
    assert record.data == {"cart": [1, 2], "nested": {"k": [True, None, 1.5]}}
    assert record.user_id == ANONYMOUS_USER_ID
    assert record.expires_at is not None
    age = (record.expires_at - storage.now()).total_seconds()
    assert settings.SESSION_COOKIE_AGE - 60 < age <= settings.SESSION_COOKIE_AGE
    s["_auth_user_id"] = "42"
    s.save()
    record2 = storage.get_session(stored_session_id(s.session_key))
    assert record2 is not None and record2.user_id == "42"
    assert record2.created_at == record.created_at
    assert [r.session_id for r in storage.list_user_sessions("42")] == [stored_session_id(s.session_key)]
    s.delete()


def test_non_json_value_is_type_error(session: SessionStore) -> None:
    session["when"] = object()
    with pytest.raises(TypeError):
        session.save()


def test_non_json_serializer_is_refused(storage: AuthStorage) -> None:
    class NotJson:
        def dumps(self, obj: object) -> bytes:
            return b"\x80\x04not json"

        def loads(self, data: bytes) -> object:
            raise ValueError("no")

    s = SessionStore()
    s.serializer = NotJson
    s["a"] = 1
    with pytest.raises(django.core.exceptions.ImproperlyConfigured):
        s.save()


def test_expiry_follows_the_storage_clock(storage: AuthStorage, module_clock: FakeClock) -> None:
    s = SessionStore()
    s["a"] = 1
    s.set_expiry(60)
    s.save()
    key = s.session_key
    module_clock.advance(59)
    assert SessionStore(key)["a"] == 1
    module_clock.advance(2)
    late = SessionStore(key)
    assert late.get("a") is None
    assert late.session_key is None
    assert late.exists(key) is False


def _race_to_create(key: str, writers: int) -> list[str]:
    """``writers`` threads ``save(must_create=True)`` the same key at once; their outcomes."""
    barrier = threading.Barrier(writers)
    outcomes: list[str] = []
    mutex = threading.Lock()

    def create(n: int) -> None:
        s = SessionStore(key)
        s._session_cache = {"writer": n}
        barrier.wait()
        try:
            s.save(must_create=True)
            result = f"won:{n}"
        except CreateError:
            result = "lost"
        with mutex:
            outcomes.append(result)

    run_threads(create, writers)  # an unexpected exception in a thread fails the test
    return outcomes


def test_concurrent_must_create_collisions_one_winner(storage: AuthStorage) -> None:
    """Threads creating the same key at once: exactly one wins, the others get CreateError."""
    for round_ in range(10):
        key = f"collide{round_:02d}" + "x" * 24
        outcomes = _race_to_create(key, 4)
        winners = [o for o in outcomes if o.startswith("won")]
        assert len(winners) == 1, outcomes
        assert SessionStore(key)["writer"] == int(winners[0].split(":")[1])
        SessionStore(key).delete()


def test_concurrent_creates_get_distinct_keys(storage: AuthStorage) -> None:
    keys: list[str] = []
    mutex = threading.Lock()

    def worker(_n: int) -> None:
        for _ in range(10):
            s = SessionStore()
            s["x"] = 1
            s.save()
            with mutex:
                keys.append(s.session_key)

    run_threads(worker, 4)
    assert len(set(keys)) == 40
    storage.delete_sessions_bulk(keys)


# -- through the middleware -----------------------------------------------------


def test_middleware_round_trip_login_logout(storage: AuthStorage) -> None:
    client = Client()
    response = client.get("/touch")
    assert "sessionid" not in response.cookies  # an unused session writes nothing
    response = client.get("/set", {"color": "blue"})
    first = response.cookies["sessionid"].value
    assert storage.get_session(stored_session_id(first)) is not None
    assert client.get("/get").json() == {"color": "blue"}

    response = client.get("/login", {"user": "7"})
    second = response.cookies["sessionid"].value
    assert second == response.json()["key"]
    assert second != first  # cycle_key on login: no session fixation
    assert storage.get_session(stored_session_id(first)) is None
    record = storage.get_session(stored_session_id(second))
    assert record is not None and record.user_id == "7"
    assert client.get("/get").json() == {"color": "blue", "_auth_user_id": "7"}

    response = client.get("/logout")
    assert response.cookies["sessionid"].value == ""  # deleted
    assert storage.get_session(stored_session_id(second)) is None
    assert client.get("/get").json() == {}


def test_middleware_logout_elsewhere_interrupts_instead_of_resurrecting(storage: AuthStorage) -> None:
    from django.contrib.sessions.exceptions import SessionInterrupted
    from django.contrib.sessions.middleware import SessionMiddleware
    from django.http import HttpResponse
    from django.test import RequestFactory

    client = Client()
    key = client.get("/set", {"a": "1"}).cookies["sessionid"].value

    def view(request: object) -> HttpResponse:
        request.session["a"] = "2"  # type: ignore[attr-defined]
        SessionStore(key).delete()  # a concurrent logout
        return HttpResponse("ok")

    request = RequestFactory().get("/")
    request.COOKIES[settings.SESSION_COOKIE_NAME] = key
    with pytest.raises(SessionInterrupted):
        SessionMiddleware(view)(request)
    assert storage.get_session(stored_session_id(key)) is None


def test_middleware_session_delete_on_end(storage: AuthStorage) -> None:
    from django.contrib.sessions.middleware import SessionMiddleware
    from django.http import HttpResponse
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    response = HttpResponse("Session test")
    middleware = SessionMiddleware(lambda req: response)
    # Before deleting, there has to be an existing cookie.
    request.COOKIES[settings.SESSION_COOKIE_NAME] = "abcdefghijk"
    # Simulate a request that ends the session.
    middleware.process_request(request)
    request.session.flush()
    response = middleware.process_response(request, response)
    # The cookie was deleted, not recreated.
    morsel = response.cookies[settings.SESSION_COOKIE_NAME]
    assert morsel.value == "" and morsel["max-age"] == 0
    assert response.headers["Vary"] == "Cookie"


def test_middleware_flush_empty_without_session_cookie_doesnt_set_cookie(storage: AuthStorage) -> None:
    from django.contrib.sessions.middleware import SessionMiddleware
    from django.http import HttpResponse
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    response = HttpResponse("Session test")
    middleware = SessionMiddleware(lambda req: response)
    middleware.process_request(request)
    request.session.flush()
    response = middleware.process_response(request, response)
    # A cookie should not be set.
    assert str(response.cookies) == ""
    # The session is accessed so "Vary: Cookie" should be set.
    assert response.headers["Vary"] == "Cookie"


# -- commands ---------------------------------------------------------------------


def test_authkit_cleanup_command(storage: AuthStorage, capsys: pytest.CaptureFixture[str]) -> None:
    s = SessionStore()
    s["a"] = 1
    s.set_expiry(-10)
    s.save()
    management.call_command("authkit_cleanup", "--batch-size", "1")
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("cleanup: deleted ")
    assert storage.get_session(stored_session_id(s.session_key)) is None
    assert stored_session_id(s.session_key) not in set(storage.iter_session_ids())
    management.call_command("authkit_cleanup", "--json", "--batch-size", "2")
    summary = json.loads(capsys.readouterr().out)
    assert summary.pop("seconds") >= 0
    assert summary == {"status": "ok", "tokens": 0, "sessions": 0, "kv": 0, "total": 0}


def test_authkit_cleanup_skips_while_another_cleanup_runs(
    storage: AuthStorage, capsys: pytest.CaptureFixture[str]
) -> None:
    import authkit.cli

    assert CLEANUP_LOCK == authkit.cli.CLEANUP_LOCK  # the authkit command and Django exclude each other
    with storage.lock(CLEANUP_LOCK, timeout=5):
        management.call_command("authkit_cleanup", "--json")
        assert json.loads(capsys.readouterr().out)["status"] == "skipped"
        SessionStore.clear_expired()  # clearsessions: skips quietly, no error


def test_authkit_cleanup_failure_is_one_line_command_error() -> None:
    with override_settings(AUTHKIT_STORAGE=None, AUTHKIT_STORAGE_URL=""):
        with pytest.raises(CommandError, match="AUTHKIT_STORAGE_URL") as info:
            management.call_command("authkit_cleanup")
        assert "\n" not in str(info.value)


def test_bad_arguments_rejected(storage: AuthStorage) -> None:
    with pytest.raises(CommandError):
        management.call_command("authkit_cleanup", "--batch-size", "0")


# -- settings -----------------------------------------------------------------------


def test_storage_from_url_setting_and_reset_on_change(tmp_path: Path) -> None:
    with override_settings(AUTHKIT_STORAGE=None, AUTHKIT_STORAGE_URL="memory://", AUTHKIT_STORAGE_OPTIONS={}):
        first = authkit_django.get_storage()
        assert isinstance(first, MemoryStorage)
        assert authkit_django.get_storage() is first  # one per process, shared by threads
        seen: list[AuthStorage] = []
        run_threads(lambda _: seen.append(authkit_django.get_storage()), 8)
        assert all(s is first for s in seen)
    with override_settings(AUTHKIT_STORAGE=None, AUTHKIT_STORAGE_URL="memory://"):
        assert authkit_django.get_storage() is not first


def test_missing_storage_setting_is_configuration_error() -> None:
    with override_settings(AUTHKIT_STORAGE=None, AUTHKIT_STORAGE_URL=None):
        with pytest.raises(ConfigurationError, match="AUTHKIT_STORAGE_URL"):
            authkit_django.get_storage()


def test_reset_does_not_close_a_given_storage(storage: AuthStorage) -> None:
    authkit_django.reset()
    assert authkit_django.get_storage() is storage
    storage.store_kv("still-open", b"1", ttl=5)
    assert storage.get_kv("still-open") == b"1"


def test_another_process_reads_the_session(tmp_path: Path) -> None:
    """Sessions are shared across processes through a file storage."""
    pytest.importorskip("authkit.storage.sql")
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with override_settings(AUTHKIT_STORAGE=None, AUTHKIT_STORAGE_URL=url, AUTHKIT_STORAGE_OPTIONS={}):
        s = SessionStore()
        s["who"] = "parent"
        s.save()
        key = s.session_key
        code = (
            "import django, json, sys\n"
            "from django.conf import settings\n"
            "from tests import django_settings as d\n"
            "options = {n: getattr(d, n) for n in dir(d) if n.isupper()}\n"
            f"options['AUTHKIT_STORAGE_URL'] = {url!r}\n"
            "settings.configure(**options)\n"
            "django.setup()\n"
            "from authkit.contrib.django.sessions import SessionStore\n"
            f"s = SessionStore({key!r}); print(json.dumps(dict(s.items()))); s['who'] = 'child'; s.save()\n"
        )
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"who": "parent"}
        assert SessionStore(key)["who"] == "child"
        SessionStore(key).delete()


def test_user_key_setting(storage: AuthStorage) -> None:
    with override_settings(AUTHKIT_SESSION_USER_KEY="user"):
        s = SessionStore()
        s["user"] = "carol"
        s.save()
    record = storage.get_session(stored_session_id(s.session_key))
    assert record is not None and record.user_id == "carol"
    s.delete()


# -- lock-free saves on the atomic primitives, digests, round trips ----------------------


def test_every_save_is_one_primitive_call_and_takes_no_lock() -> None:
    storage = Recording()
    with override_settings(AUTHKIT_STORAGE=storage):
        s = SessionStore()
        s["a"] = 1
        s.save()
        assert storage.take() == ["create"]  # no exists() probe for the new key
        key = s.session_key
        loaded = SessionStore(key)
        assert loaded["a"] == 1
        loaded.save()  # SESSION_SAVE_EVERY_REQUEST-style save of unchanged data
        assert storage.take() == ["get", "touch"]
        loaded["b"] = 2
        loaded.save()
        assert storage.take() == ["replace"]
        loaded.save()
        assert storage.take() == ["touch"]
        loaded["nested"] = [1]
        loaded.save()
        storage.take()
        loaded["nested"].append(2)  # not flagged as modified, but different from what is stored
        loaded.save()
        assert storage.take() == ["replace"]
        assert SessionStore(key)["nested"] == [1, 2]
        storage.take()
        loaded.cycle_key()
        assert storage.take() == ["create", "delete"]
        assert loaded.exists(loaded.session_key)
        assert storage.take() == ["get"]
        loaded.delete()
        assert storage.take() == ["delete"]
        s.create()
        assert storage.take() == ["create"]
        s.delete()


def test_saving_unchanged_data_of_a_deleted_session_is_update_error(storage: AuthStorage) -> None:
    s = SessionStore()
    s["a"] = 1
    s.save()
    loaded = SessionStore(s.session_key)
    assert loaded["a"] == 1
    SessionStore(s.session_key).delete()  # logout elsewhere
    with pytest.raises(UpdateError):
        loaded.save()  # touch_session finds nothing live
    assert storage.get_session(stored_session_id(s.session_key or "missing-key")) is None


def test_save_keeps_created_at_and_slides_the_expiry(storage: AuthStorage, module_clock: FakeClock) -> None:
    s = SessionStore()
    s["a"] = 1
    s.save()
    first = storage.get_session(stored_session_id(s.session_key))
    assert first is not None and first.expires_at is not None
    module_clock.advance(120)
    loaded = SessionStore(s.session_key)
    assert loaded["a"] == 1
    loaded.save()  # unchanged: touch_session
    second = storage.get_session(stored_session_id(s.session_key))
    assert second is not None and second.expires_at is not None
    assert second.created_at == first.created_at and second.data == first.data
    # The fake clock moved 120 s (and real time a little): the expiry slid with it.
    assert timedelta(seconds=120) <= second.expires_at - first.expires_at < timedelta(seconds=180)
    assert timedelta(seconds=120) <= second.last_activity - first.last_activity < timedelta(seconds=180)
    loaded.delete()


def test_the_store_holds_a_digest_of_the_session_key_never_the_key(storage: AuthStorage) -> None:
    client = Client()
    client.get("/set", {"a": "1"})
    anonymous = client.cookies[settings.SESSION_COOKIE_NAME].value
    client.get("/login", {"user": "digest-user"})
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    client.get("/set", {"b": "2"})
    contents = store_contents(storage)
    assert anonymous not in contents and key not in contents
    assert stored_session_id(key) in contents  # the scan does see the session
    assert SessionStore(key).stored_session_id == stored_session_id(key)
    assert SessionStore().stored_session_id is None
    # A copy of the database opens nothing: the stored id, sent as a key, is no session.
    assert SessionStore(stored_session_id(key)).load() == {}
    assert storage.delete_user_sessions("digest-user", keep=stored_session_id(key)) == 0
    assert storage.delete_user_sessions("digest-user") == 1
    assert Client(cookies={settings.SESSION_COOKIE_NAME: key}).get("/get").json() == {}  # type: ignore[arg-type]


def test_async_variants_use_the_same_primitives() -> None:
    storage = Recording()

    async def scenario() -> None:
        s = SessionStore()
        await s.aset("a", 1)
        await s.asave()
        assert storage.take() == ["create"]
        key = s.session_key
        assert key is not None
        loaded = SessionStore(key)
        assert await loaded.aget("a") == 1
        await loaded.asave()
        assert storage.take() == ["get", "touch"]
        await loaded.aset("a", 2)
        await loaded.asave()
        assert storage.take() == ["replace"]
        other = SessionStore(key)
        await other.adelete()
        with pytest.raises(UpdateError):
            await loaded.asave()
        storage.take()
        fresh = SessionStore()
        await fresh.acreate()
        assert storage.take() == ["create"]
        assert await fresh.aexists(fresh.session_key)
        clash = SessionStore(fresh.session_key)
        clash._session_cache = {}
        with pytest.raises(CreateError):
            await clash.asave(must_create=True)
        await fresh.adelete()
        assert storage.take() == ["get", "create", "delete"]
        await SessionStore.aclear_expired()
        assert storage.take() == ["lock authkit-cleanup"]  # clearsessions' cleanup, not a session save

    with override_settings(AUTHKIT_STORAGE=storage):
        asyncio.run(scenario())


def test_round_trips_on_redis() -> None:
    """At most 2 round trips per session write: 1 to create, 1 to save, 1 more to load first."""
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
            with override_settings(AUTHKIT_STORAGE=storage):
                counts = django_session_turns(proxy, SessionStore)
        finally:
            drop_redis_keys(storage._client, prefix)
            storage.close()
    assert counts == {"create": 1, "save": 1, "load_save": 2, "delete": 1}, counts


_DJANGO_DB_TURNS = """
import json, sys
from urllib.parse import urlsplit
import django, psycopg
from psycopg import sql
from django.conf import settings
from tests.tcp_proxy import TcpProxy
from tests.session_calls import django_session_turns

url, schema = sys.argv[1], sys.argv[2]
parts = urlsplit(url)
with psycopg.connect(url, autocommit=True) as admin:
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
try:
    with TcpProxy(parts.hostname, parts.port or 5432) as proxy:
        settings.configure(
            SECRET_KEY="authkit-tests-only", USE_TZ=True, INSTALLED_APPS=["django.contrib.sessions"],
            DATABASES={"default": {
                "ENGINE": "django.db.backends.postgresql", "NAME": parts.path.lstrip("/"),
                "USER": parts.username or "", "PASSWORD": parts.password or "",
                "HOST": "127.0.0.1", "PORT": proxy.port, "OPTIONS": {"options": f"-c search_path={schema}"}}},
        )
        django.setup()
        from django.core.management import call_command
        from django.db import connections
        from django.contrib.sessions.backends.db import SessionStore
        call_command("migrate", "sessions", verbosity=0)
        counts = django_session_turns(proxy, SessionStore)
        connections.close_all()
    print(json.dumps(counts))
finally:
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
"""


def test_fewer_round_trips_than_djangos_db_backend_on_postgresql() -> None:
    """Through the same proxy: a create and a save cost fewer round trips than Django's db backend."""
    from urllib.parse import urlsplit

    from authkit.storage.sql import SqlStorage
    from tests.services import POSTGRES_URL, require, unique_prefix
    from tests.tcp_proxy import TcpProxy

    url = require(POSTGRES_URL, "PostgreSQL")
    result = subprocess.run([sys.executable, "-c", _DJANGO_DB_TURNS, url, unique_prefix("dj").rstrip("_")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    django_db = json.loads(result.stdout)
    parts = urlsplit(url)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        storage = SqlStorage(proxy.url(url), prefix=unique_prefix("s"))
        try:
            with override_settings(AUTHKIT_STORAGE=storage):
                ours = django_session_turns(proxy, SessionStore)
        finally:
            storage.drop_schema()
            storage.close()
    print("round trips, authkit:", ours, "Django db backend:", django_db)
    assert django_db["create"] >= 4, django_db  # SELECT (exists), BEGIN, INSERT, COMMIT
    for operation in ("create", "save"):
        assert ours[operation] < django_db[operation], (operation, ours, django_db)
    # Loading first adds one read on both sides (and, while the pool pings before each
    # statement, a ping on ours: at worst level).
    assert ours["load_save"] <= django_db["load_save"], (ours, django_db)
    assert ours["delete"] <= django_db["delete"], (ours, django_db)


# -- the shared Salesforce client ----------------------------------------------------


# The token store itself is tested on every backend by the Salesforce tests; here, one
# in-process and one file store show the wiring.
@pytest.mark.parametrize("backend_name", [name for name in ("memory", "sqlite-file") if name in BACKENDS])
def test_salesforce_client_shared_by_threads_and_views(backend_name: str, tmp_path: Path) -> None:
    from authkit.salesforce import SalesforceClient
    from authkit.testing import FakeSalesforce

    with BACKENDS[backend_name](tmp_path, FakeClock()) as storage, FakeSalesforce() as org, \
            override_settings(AUTHKIT_STORAGE=storage):
        assert org.rest is not None
        org.rest.insert("Account", {"Name": "Initech"})
        jwt_app = org.register_jwt_app(run_as=org.default_user.username)
        key_file = tmp_path / "sf.key"
        key_file.write_text(jwt_app.private_key_pem or "")
        config = {
            "flow": "jwt",
            "client_id": jwt_app.client_id,
            "username": org.default_user.username,
            "private_key_file": str(key_file),
            "login_url": org.login_url,
        }
        with override_settings(AUTHKIT_SALESFORCE=config):
            clients: list[SalesforceClient] = []
            names: list[list[str]] = []
            mutex = threading.Lock()

            def view_like(_: int) -> None:
                client = authkit_django.salesforce_client()
                records = [r["Name"] for r in client.query("SELECT Id, Name FROM Account")]
                with mutex:
                    clients.append(client)
                    names.append(records)

            run_threads(view_like, 8)
            assert len(clients) == 8 and all(c is clients[0] for c in clients)
            assert names == [["Initech"]] * 8
            assert org.token_requests == 1
            # Another process's client (simulated by a reset) finds the token in the storage.
            authkit_django.reset()
            assert authkit_django.salesforce_client() is not clients[0]
            list(authkit_django.salesforce_client().query("SELECT Id FROM Account"))
            assert org.token_requests == 1


def test_salesforce_client_settings_errors() -> None:
    with override_settings(AUTHKIT_SALESFORCE=None):
        with pytest.raises(ConfigurationError, match="AUTHKIT_SALESFORCE"):
            authkit_django.salesforce_client()
    secret = "s3cr3t-value-never-shown"
    with override_settings(AUTHKIT_SALESFORCE={"flow": "password", "client_id": "c", "client_secret": secret,
                                               "usernme": "typo"}):
        with pytest.raises(ConfigurationError, match=r"password flow.*usernme") as info:
            authkit_django.salesforce_client()
        assert secret not in str(info.value)


def test_manage_py_authkit_cleanup_exit_codes(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHKIT_", "SF_", "DJANGO_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    manage = [sys.executable, str(ROOT / "examples" / "django_project" / "manage.py"), "authkit_cleanup", "--json"]
    ok = subprocess.run(manage, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                        env={**env, "AUTHKIT_STORAGE_URL": f"sqlite:///{tmp_path / 'a.db'}"})
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["status"] == "ok"
    bad = subprocess.run(manage, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={**env, "AUTHKIT_STORAGE_URL": "nosuch://x"})
    assert bad.returncode == 2  # configuration: as `authkit cleanup` exits
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("authkit: error: bad storage configuration: unknown storage scheme")
    assert json.loads(bad.stdout)["status"] == "error"


def test_example_project_tests_pass_under_djangos_test_runner(tmp_path: Path) -> None:
    """``manage.py test``: the engine under Django's own test runner, as a project uses it."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHKIT_", "SF_", "DJANGO_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["AUTHKIT_STORAGE_URL"] = f"sqlite:///{tmp_path / 'runner.db'}"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "django_project" / "manage.py"), "test", "demo", "-v", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Ran 5 tests" in result.stderr and "OK" in result.stderr


@pytest.mark.parametrize("value", [
    {"n": 1, "s": "x", "f": 1.5, "b": True, "none": None, "list": [1, [2, {"k": "v"}]], "d": {"a": {"b": []}}},
    {"t": (1, (2, 3)), "intkey": {1: "a"}, "inf": float("inf"), "big": 10**30},
    {"deep": [[[[[[["x"]]]]]]], "empty": {}, "emptylist": []},
])
def test_session_encoding_matches_djangos_json_serializer(value: dict[str, Any]) -> None:
    """The fast paths give exactly what Django's JSON serializer's round trip gives."""
    from django.core.signing import JSONSerializer

    store = SessionStore()
    stored = store._to_json(value)
    expected = json.loads(JSONSerializer().dumps(value))
    assert json.dumps(stored, sort_keys=True) == json.dumps(expected, sort_keys=True)
    loaded = store._from_json(stored)
    assert repr(loaded) == repr(JSONSerializer().loads(json.dumps(stored).encode("latin-1")))
    assert loaded is not stored
