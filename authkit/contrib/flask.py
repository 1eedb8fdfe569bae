"""Flask integration: server-side sessions on any :class:`~authkit.storage.AuthStorage`,
one shared :class:`~authkit.salesforce.SalesforceClient`, and ``flask authkit ...`` maintenance commands.

Usage::

    from flask import Flask, session
    from authkit.contrib.flask import AuthKit, regenerate_session

    app = Flask(__name__)
    app.config["AUTHKIT_STORAGE_URL"] = "sqlite:///authkit.db"
    app.config["AUTHKIT_SALESFORCE_FLOW"] = "jwt"              # optional: the shared client
    app.config["AUTHKIT_SALESFORCE_CLIENT_ID"] = "3MVG9..."
    app.config["AUTHKIT_SALESFORCE_USERNAME"] = "api@acme.com"
    app.config["AUTHKIT_SALESFORCE_PRIVATE_KEY_FILE"] = "/etc/acme/sf.key"
    authkit = AuthKit(app)

    @app.post("/login")
    def login():
        ...                                   # check the password
        regenerate_session()                  # new session id: no session fixation
        session["user_id"] = user.id
        return "ok"

    @app.get("/accounts")
    def accounts():
        return authkit.salesforce.query_all("SELECT Id, Name FROM Account")

The browser holds only a random session id (``secrets.token_urlsafe(32)``);
the data lives in the storage as a :class:`~authkit.models.SessionData` whose
``data`` is JSON, under a digest of that id
(:func:`~authkit.contrib.session_ids.stored_session_id`), so the storage
never holds a cookie value.  A request costs one storage read if it sends a
cookie and one write if it changes or refreshes its session, with no lock:
the writes are the storage's atomic session primitives.  Values are encoded with Flask's own tagged JSON, so
anything Flask's cookie session accepts works (JSON values, tuples, bytes,
datetimes, UUIDs, ``Markup``); nothing is pickled.
"""

from __future__ import annotations

import json
import secrets
import threading
import weakref
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import click
from flask import Flask, Request, Response, current_app, request
from flask import session as _current_session
from flask.cli import with_appcontext
from flask.json.tag import TaggedJSONSerializer
from flask.sessions import SecureCookieSession, SessionInterface, SessionMixin

from authkit._cli_maintenance import _run_framework
from authkit.contrib import ANONYMOUS_USER_ID, build_salesforce_client
from authkit.contrib._json import plain_json_copy
from authkit.contrib.session_ids import known_stored_id, stored_session_id
from authkit.errors import ConfigurationError, StorageError
from authkit.maintenance import _CleanupEveryN
from authkit.models import SessionData
from authkit.storage._codec import check_id
from authkit.storage.base import AuthStorage
from authkit.storage.url import open_storage

if TYPE_CHECKING:
    from authkit.salesforce.client import SalesforceClient

__all__ = [
    "AuthKit",
    "AuthKitSession",
    "AuthKitSessionInterface",
    "regenerate_session",
    "cli",
    "DEFAULT_NON_PERMANENT_LIFETIME",
]

DEFAULT_NON_PERMANENT_LIFETIME = timedelta(hours=24)
"""How long the server keeps a non-permanent session after its last request.

The browser drops such a cookie when it closes, but the server never learns
when that happens, so the record needs an idle timeout of its own."""

_EXTENSION_KEY = "authkit"
# Fresh ids drawn before a create gives up; more than one is never needed in practice.
_CREATE_ATTEMPTS = 3
_DEFAULT_STORAGE_URL = "sqlite:///authkit.db"


def _lifetime(value: object, name: str) -> timedelta:
    if isinstance(value, timedelta):
        lifetime = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        lifetime = timedelta(seconds=value)
    else:
        raise TypeError(f"{name} must be a timedelta or a number of seconds, not {type(value).__name__}")
    if lifetime <= timedelta(0):
        raise ValueError(f"{name} must be positive")
    return lifetime


class AuthKitSession(SecureCookieSession):
    """The ``flask.session`` object: a dict that tracks changes, plus :meth:`regenerate`.

    ``sid`` is the session id the browser holds, ``None`` until the session is
    first saved; the storage keeps the session under :attr:`stored_id`, its
    digest.  ``new`` is ``True`` when no stored session matched the request.
    """

    def __init__(
        self,
        initial: Mapping[str, Any] | None = None,
        *,
        sid: str | None = None,
        record: SessionData | None = None,
    ) -> None:
        super().__init__(initial)
        self.sid = sid
        self.new = record is None
        self.record = record
        self.stale_sids: list[str] = []

    @property
    def stored_id(self) -> str | None:
        """The id the storage keeps this session under (a digest of :attr:`sid`), or ``None``.

        >>> storage.delete_user_sessions(session["user_id"], keep=session.stored_id)  # log out elsewhere
        """
        return None if self.sid is None else stored_session_id(self.sid)

    def regenerate(self) -> None:
        """Move the session to a new id when the response is saved, deleting the old record.

        Call it when the user logs in (or their privileges change), so an id
        an attacker planted or saw before login is worthless after it.
        """
        if self.sid is not None:
            self.stale_sids.append(self.sid)
        self.sid = None
        self.record = None
        self.modified = True


def regenerate_session() -> None:
    """:meth:`AuthKitSession.regenerate` on the current request's session."""
    current = _current_session
    if not isinstance(current, AuthKitSession):
        raise RuntimeError("regenerate_session() needs the authkit session interface (AuthKit(app))")
    current.regenerate()


class AuthKitSessionInterface(SessionInterface):
    """A Flask ``SessionInterface`` that keeps sessions in an :class:`AuthStorage`.

    >>> app.session_interface = AuthKitSessionInterface(open_storage("redis://localhost/0"))

    Cookie flags come from Flask's config (``SESSION_COOKIE_NAME``, ``_DOMAIN``,
    ``_PATH``, ``_SECURE``, ``_HTTPONLY``, ``_SAMESITE``, ``_PARTITIONED``).
    A permanent session lives ``PERMANENT_SESSION_LIFETIME`` after its last
    request; a non-permanent one ``non_permanent_lifetime`` on the server (its
    cookie ends with the browser).  With ``SESSION_REFRESH_EACH_REQUEST`` (the
    default) every request that uses a session slides its expiry (with
    ``touch_session`` when the data is unchanged: nothing else is rewritten);
    without it, only a changed session is written.  An untouched empty session
    writes nothing: no record, no cookie.  A session emptied with
    ``session.clear()`` is deleted, and so is its cookie.  A save never
    brings back a session that a concurrent request deleted (a logout) or
    that expired meanwhile: the response deletes the cookie instead.

    ``user_id_key`` names the session key whose value becomes the record's
    ``user_id`` (so ``storage.list_user_sessions(user_id)`` finds a user's
    sessions, e.g. to log them out everywhere); sessions without it get
    ``"anonymous"``.
    """

    session_class = AuthKitSession
    pickle_based = False

    def __init__(
        self,
        storage: AuthStorage | Callable[[], AuthStorage],
        *,
        non_permanent_lifetime: timedelta | float = DEFAULT_NON_PERMANENT_LIFETIME,
        user_id_key: str = "user_id",
    ) -> None:
        if not isinstance(storage, AuthStorage) and not callable(storage):
            raise TypeError(f"storage must be an AuthStorage or a callable returning one, not {type(storage).__name__}")
        if not isinstance(user_id_key, str) or not user_id_key:
            raise TypeError("user_id_key must be a non-empty str")
        self._storage = storage
        # Decided once: AuthStorage is an ABC, and isinstance() against one costs on every request.
        self._given = storage if isinstance(storage, AuthStorage) else None
        self.non_permanent_lifetime = _lifetime(non_permanent_lifetime, "non_permanent_lifetime")
        self.user_id_key = user_id_key
        self._serializer = TaggedJSONSerializer()

    def __repr__(self) -> str:
        return f"AuthKitSessionInterface({self._storage!r})"

    @property
    def storage(self) -> AuthStorage:
        """The storage; a callable given instead is called each time (it caches, e.g. AuthKit's)."""
        if self._given is not None:
            return self._given
        return cast(Callable[[], AuthStorage], self._storage)()

    # -- encoding ---------------------------------------------------------

    def _encode(self, session: AuthKitSession) -> dict[str, Any]:
        # Flask's tagged JSON turns tuples, bytes, datetimes... into plain JSON,
        # exactly as Flask's cookie sessions do; the storage then holds JSON.
        # A session of plain JSON values is left as it is by tagging (unless a
        # dict's only key is a tag's, which the copy refuses) and by the dumps +
        # loads round trip: a copy is the whole encoding.
        plain = plain_json_copy(dict(session), self._serializer.tags)
        if plain is not None:
            return cast(dict[str, Any], plain)
        tagged = plain_json_copy(self._serializer.tag(dict(session)))
        if tagged is not None:
            return cast(dict[str, Any], tagged)
        try:
            encoded: dict[str, Any] = json.loads(self._serializer.dumps(dict(session)))
        except TypeError as exc:
            raise TypeError(f"session values must be JSON-serialisable (as for Flask's own sessions): {exc}") from exc
        return encoded

    def _decode(self, data: Mapping[str, Any]) -> dict[str, Any]:
        # What TaggedJSONSerializer.loads(json.dumps(data)) gives, without the
        # text in between: untag every dict, innermost first (as its object_hook).
        # Data without a tagged dict untags to itself: a copy (never the stored
        # record's own containers, which save_session compares with) will do.
        plain = plain_json_copy(data, self._serializer.tags)
        if plain is not None:
            return cast(dict[str, Any], plain)
        decoded: dict[str, Any] = self._untag(data)
        return decoded

    def _untag(self, value: Any) -> Any:
        if isinstance(value, dict):
            return self._serializer.untag({key: self._untag(item) for key, item in value.items()})
        if isinstance(value, list):
            return [self._untag(item) for item in value]
        return value

    # -- SessionInterface -------------------------------------------------

    def open_session(self, app: Flask, request: Request) -> AuthKitSession:
        """The stored session the cookie names (one read), or a new empty one."""
        sid = request.cookies.get(self.get_cookie_name(app))
        stored_id = known_stored_id(sid) if sid else None
        if stored_id is not None:
            record = self.storage.get_session(stored_id)
            if record is not None:
                return self.session_class(self._decode(record.data), sid=sid, record=record)
        return self.session_class()

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Store, refresh or delete the session and set or delete its cookie (see the class doc).

        One storage call and no lock: ``create_session`` for a new session,
        ``replace_session`` for changed data, ``touch_session`` to slide the
        expiry of unchanged data, ``delete_session`` for an emptied one.
        """
        if not isinstance(session, AuthKitSession):
            raise TypeError("AuthKitSessionInterface saves only the AuthKitSession it opened")
        if session.accessed:
            response.vary.add("Cookie")
        storage = self.storage
        for stale in session.stale_sids:
            storage.delete_session(stored_session_id(stale))
        session.stale_sids.clear()

        if not session:
            # Emptied (logout) or regenerated to nothing: forget it everywhere.
            if session.sid is not None:
                loaded = session.record  # its id is the digest, already computed
                storage.delete_session(stored_session_id(session.sid) if loaded is None else loaded.session_id)
                session.sid = session.record = None
            if session.modified:
                response.delete_cookie(self.get_cookie_name(app), **self._cookie_flags(app))
                response.vary.add("Cookie")
            return

        if not (session.modified or app.config["SESSION_REFRESH_EACH_REQUEST"]):
            return
        now = storage.now()
        lifetime = app.permanent_session_lifetime if session.permanent else self.non_permanent_lifetime
        expires_at = now + lifetime
        data = self._encode(session)
        stored = session.record
        if session.sid is None or stored is None:
            sid, record = self._create(storage, session, data, now, expires_at)
        else:
            sid = session.sid
            record = self._record(session, sid, stored, data, now, expires_at)
            if data == stored.data and record.user_id == stored.user_id:
                # Only the expiry slides: no rewrite of data that did not change.
                written = storage.touch_session(record.session_id, expires_at, last_activity=now)
            else:
                written = storage.replace_session(record.session_id, record)
            if not written:
                # Deleted by a concurrent request (logout) or expired while
                # this one ran: writing now would bring it back to life.
                session.sid = session.record = None
                response.delete_cookie(self.get_cookie_name(app), **self._cookie_flags(app))
                response.vary.add("Cookie")
                return
            if not self.should_set_cookie(app, session):
                session.record = record
                return
        session.sid, session.record = sid, record
        response.set_cookie(self.get_cookie_name(app), sid, expires=expires_at if session.permanent else None,
                            **self._cookie_flags(app))
        response.vary.add("Cookie")

    def _cookie_flags(self, app: Flask) -> dict[str, Any]:
        """The cookie's attributes from Flask's config: asked only when a cookie is set or
        deleted (a read-only request sets none)."""
        return {
            "domain": self.get_cookie_domain(app),
            "path": self.get_cookie_path(app),
            "secure": self.get_cookie_secure(app),
            "partitioned": self.get_cookie_partitioned(app),
            "samesite": self.get_cookie_samesite(app),
            "httponly": self.get_cookie_httponly(app),
        }

    def _create(
        self, storage: AuthStorage, session: AuthKitSession, data: dict[str, Any], now: datetime, expires_at: datetime
    ) -> tuple[str, SessionData]:
        """Store a new session under a fresh id; its cookie value and its record."""
        for _ in range(_CREATE_ATTEMPTS):
            # 256 random bits: a taken id is as good as impossible, and
            # create_session (never a blind write) makes sure of it.
            sid = secrets.token_urlsafe(32)
            record = self._record(session, sid, None, data, now, expires_at)
            if storage.create_session(record.session_id, record):
                return sid, record
        raise StorageError(f"no free session id in {_CREATE_ATTEMPTS} random draws: is the random source broken?")

    def _record(
        self,
        session: AuthKitSession,
        sid: str,
        stored: SessionData | None,
        data: dict[str, Any],
        now: datetime,
        expires_at: datetime,
    ) -> SessionData:
        user = session.get(self.user_id_key)
        user_id = str(user) if user is not None else ""
        # Built without __init__: every datetime here is the storage clock's (aware UTC)
        # or a stored record's, and the storage checks the whole record it is given.
        record: SessionData = object.__new__(SessionData)
        record.__dict__.update(
            session_id=stored_session_id(sid) if stored is None else stored.session_id,
            user_id=user_id if _valid_sid(user_id) else ANONYMOUS_USER_ID,
            created_at=stored.created_at if stored is not None else now,
            expires_at=expires_at,
            last_activity=now,
            ip_address=request.remote_addr if stored is None else stored.ip_address,
            # The header itself (what request.user_agent.string holds, without building its parser).
            user_agent=(request.headers.get("User-Agent") or None) if stored is None else stored.user_agent,
            data=data,
        )
        return record


def _valid_sid(sid: str) -> bool:
    """True if the storage accepts ``sid`` as an id (cookies and user ids can be anything)."""
    try:
        check_id(sid, "session_id")
    except ValueError:
        return False
    return True


class _AppState:
    """What :class:`AuthKit` keeps per app: the storage and the lazy Salesforce client.

    It holds no reference to the app, so ``weakref.finalize(app, state.close)``
    can close them when the app goes away.
    """

    def __init__(self, storage: AuthStorage | None, url: str, options: Mapping[str, Any],
                 salesforce: Mapping[str, Any] | None, client: SalesforceClient | None) -> None:
        self._storage = storage
        self.owns_storage = storage is None
        self._url = url
        self._options = dict(options)
        self.salesforce_config = salesforce
        self.client = client
        self.owns_client = False
        self.mutex = threading.Lock()
        self.cleanup: _CleanupEveryN | None = None  # AUTHKIT_CLEANUP_N_REQUESTS

    @property
    def storage(self) -> AuthStorage:
        """The storage, opened from the URL on first use (once, under the lock)."""
        storage = self._storage
        if storage is not None:
            return storage
        with self.mutex:
            if self._storage is None:
                self._storage = open_storage(self._url, **self._options)
            return self._storage

    def close(self) -> None:
        with self.mutex:
            client, self.client = (self.client, None) if self.owns_client else (None, self.client)
            self.owns_client = False
            storage = self._storage if self.owns_storage else None
            if self.owns_storage:
                self._storage = None
        if client is not None:
            client.close()
        if storage is not None:
            storage.close()


class AuthKit:
    """The Flask extension: ``AuthKit(app)`` or ``authkit = AuthKit(); authkit.init_app(app)``.

    Reads from ``app.config``:

    ``AUTHKIT_STORAGE_URL``
        the storage (default ``sqlite:///authkit.db``), opened on first use,
        shared by every request, and closed when the app is garbage-collected
        or the process exits (never per request: it is a connection pool).
    ``AUTHKIT_STORAGE_OPTIONS``
        a dict of :func:`~authkit.storage.open_storage` options (``prefix``,
        ``encryption_keys``, ...).
    ``AUTHKIT_SESSIONS``
        install the server-side session interface (default ``True``).
    ``AUTHKIT_SESSION_LIFETIME``
        server-side idle lifetime of non-permanent sessions (default 24 h).
    ``AUTHKIT_SESSION_USER_KEY``
        the session key holding the user id (default ``"user_id"``).
    ``AUTHKIT_CLEANUP_N_REQUESTS``
        for apps without cron: every N requests, delete expired records on a
        background thread under the cleanup lock (default ``None``: never;
        run ``flask authkit cleanup`` from cron instead).
    ``AUTHKIT_SALESFORCE_*``
        the shared Salesforce client: ``AUTHKIT_SALESFORCE_FLOW`` plus the
        flow's options in upper case (``_CLIENT_ID``, ``_USERNAME``,
        ``_PRIVATE_KEY_FILE``, ``_LOGIN_URL``, ``_API_VERSION``...), or
        ``AUTHKIT_SALESFORCE_AUTH``: a ready ``AuthSession`` or a callable
        returning one.  Minting flows share their token through the storage.

    ``storage=`` gives a ready storage instead of the URL (the caller closes
    it); ``salesforce=`` a ready :class:`SalesforceClient`.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        storage: AuthStorage | None = None,
        salesforce: SalesforceClient | None = None,
    ) -> None:
        self._storage = storage
        self._client = salesforce
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Install the session interface and the ``authkit`` CLI group; the storage opens on first use."""
        if _EXTENSION_KEY in app.extensions:
            raise RuntimeError("AuthKit is already initialised on this app")
        config = app.config
        config.setdefault("AUTHKIT_STORAGE_URL", _DEFAULT_STORAGE_URL)
        config.setdefault("AUTHKIT_STORAGE_OPTIONS", {})
        config.setdefault("AUTHKIT_SESSIONS", True)
        config.setdefault("AUTHKIT_SESSION_LIFETIME", DEFAULT_NON_PERMANENT_LIFETIME)
        config.setdefault("AUTHKIT_SESSION_USER_KEY", "user_id")
        config.setdefault("AUTHKIT_CLEANUP_N_REQUESTS", None)
        # Check the settings that can be wrong before anything is opened.
        lifetime = _lifetime(config["AUTHKIT_SESSION_LIFETIME"], "AUTHKIT_SESSION_LIFETIME")
        salesforce = _salesforce_settings(config)

        options = config["AUTHKIT_STORAGE_OPTIONS"]
        if not isinstance(options, Mapping):
            raise ConfigurationError("AUTHKIT_STORAGE_OPTIONS must be a dict of open_storage options")
        url = config["AUTHKIT_STORAGE_URL"]
        if not isinstance(url, str) or not url:
            raise ConfigurationError("AUTHKIT_STORAGE_URL must be a storage URL such as sqlite:///authkit.db")
        # Opened on first use, not here: an app whose database is down still
        # starts (and recovers when it is back), and `flask authkit cleanup`
        # reports a bad URL as one line instead of a traceback from app loading.
        state = _AppState(self._storage, url, options, salesforce, self._client)
        app.extensions[_EXTENSION_KEY] = state
        # The storage and the client are pools shared by every request: close
        # them when the app goes away (finalize also runs at interpreter exit).
        weakref.finalize(app, state.close)
        if config["AUTHKIT_SESSIONS"]:
            app.session_interface = AuthKitSessionInterface(
                lambda: state.storage,
                non_permanent_lifetime=lifetime,
                user_id_key=config["AUTHKIT_SESSION_USER_KEY"],
            )
        every = config["AUTHKIT_CLEANUP_N_REQUESTS"]
        if every is not None:
            try:
                state.cleanup = _CleanupEveryN(lambda: state.storage, every)
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(f"AUTHKIT_CLEANUP_N_REQUESTS: {exc}") from exc
            cleanup = state.cleanup

            @app.teardown_request
            def _count_request(exc: BaseException | None) -> None:
                # Counts and, every N requests, starts a thread: the request never waits for the cleanup.
                cleanup.tick()

        app.cli.add_command(cli)

    @staticmethod
    def _state(app: Flask | None = None) -> _AppState:
        target = app if app is not None else current_app
        state = target.extensions.get(_EXTENSION_KEY)
        if state is None:
            raise RuntimeError("AuthKit is not initialised on this app: call AuthKit(app) or init_app(app)")
        assert isinstance(state, _AppState)
        return state

    def get_storage(self, app: Flask | None = None) -> AuthStorage:
        """The app's storage (``app`` defaults to the current app)."""
        return self._state(app).storage

    @property
    def storage(self) -> AuthStorage:
        """The current app's storage."""
        return self.get_storage()

    def get_salesforce(self, app: Flask | None = None) -> SalesforceClient:
        """The app's shared :class:`SalesforceClient`, built on first use from the config.

        One client per app, safe to use from every request thread at once: the
        auth session mints a token once for all of them and refreshes it once.
        """
        state = self._state(app)
        client = state.client
        if client is not None:
            return client
        if state.salesforce_config is None:
            raise ConfigurationError(
                "no Salesforce settings: set AUTHKIT_SALESFORCE_FLOW and its options "
                "(or AUTHKIT_SALESFORCE_AUTH), or pass AuthKit(salesforce=...)"
            )
        storage = state.storage  # before taking the mutex: opening the storage takes it too
        with state.mutex:
            if state.client is None:
                state.client = build_salesforce_client(state.salesforce_config, storage, names=_flask_setting_name)
                state.owns_client = True
            return state.client

    @property
    def salesforce(self) -> SalesforceClient:
        """The current app's shared :class:`SalesforceClient`."""
        return self.get_salesforce()

    def close(self, app: Flask | None = None) -> None:
        """Close now what AuthKit opened for the app: the storage from the URL and the
        Salesforce client it built (tests, app factories).  Otherwise this happens
        when the app is garbage-collected or the process exits."""
        self._state(app).close()


def _flask_setting_name(key: str) -> str:
    return f"AUTHKIT_SALESFORCE_{key.upper()}"


def _salesforce_settings(config: Mapping[str, Any]) -> dict[str, Any] | None:
    prefix = "AUTHKIT_SALESFORCE_"
    settings = {key[len(prefix):].lower(): value for key, value in config.items() if key.startswith(prefix)}
    return settings or None


@click.command("authkit", add_help_option=False,
               context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                 "allow_interspersed_args": False})
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
@with_appcontext
def cli(argv: tuple[str, ...]) -> None:
    """authkit maintenance of this app's storage: init, stats, cleanup, reencrypt, encrypt, ...

    The sub-commands, options, output and exit statuses of the ``authkit``
    command (``flask authkit --help`` lists them), on the app's storage.
    """
    state = AuthKit._state()
    url = current_app.config.get("AUTHKIT_STORAGE_URL") if state.owns_storage else None
    options = current_app.config.get("AUTHKIT_STORAGE_OPTIONS") if state.owns_storage else None
    status = _run_framework(argv, prog="flask authkit", storage=lambda: state.storage,
                            storage_url=url if isinstance(url, str) else None,
                            storage_options=options if isinstance(options, dict) else None)
    click.get_current_context().exit(status)
