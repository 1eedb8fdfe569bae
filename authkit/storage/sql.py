"""``SqlStorage``: tokens, sessions and kv data in SQLite, PostgreSQL or MySQL/MariaDB.

One implementation on SQLAlchemy Core for the three databases::

    from authkit.storage.sql import SqlStorage

    storage = SqlStorage("sqlite:///authkit.db")                  # a file; processes may share it
    storage = SqlStorage("sqlite://")                             # in memory, shared by threads
    storage = SqlStorage("postgresql://app:pw@db/app")            # psycopg 3
    storage = SqlStorage("mysql://app:pw@db/app", prefix="sso_")  # PyMySQL (also mariadb://)

    storage.store_kv("greeting", b"hello", ttl=60)
    with storage.lock("nightly-cleanup", timeout=0):
        storage.cleanup_expired()

SQLAlchemy supplies the dialects, the table definitions (``_sql_schema``), the
DDL and the connection pool.  The statements are compiled once per storage and
run on the pool's DBAPI connections directly, so an operation costs what the
same SQL costs through the driver (see ``benchmarks/bench_sql.py``); every
connection is in autocommit mode and multi-statement work runs between an
explicit ``BEGIN`` and ``COMMIT``.  See ``docs/sql.md`` for the schema, locks
and operational notes.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from typing import Any, TypeVar

from authkit.errors import ConfigurationError, NotFoundError, StorageError, StorageUnavailableError
from authkit.models import AuthToken, CleanupReport, SessionData
from authkit.storage._codec import (
    INT64_MAX,
    counter_bounds,
    counter_overflow,
    digest,
    dumps,
    format_counter,
    loads,
    micros,
    moment,
    optional_micros,
    optional_moment,
)
from authkit.storage._private_file import create_private_file
from authkit.storage._redact import redact_url, url_secrets
from authkit.storage.base import AuthStorage, Clock

try:
    import sqlalchemy as sa
    from sqlalchemy import event
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.dialects import mysql as sa_mysql
    from sqlalchemy.dialects import postgresql as sa_postgresql
    from sqlalchemy.dialects import sqlite as sa_sqlite
    from sqlalchemy.engine import URL, Dialect, Engine
    from sqlalchemy.pool import StaticPool
except ImportError as _exc:  # pragma: no cover - SQLAlchemy is a runtime dependency
    raise ConfigurationError("SqlStorage needs SQLAlchemy 2: pip install authkit") from _exc

from authkit.storage._sql_primitives import SESSION_COLUMNS, PrimitiveStatements
from authkit.storage._sql_schema import MYSQL_DIALECTS, SCHEMA_VERSION, Tables

__all__ = ["SqlStorage", "SCHEMA_VERSION"]

T = TypeVar("T")

_PREFIX_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")
_IN_CHUNK = 500  # ids per "IN (...)" statement in bulk deletes
_SQLITE_BUSY_TIMEOUT_MS = 30_000
_SQLITE_MMAP_BYTES = 256 * 1024 * 1024
# PyMySQL sends bytes as hex, doubling them: a kv value above this size goes to
# MySQL in pieces, so 8 MiB fits the default 16 MiB max_allowed_packet.
_MYSQL_CHUNK = 1024 * 1024
_LOCK_POLL_FIRST, _LOCK_POLL_MAX = 0.005, 0.1

# Which driver each URL scheme uses, and the extra that installs it.
_DRIVERS = {
    "sqlite": ("sqlite", ("", "pysqlite"), None),
    "postgresql": ("postgresql+psycopg", ("", "psycopg"), "postgres"),
    "postgres": ("postgresql+psycopg", ("", "psycopg"), "postgres"),
    "mysql": ("mysql+pymysql", ("", "pymysql"), "mysql"),
    "mariadb": ("mysql+pymysql", ("", "pymysql"), "mysql"),
}

_TOKEN_COLUMNS = (
    "token_id", "user_id", "access_token", "refresh_token", "token_type",
    "scopes", "issued_at", "expires_at", "client_id", "metadata",
)
_SESSION_COLUMNS = SESSION_COLUMNS


# The encoding rules are the codec's (one place for every backend).
_micros, _optional_micros, _moment, _optional_moment = micros, optional_micros, moment, optional_moment
_dumps, _loads, _digest = dumps, loads, digest


def _text(value: str | bytes) -> str:
    # MySQL returns VARBINARY ids as bytes; the others return str.
    return value.decode() if isinstance(value, bytes) else value


def _next_prefix(prefix: str) -> str | None:
    """The smallest string above every string that starts with ``prefix`` (code-point order)."""
    chars = list(prefix)
    while chars:
        point = ord(chars.pop()) + 1
        if point == 0xD800:  # surrogates are not text: skip to the next encodable code point
            point = 0xE000
        if point <= 0x10FFFF:
            return "".join(chars) + chr(point)
    return None


# -- fork safety ----------------------------------------------------------------

_LIVE: weakref.WeakSet[SqlStorage] = weakref.WeakSet()
_HOOKED: weakref.WeakSet[Engine] = weakref.WeakSet()  # shared Engines given our connect hooks


def _after_fork_in_child() -> None:
    for storage in list(_LIVE):
        storage._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _LockReleaseFailed(StorageError):
    """A session lock could not be released: its connection must be closed, not pooled."""


class _DirectConnection:
    """The pool-connection interface ``_cursor`` uses, on a bare DBAPI connection."""

    def __init__(self, dbapi_connection: Any) -> None:
        self.dbapi_connection = dbapi_connection

    def cursor(self) -> Any:
        return self.dbapi_connection.cursor()

    def invalidate(self, exc: BaseException | None = None) -> None:
        """An in-memory database cannot be reconnected: keep the connection."""

    def close(self) -> None:
        """Nothing to return: the pool keeps the connection until the engine is disposed."""


class SqlStorage(AuthStorage):
    """Storage in SQL tables named ``<prefix>tokens``, ``<prefix>sessions``, ``<prefix>kv``, ...

    ``url_or_engine`` is a URL (``sqlite:///path.db``, ``sqlite://``,
    ``postgresql://…``, ``mysql://…``, ``mariadb://…``) or an existing
    SQLAlchemy ``Engine`` on one of those drivers.  ``create_schema=False``
    expects the tables to exist already (e.g. made by ``authkit init``).
    Other keyword arguments go to :func:`sqlalchemy.create_engine`
    (``pool_size``, ``connect_args``, ...).

    >>> storage = SqlStorage("sqlite://")
    >>> storage.store_kv("k", b"v")
    >>> storage.get_kv("k")
    b'v'
    >>> storage.close()
    """

    def __init__(
        self,
        url_or_engine: str | URL | Engine,
        *,
        prefix: str = "authkit_",
        create_schema: bool = True,
        clock: Clock | None = None,
        **engine_options: Any,
    ) -> None:
        super().__init__(clock=clock)
        if not isinstance(prefix, str):
            raise TypeError("prefix must be a str")
        if not _PREFIX_RE.fullmatch(prefix):
            raise ValueError("prefix must be 1-32 letters, digits or underscores, not starting with a digit")
        if not isinstance(create_schema, bool):
            raise TypeError("create_schema must be a bool")
        self._prefix = prefix
        self._serial: AbstractContextManager[Any] = nullcontext()
        self._in_memory = False
        if isinstance(url_or_engine, Engine):
            if engine_options:
                raise TypeError("engine options cannot be given together with an Engine")
            self._owns_engine = False
            self._engine = url_or_engine
            self._check_dialect(self._engine.url)
            if self._engine.dialect.name == "sqlite" and self._engine.url.database in (None, "", ":memory:"):
                # SQLAlchemy's default pool gives every thread its own, separate memory database.
                raise ConfigurationError("for in-memory SQLite pass the URL 'sqlite://', not an Engine")
            if self._engine not in _HOOKED:
                _HOOKED.add(self._engine)
                self._install_connect_hooks(self._engine)
        elif isinstance(url_or_engine, (str, URL)):
            self._owns_engine = True
            self._engine = self._create_engine(url_or_engine, engine_options)
        else:
            raise TypeError(f"url_or_engine must be a URL str or an Engine, not {type(url_or_engine).__name__}")
        self._dialect_name = self._engine.dialect.name
        self._is_sqlite = self._dialect_name == "sqlite"
        self._is_mysql = self._dialect_name in MYSQL_DIALECTS
        self._is_postgresql = self._dialect_name == "postgresql"
        self._dbapi: Any = self._engine.dialect.dbapi
        self._label = self._describe(self._engine.url)
        # Every secret of the URL (user-info and ?password=), masked out of messages.
        self._secrets = url_secrets(self._engine.url.render_as_string(hide_password=False))
        self._tables = Tables(prefix, self._dialect_name)
        self._closed = False
        try:
            self._setup_schema(create_schema)
            self._compile_statements()
        except BaseException:
            if self._owns_engine:
                self._engine.dispose()
            raise
        # In-memory SQLite is one connection that lives as long as the engine: use it
        # directly (under _serial) instead of checking it out of the pool every time.
        self._direct: _DirectConnection | None = None
        if self._in_memory:
            fairy = self._engine.raw_connection()
            self._direct = _DirectConnection(fairy.dbapi_connection)
            fairy.close()
        _LIVE.add(self)

    # -- engine -----------------------------------------------------------------

    @staticmethod
    def _check_dialect(url: URL) -> tuple[str, str | None]:
        backend, _, driver = url.drivername.partition("+")
        known = _DRIVERS.get(backend)
        if known is None:
            raise ConfigurationError(f"SqlStorage supports sqlite, postgresql, mysql and mariadb URLs, not {backend!r}")
        drivername, drivers, extra = known
        if driver not in drivers:
            raise ConfigurationError(
                f"SqlStorage runs {backend} on {drivername.partition('+')[2] or 'sqlite3'}, not {driver!r}"
            )
        return drivername, extra

    def _create_engine(self, url_or_engine: str | URL, options: dict[str, Any]) -> Engine:
        if isinstance(url_or_engine, str):
            try:
                url = sa.engine.make_url(url_or_engine)
            except (sa_exc.ArgumentError, ValueError):
                # "from None": SQLAlchemy's message would repeat the URL, password included.
                raise ConfigurationError("the storage URL cannot be parsed; e.g. sqlite:///authkit.db") from None
        else:
            url = url_or_engine
        drivername, extra = self._check_dialect(url)
        url = url.set(drivername=drivername)
        settings: dict[str, Any] = {
            "pool_pre_ping": True,
            "hide_parameters": True,  # SQLAlchemy's messages would otherwise quote tokens
            "isolation_level": "AUTOCOMMIT",
            "pool_reset_on_return": None,  # autocommit: nothing to roll back on return
        }
        connect_args: dict[str, Any] = dict(options.pop("connect_args", {}))
        if drivername == "sqlite":
            settings["paramstyle"] = "named"
            connect_args.setdefault("check_same_thread", False)
            if url.database in (None, "", ":memory:"):
                # One connection, kept for the storage's life: the database lives in it.
                self._in_memory = True
                settings["poolclass"] = StaticPool
                self._serial = threading.RLock()
            elif not url.database.startswith("file:"):
                create_private_file(url.database)  # 0600, and so its -wal and -shm too
        else:
            connect_args.setdefault("connect_timeout", 10)
            settings["pool_recycle"] = 3600
        settings.update(options)
        settings["connect_args"] = connect_args
        try:
            engine = sa.create_engine(url, **settings)
        except ImportError as exc:
            raise ConfigurationError(
                f"{url.get_backend_name()}:// needs its driver: pip install 'authkit[{extra}]'"
            ) from exc
        except sa_exc.ArgumentError as exc:
            raise TypeError(f"bad engine option: {exc}") from None
        self._install_connect_hooks(engine)
        return engine

    def _install_connect_hooks(self, engine: Engine) -> None:
        name = engine.dialect.name
        in_memory = engine.url.database in (None, "", ":memory:")

        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                if name == "sqlite":
                    # WAL lets readers and a writer work at once; busy_timeout makes a
                    # writer wait for another process's write instead of failing.
                    cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
                    # Overwrite deleted and replaced rows with zeros, so a token or a
                    # plaintext record replaced by `authkit encrypt` does not linger in
                    # free pages (Debian builds SQLite this way; other builds do not).
                    cursor.execute("PRAGMA secure_delete = ON")
                    if not in_memory:
                        cursor.execute("PRAGMA journal_mode = WAL")
                        # NORMAL is durable across application crashes in WAL mode; only an OS
                        # crash or power loss may undo the last commits.
                        cursor.execute("PRAGMA synchronous = NORMAL")
                        # Read through the OS page cache instead of copying pages into
                        # SQLite's small (2 MiB) private cache: random lookups in a large
                        # table stay memory-speed.
                        cursor.execute(f"PRAGMA mmap_size = {_SQLITE_MMAP_BYTES}")
                elif name in MYSQL_DIALECTS:
                    # Strict mode turns the token upsert's guard (see _compile_statements)
                    # into an error instead of a silent coercion.
                    cursor.execute(
                        "SET SESSION sql_mode = IF(@@SESSION.sql_mode = '', 'STRICT_ALL_TABLES', "
                        "CONCAT(@@SESSION.sql_mode, ',STRICT_ALL_TABLES'))"
                    )
            finally:
                cursor.close()

        event.listen(engine, "connect", on_connect)

    @staticmethod
    def _describe(url: URL) -> str:
        if url.get_backend_name() == "sqlite":
            return f"SQLite {url.database or ':memory:'}"
        host = url.host or "localhost"
        port = f":{url.port}" if url.port else ""
        kind = "PostgreSQL" if url.get_backend_name() == "postgresql" else "MySQL"
        return f"{kind} at {host}{port}/{url.database or ''}"

    def __repr__(self) -> str:
        safe = redact_url(self._engine.url.render_as_string(hide_password=False))
        return f"SqlStorage({safe!r}, prefix={self._prefix!r})"

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (its URL hides the password when printed)."""
        return self._engine

    @property
    def prefix(self) -> str:
        return self._prefix

    def close(self) -> None:
        """Close the pool's connections (only those of an engine this storage created)."""
        self._closed = True
        _LIVE.discard(self)
        if self._owns_engine:
            self._engine.dispose()

    def _after_fork(self) -> None:
        # The child must not talk on the parent's sockets: forget them without
        # closing them (closing would end the parent's sessions too).  An
        # in-memory SQLite database is the connection itself, so it is kept: the
        # child has its own copy of the memory.
        if not self._in_memory:
            self._engine.dispose(close=False)
        else:
            self._serial = threading.RLock()

    # -- errors -----------------------------------------------------------------

    def _error(self, exc: BaseException, *, connecting: bool, disconnected: bool = False) -> StorageError:
        """The authkit error for a driver or pool failure (the caller chains ``exc``)."""
        orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
        dbapi = self._dbapi
        unavailable = (
            connecting
            or disconnected
            or isinstance(exc, (sa_exc.TimeoutError, sa_exc.DisconnectionError, OSError))
            or (dbapi is not None and isinstance(orig, dbapi.InterfaceError))
        )
        code = getattr(orig, "sqlstate", None)
        if code is None and orig.args and isinstance(orig.args[0], int):
            code = orig.args[0]  # a MySQL error number
        detail = type(orig).__name__ + (f" [{code}]" if code else "")
        if unavailable:
            # Connection errors name host, port and user, never data; keep their first line.
            first = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
            for secret in self._secrets:
                first = first.replace(secret, "***")
            message = f"{self._label} is unavailable: {detail}" + (f": {first}" if first else "")
            return StorageUnavailableError(message)
        # Other messages may quote the data (a token, a value): name the error only.
        return StorageError(f"{self._label} failed: {detail}")

    def _is_disconnect(self, exc: BaseException, connection: Any, cursor: Any) -> bool:
        if self._dbapi is None or not isinstance(exc, self._dbapi.Error):
            return False
        try:
            return bool(self._engine.dialect.is_disconnect(exc, connection, cursor))
        except Exception:
            return False

    # -- running SQL --------------------------------------------------------------

    @contextmanager
    def _cursor(self, transaction: bool = False) -> Iterator[Any]:
        """A DBAPI cursor on a pooled connection; with ``transaction``, inside BEGIN/COMMIT.

        Driver and pool errors leave as authkit errors; a connection that broke
        is invalidated so the pool (and its pre-ping) replaces it.
        """
        if self._closed:
            raise StorageError("the storage is closed")
        with self._serial:
            try:
                connection = self._direct or self._engine.raw_connection()
            except Exception as exc:
                raise self._error(exc, connecting=True) from exc
            cursor: Any = None
            began = False
            borrowed = not self._owns_engine and self._direct is None
            try:
                if borrowed:
                    # Someone else's engine: its connections are not in autocommit
                    # mode, which the statements here rely on; switch for this use.
                    dbapi_connection = connection.dbapi_connection
                    assert dbapi_connection is not None
                    self._engine.dialect.set_isolation_level(dbapi_connection, "AUTOCOMMIT")
                cursor = connection.cursor()
                if transaction:
                    cursor.execute(self._begin)
                    began = True
                yield cursor
                if began:
                    cursor.execute("COMMIT")
            except BaseException as exc:
                disconnected = isinstance(exc, _LockReleaseFailed) or self._is_disconnect(
                    exc, connection.dbapi_connection, cursor
                )
                if began and not disconnected:
                    try:
                        cursor.execute("ROLLBACK")
                    except Exception:
                        disconnected = True
                if disconnected:
                    connection.invalidate(exc if isinstance(exc, Exception) else None)
                if isinstance(exc, sa_exc.SQLAlchemyError) or (
                    self._dbapi is not None and isinstance(exc, self._dbapi.Error)
                ):
                    raise self._error(exc, connecting=False, disconnected=disconnected) from exc
                raise
            finally:
                if cursor is not None:
                    try:
                        cursor.close()
                    except Exception:  # noqa: S110 - the connection is going back or away anyway
                        pass
                if borrowed and connection.dbapi_connection is not None:
                    try:
                        self._engine.dialect.reset_isolation_level(connection.dbapi_connection)
                    except Exception:
                        connection.invalidate()
                connection.close()

    def _is_integrity_error(self, exc: BaseException) -> bool:
        cause = exc.__cause__
        return self._dbapi is not None and isinstance(cause, self._dbapi.IntegrityError)

    # -- schema -------------------------------------------------------------------

    def _setup_schema(self, create: bool) -> None:
        meta = self._tables.meta
        try:
            with self._serial:
                if create:
                    self._create_tables()
                with self._engine.connect() as conn:
                    if not sa.inspect(conn).has_table(meta.name):
                        raise ConfigurationError(
                            f"the authkit tables with prefix {self._prefix!r} do not exist in {self._label}; "
                            "create them with create_schema=True or `authkit init`"
                        )
                    version = conn.execute(sa.select(meta.c.value).where(meta.c.name == "schema_version")).scalar()
        except sa_exc.DBAPIError as exc:
            raise self._error(exc, connecting=bool(exc.connection_invalidated)
                              or isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError))) from exc
        except sa_exc.SQLAlchemyError as exc:
            raise self._error(exc, connecting=False) from exc
        except (TypeError, ValueError, AttributeError, LookupError) as exc:
            # The driver choked on a connection option from the URL (e.g. PyMySQL on
            # ?charset=bogus raises AttributeError): a configuration mistake, not an outage.
            raise ConfigurationError(
                f"{self._label}: the driver rejected the connection options ({type(exc).__name__}); "
                "check the URL's query parameters"
            ) from exc
        if version != str(SCHEMA_VERSION):
            raise ConfigurationError(
                f"the authkit tables with prefix {self._prefix!r} in {self._label} have schema version "
                f"{version or 'unknown'}, this authkit uses version {SCHEMA_VERSION}: "
                "migrate them or use another prefix"
            )

    def _create_tables(self) -> None:
        meta = self._tables.meta
        for attempt in range(3):
            try:
                self._tables.metadata.create_all(self._engine, checkfirst=True)
                with self._engine.begin() as conn:
                    found = conn.execute(sa.select(meta.c.value).where(meta.c.name == "schema_version")).first()
                    if found is None:
                        conn.execute(sa.insert(meta).values(name="schema_version", value=str(SCHEMA_VERSION)))
                return
            except (sa_exc.ProgrammingError, sa_exc.IntegrityError, sa_exc.OperationalError) as exc:
                # Another process created the same tables (or row) between our check and
                # our CREATE: look again.  A server that is down fails every attempt.
                if attempt == 2 or (isinstance(exc, sa_exc.OperationalError) and exc.connection_invalidated):
                    raise
                time.sleep(0.05 * (attempt + 1))

    def drop_schema(self) -> None:
        """Drop this prefix's tables and everything in them (tests, uninstall)."""
        try:
            with self._serial:
                self._tables.metadata.drop_all(self._engine, checkfirst=True)
        except sa_exc.SQLAlchemyError as exc:
            raise self._error(exc, connecting=False) from exc

    # -- statements ---------------------------------------------------------------

    def _compile_statements(self) -> None:
        """Compile every statement once, to the driver's own SQL and named parameters."""
        dialect: Dialect
        if self._is_postgresql:
            # The plain PostgreSQL dialect: psycopg's would add a ::TYPE cast to every parameter.
            dialect = sa_postgresql.base.PGDialect(paramstyle="pyformat")  # type: ignore[no-untyped-call]
        elif self._is_sqlite:
            # Named parameters whatever paramstyle the engine was made with (a shared Engine).
            dialect = sa_sqlite.pysqlite.SQLiteDialect_pysqlite(paramstyle="named")
        else:
            dialect = self._engine.dialect  # knows MariaDB from MySQL, for the upsert syntax
        self._placeholder = ":{}" if dialect.paramstyle == "named" else "%({})s"
        quote = dialect.identifier_preparer.quote
        tables = self._tables
        tokens, sessions, kv = tables.tokens, tables.sessions, tables.kv
        bp = sa.bindparam
        one: Any = sa.literal_column("1")
        zero: Any = sa.literal_column("0")

        def sql(statement: Any, column_keys: Sequence[str] | None = None) -> str:
            compiled = statement.compile(dialect=dialect, column_keys=list(column_keys) if column_keys else None)
            # Statements run without SQLAlchemy filling in parameters: every one must be ours.
            stray = [name for name in compiled.binds if re.fullmatch(r".*_\d+", name)]
            assert not stray, f"statement has parameters SQLAlchemy would fill in: {stray}"
            return str(compiled)

        self._begin = "BEGIN IMMEDIATE" if self._is_sqlite else "BEGIN"
        token_row = [*_TOKEN_COLUMNS, "access_digest"]
        self._sql_upsert_token = sql(self._upsert(tokens, "token_id", token_row), token_row)
        self._sql_upsert_session = sql(self._upsert(sessions, "session_id", _SESSION_COLUMNS), _SESSION_COLUMNS)
        self._sql_upsert_kv = sql(self._upsert(kv, "name", ("name", "value", "expires_at")),
                                  ("name", "value", "expires_at"))
        self._sql_update_token = sql(
            sa.update(tokens).where(tokens.c.token_id == bp("token_id")), [c for c in token_row if c != "token_id"]
        )
        self._sql_clear_digest = sql(
            sa.update(tokens)
            .where(tokens.c.access_digest == bp("digest"), tokens.c.token_id != bp("keep"))
            .values(access_digest=sa.null())
        )
        token_cols = [tokens.c[c] for c in _TOKEN_COLUMNS]
        session_cols = [sessions.c[c] for c in _SESSION_COLUMNS]
        self._sql_get_token = sql(sa.select(*token_cols).where(tokens.c.token_id == bp("id")))
        live_token = sa.or_(tokens.c.expires_at.is_(None), tokens.c.expires_at > bp("now"))
        self._sql_get_token_by_access = sql(
            sa.select(*token_cols).where(tokens.c.access_digest == bp("digest"), live_token)
        )
        self._sql_user_tokens = sql(
            sa.select(*token_cols).where(tokens.c.user_id == bp("id")).order_by(tokens.c.issued_at, tokens.c.token_id)
        )
        live_session = sa.or_(sessions.c.expires_at.is_(None), sessions.c.expires_at > bp("now"))
        self._sql_get_session = sql(
            sa.select(*session_cols).where(sessions.c.session_id == bp("id"), live_session)
        )
        self._sql_user_sessions = sql(
            sa.select(*session_cols)
            .where(sessions.c.user_id == bp("id"), live_session)
            .order_by(sessions.c.created_at, sessions.c.session_id)
        )
        self._sql_count_sessions = sql(sa.select(sa.func.count()).select_from(sessions).where(live_session))
        live_kv = sa.or_(kv.c.expires_at.is_(None), kv.c.expires_at > bp("now"))
        self._sql_get_kv_entry = sql(sa.select(kv.c.value, kv.c.expires_at).where(kv.c.name == bp("id"), live_kv))
        # A range on the primary key, not LIKE: exact under binary collations,
        # no wildcard to escape, and an index range scan on every database.
        self._sql_kv_keys_all = sql(sa.select(kv.c.name).where(live_kv))
        self._sql_kv_keys_from = sql(sa.select(kv.c.name).where(kv.c.name >= bp("low"), live_kv))
        self._sql_kv_keys_range = sql(
            sa.select(kv.c.name).where(kv.c.name >= bp("low"), kv.c.name < bp("high"), live_kv)
        )
        # The hand-written statements below (S608) join only identifiers quoted by the
        # dialect, from a prefix checked against _PREFIX_RE; every value is a parameter.
        self._sql_delete_in = {
            name: f"DELETE FROM {quote(table.name)} WHERE {quote(pk)} IN "  # noqa: S608
            for name, table, pk in (("tokens", tokens, "token_id"), ("sessions", sessions, "session_id"))
        }
        self._sql_delete_kv = sql(sa.delete(kv).where(kv.c.name == bp("id")))
        self._sql_append_kv = sql(
            sa.update(kv).where(kv.c.name == bp("id")).values(value=sa.func.concat(kv.c.value, bp("chunk")))
        )
        self._sql_cleanup: dict[str, str] = {}
        self._sql_stats: dict[str, str] = {}
        self._sql_id_page: dict[str, tuple[str, str]] = {}
        for name, table, pk in (("tokens", tokens, "token_id"), ("sessions", sessions, "session_id"),
                                ("kv", kv, "name")):
            expired = table.c.expires_at <= bp("now")
            now_p, limit_p = self._placeholder.format("now"), self._placeholder.format("limit")
            t, key, exp = quote(table.name), quote(pk), quote("expires_at")
            if self._is_mysql:
                # MySQL cannot LIMIT a subquery of the table it deletes from; it can
                # LIMIT the DELETE itself, walking the expires_at index.
                self._sql_cleanup[name] = (
                    f"DELETE FROM {t} WHERE {exp} <= {now_p} ORDER BY {exp} LIMIT {limit_p}"  # noqa: S608
                )
            else:
                self._sql_cleanup[name] = (
                    f"DELETE FROM {t} WHERE {key} IN "  # noqa: S608
                    f"(SELECT {key} FROM {t} WHERE {exp} <= {now_p} ORDER BY {exp} LIMIT {limit_p})"
                )
            self._sql_stats[name] = sql(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(sa.case((expired, one), else_=zero)), zero))
                .select_from(table)
            )
            if name != "kv":
                cursor_p = self._placeholder.format("cursor")
                self._sql_id_page[name] = (
                    f"SELECT {key} FROM {t} ORDER BY {key} LIMIT {limit_p}",  # noqa: S608
                    f"SELECT {key} FROM {t} WHERE {key} > {cursor_p} ORDER BY {key} LIMIT {limit_p}",  # noqa: S608
                )
        self._primitives = PrimitiveStatements(tables, self._dialect_name, sql)
        if tables.locks is not None:
            locks = tables.locks
            self._sql_lock_expire = sql(
                sa.delete(locks).where(locks.c.name == bp("lock"), locks.c.expires_at <= bp("now"))
            )
            self._sql_lock_take = sql(
                sa_sqlite.insert(locks).on_conflict_do_nothing(index_elements=["name"]),
                ("name", "owner", "expires_at"),
            )
            self._sql_lock_release = sql(
                sa.delete(locks).where(locks.c.name == bp("lock"), locks.c.owner == bp("owner"))
            )

    def _upsert(self, table: sa.Table, pk: str, columns: Sequence[str]) -> Any:
        """INSERT ... ON CONFLICT/ON DUPLICATE KEY UPDATE every column but ``pk``."""
        others = [c for c in columns if c != pk]
        if self._is_mysql:
            ins = sa_mysql.insert(table)
            updates: list[tuple[str, Any]] = []
            if table is self._tables.tokens:
                # ON DUPLICATE KEY fires on ANY unique key: a new token whose access
                # token an older token holds would overwrite that older row.  This
                # guard makes that case fail (NULL into a NOT NULL column, an error in
                # strict mode), and _store_tokens retries after releasing the digest.
                guard = sa.func.IF(table.c[pk] == ins.inserted[pk], table.c[pk], sa.null())
                updates.append((pk, guard))
            updates += [(c, ins.inserted[c]) for c in others]
            return ins.on_duplicate_key_update(updates)
        module = sa_postgresql if self._is_postgresql else sa_sqlite
        ins = module.insert(table)
        return ins.on_conflict_do_update(index_elements=[pk], set_={c: ins.excluded[c] for c in others})

    def _in_list(self, sql_head: str, ids: Sequence[str]) -> tuple[str, dict[str, str]]:
        names = [f"p{i}" for i in range(len(ids))]
        sql = sql_head + "(" + ", ".join(self._placeholder.format(n) for n in names) + ")"
        return sql, dict(zip(names, ids, strict=True))

    # -- row conversion -------------------------------------------------------------

    @staticmethod
    def _token_params(token: AuthToken, digest: bytes | None) -> dict[str, Any]:
        return {
            "token_id": token.token_id,
            "user_id": token.user_id,
            "access_token": token.access_token,
            "refresh_token": token.refresh_token,
            "token_type": token.token_type,
            "scopes": _dumps(token.scopes),
            "issued_at": _micros(token.issued_at),
            "expires_at": _optional_micros(token.expires_at),
            "client_id": token.client_id,
            "metadata": _dumps(token.metadata),
            "access_digest": digest,
        }

    @staticmethod
    def _token(row: Sequence[Any]) -> AuthToken:
        # Built without __init__: the row was validated when stored and the datetimes
        # are made aware UTC here, so re-checking them would only cost time per read.
        token: AuthToken = object.__new__(AuthToken)
        token.__dict__.update(
            token_id=_text(row[0]),
            user_id=_text(row[1]),
            access_token=row[2],
            refresh_token=row[3],
            token_type=row[4],
            scopes=_loads(row[5]),
            issued_at=_moment(row[6]),
            expires_at=_optional_moment(row[7]),
            client_id=row[8],
            metadata=_loads(row[9]),
        )
        return token

    @staticmethod
    def _session_params(session: SessionData) -> dict[str, Any]:
        return {
            "session_id": session.session_id,
            "user_id": session.user_id,
            "created_at": _micros(session.created_at),
            "expires_at": _optional_micros(session.expires_at),
            "last_activity": _micros(session.last_activity),
            "ip_address": session.ip_address,
            "user_agent": session.user_agent,
            "data": _dumps(session.data),
        }

    @staticmethod
    def _session(row: Sequence[Any]) -> SessionData:
        session: SessionData = object.__new__(SessionData)  # see _token
        session.__dict__.update(
            session_id=_text(row[0]),
            user_id=_text(row[1]),
            created_at=_moment(row[2]),
            expires_at=_optional_moment(row[3]),
            last_activity=_moment(row[4]),
            ip_address=row[5],
            user_agent=row[6],
            data=_loads(row[7]),
        )
        return session

    # -- tokens -------------------------------------------------------------------

    def _token_rows(self, tokens: list[AuthToken]) -> list[dict[str, Any]]:
        # Two tokens of one batch with the same access token: the later one owns it
        # (as if stored one after the other), the earlier keeps its row, unfindable.
        owner: dict[bytes, int] = {}
        digests = []
        for i, token in enumerate(tokens):
            digest = _digest(token.access_token)
            owner[digest] = i
            digests.append(digest)
        return [
            self._token_params(t, d if owner[d] == i else None)
            for i, (t, d) in enumerate(zip(tokens, digests, strict=True))
        ]

    def _store_tokens(self, tokens: list[AuthToken]) -> None:
        rows = self._token_rows(tokens)
        try:
            self._write_tokens(self._sql_upsert_token, rows)
        except StorageError as exc:
            if not self._is_integrity_error(exc):
                raise
            # An access token is moving to another token id: take it from its old
            # holder in the same transaction.  Rare, so the common path stays one statement.
            self._write_tokens(self._sql_upsert_token, rows, release_digests=True)

    def _write_tokens(self, sql: str, rows: list[dict[str, Any]], release_digests: bool = False) -> int:
        single = len(rows) == 1 and not release_digests
        with self._cursor(transaction=not single) as cursor:
            if release_digests:
                cursor.executemany(
                    self._sql_clear_digest,
                    [{"digest": r["access_digest"], "keep": r["token_id"]} for r in rows if r["access_digest"]],
                )
            if len(rows) == 1:
                cursor.execute(sql, rows[0])
            else:
                cursor.executemany(sql, rows)
            return int(cursor.rowcount)

    def _update_token(self, token: AuthToken) -> None:
        rows = self._token_rows([token])
        try:
            changed = self._write_tokens(self._sql_update_token, rows)
        except StorageError as exc:
            if not self._is_integrity_error(exc):
                raise
            changed = self._write_tokens(self._sql_update_token, rows, release_digests=True)
        # MySQL reports rows matched, not changed (SQLAlchemy's PyMySQL dialect sets
        # CLIENT_FOUND_ROWS), so an update to identical values still counts as found.
        if changed < 1:
            raise NotFoundError(f"no token with id {token.token_id!r}")

    def _get_token(self, token_id: str) -> AuthToken | None:
        with self._cursor() as cursor:
            cursor.execute(self._sql_get_token, {"id": token_id})
            row = cursor.fetchone()
        return None if row is None else self._token(row)

    def _get_token_by_access_token(self, access_token: str, now: datetime) -> AuthToken | None:
        with self._cursor() as cursor:
            cursor.execute(self._sql_get_token_by_access, {"digest": _digest(access_token), "now": _micros(now)})
            row = cursor.fetchone()
        # The digest is the index; the comparison of the token itself is exact.
        if row is None or row[2] != access_token:
            return None
        return self._token(row)

    def _delete_ids(self, kind: str, ids: list[str]) -> None:
        with self._cursor(transaction=len(ids) > _IN_CHUNK) as cursor:
            for start in range(0, len(ids), _IN_CHUNK):
                cursor.execute(*self._in_list(self._sql_delete_in[kind], ids[start:start + _IN_CHUNK]))

    def _delete_tokens(self, token_ids: list[str]) -> None:
        self._delete_ids("tokens", token_ids)

    def _list_user_tokens(self, user_id: str) -> list[AuthToken]:
        with self._cursor() as cursor:
            cursor.execute(self._sql_user_tokens, {"id": user_id})
            rows = cursor.fetchall()
        return [self._token(row) for row in rows]

    # -- sessions -----------------------------------------------------------------

    def _store_sessions(self, sessions: list[SessionData]) -> None:
        rows = [self._session_params(s) for s in sessions]
        with self._cursor(transaction=len(rows) > 1) as cursor:
            if len(rows) == 1:
                cursor.execute(self._sql_upsert_session, rows[0])
            else:
                cursor.executemany(self._sql_upsert_session, rows)

    def _get_session(self, session_id: str, now: datetime) -> SessionData | None:
        with self._cursor() as cursor:
            cursor.execute(self._sql_get_session, {"id": session_id, "now": _micros(now)})
            row = cursor.fetchone()
        return None if row is None else self._session(row)

    def _delete_sessions(self, session_ids: list[str]) -> None:
        self._delete_ids("sessions", session_ids)

    def _list_user_sessions(self, user_id: str, now: datetime) -> list[SessionData]:
        with self._cursor() as cursor:
            cursor.execute(self._sql_user_sessions, {"id": user_id, "now": _micros(now)})
            rows = cursor.fetchall()
        return [self._session(row) for row in rows]

    def _count_active_sessions(self, now: datetime) -> int:
        with self._cursor() as cursor:
            cursor.execute(self._sql_count_sessions, {"now": _micros(now)})
            return int(cursor.fetchone()[0])

    # -- key-value ------------------------------------------------------------------

    def _store_kv(self, key: str, value: bytes, expires_at: datetime | None) -> None:
        expires = _optional_micros(expires_at)
        if self._is_mysql and len(value) > _MYSQL_CHUNK:
            with self._cursor(transaction=True) as cursor:
                cursor.execute(self._sql_upsert_kv, {"name": key, "value": value[:_MYSQL_CHUNK], "expires_at": expires})
                for start in range(_MYSQL_CHUNK, len(value), _MYSQL_CHUNK):
                    cursor.execute(self._sql_append_kv, {"id": key, "chunk": value[start:start + _MYSQL_CHUNK]})
            return
        with self._cursor() as cursor:
            cursor.execute(self._sql_upsert_kv, {"name": key, "value": value, "expires_at": expires})

    def _get_kv_entry(self, key: str, now: datetime) -> tuple[bytes, datetime | None] | None:
        with self._cursor() as cursor:
            cursor.execute(self._sql_get_kv_entry, {"id": key, "now": _micros(now)})
            row = cursor.fetchone()
        return None if row is None else (bytes(row[0]), _optional_moment(row[1]))

    def _delete_kv(self, key: str) -> None:
        with self._cursor() as cursor:
            cursor.execute(self._sql_delete_kv, {"id": key})

    def _list_kv_keys(self, prefix: str, now: datetime) -> list[str]:
        params: dict[str, Any] = {"now": _micros(now)}
        if not prefix:
            sql = self._sql_kv_keys_all
        else:
            params["low"] = prefix
            high = _next_prefix(prefix)
            if high is None:
                sql = self._sql_kv_keys_from
            else:
                sql = self._sql_kv_keys_range
                params["high"] = high
        with self._cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        keys = [_text(row[0]) for row in rows]
        # The range is exact; this check only guards against a database whose
        # collation was changed behind our back.
        return [k for k in keys if k.startswith(prefix)]

    # -- atomic primitives: one statement each (see _sql_primitives) ---------------------
    #
    # Not idempotent: a create_session/add_kv re-run after the first run committed answers
    # False to the caller who won, and an incr_kv re-run counts twice.  None of them may be
    # re-sent once it may have reached the server (replace/touch/delete_user_* may).

    def _write_unless_live(self, sql: str, params: dict[str, Any]) -> bool:
        """Run an insert-unless-live statement: did it write?"""
        try:
            with self._cursor() as cursor:
                cursor.execute(sql, params)
                return int(cursor.rowcount) > 0
        except StorageError as exc:
            if self._primitives.mysql and self._is_integrity_error(exc):
                return False  # MySQL's guard refused: a live row stands
            raise

    def _create_session(self, session: SessionData, now: datetime) -> bool:
        params = self._session_params(session)
        params["now"] = _micros(now)
        return self._write_unless_live(self._primitives.create_session, params)

    def _replace_session(self, session: SessionData, now: datetime) -> bool:
        params = self._session_params(session)
        params["id"] = params.pop("session_id")
        params["now"] = _micros(now)
        with self._cursor() as cursor:
            cursor.execute(self._primitives.replace_session, params)
            return int(cursor.rowcount) > 0

    def _touch_session(
        self, session_id: str, expires_at: datetime | None, last_activity: datetime, now: datetime
    ) -> bool:
        params = {"id": session_id, "expires_at": _optional_micros(expires_at),
                  "last_activity": _micros(last_activity), "now": _micros(now)}
        with self._cursor() as cursor:
            cursor.execute(self._primitives.touch_session, params)
            return int(cursor.rowcount) > 0

    def _delete_user_sessions(self, user_id: str, keep: str | None) -> int:
        with self._cursor() as cursor:
            if keep is None:
                cursor.execute(self._primitives.delete_user_sessions, {"user": user_id})
            else:
                cursor.execute(self._primitives.delete_user_sessions_keep, {"user": user_id, "keep": keep})
            return max(int(cursor.rowcount), 0)

    def _delete_user_tokens(self, user_id: str) -> int:
        with self._cursor() as cursor:
            cursor.execute(self._primitives.delete_user_tokens, {"user": user_id})
            return max(int(cursor.rowcount), 0)

    def _add_kv(self, key: str, value: bytes, expires_at: datetime | None, now: datetime) -> bool:
        params = {"name": key, "value": value, "expires_at": _optional_micros(expires_at), "now": _micros(now)}
        if not (self._is_mysql and len(value) > _MYSQL_CHUNK):
            return self._write_unless_live(self._primitives.add_kv, params)
        # Too big for one MySQL packet: the first piece decides, in a transaction
        # with the rest, so no reader ever sees a partial value.
        params["value"] = value[:_MYSQL_CHUNK]
        try:
            with self._cursor(transaction=True) as cursor:
                cursor.execute(self._primitives.add_kv, params)
                for start in range(_MYSQL_CHUNK, len(value), _MYSQL_CHUNK):
                    cursor.execute(self._sql_append_kv, {"id": key, "chunk": value[start:start + _MYSQL_CHUNK]})
            return True
        except StorageError as exc:
            if self._is_integrity_error(exc):
                return False
            raise

    def _incr_kv(self, key: str, amount: int, expires_at: datetime | None, now: datetime) -> int:
        low, high = counter_bounds(amount)
        params = {"name": key, "value": format_counter(amount), "expires_at": _optional_micros(expires_at),
                  "now": _micros(now), "amount": amount, "lo": low, "hi": high}
        try:
            with self._cursor() as cursor:
                cursor.execute(self._primitives.incr_kv, params)
                if self._primitives.mysql:
                    # LAST_INSERT_ID(total) arrives as lastrowid, unsigned.  A plain insert sets
                    # none (0): the counter is then `amount`; a changed row (2) always sets it.
                    reported = int(cursor.lastrowid or 0)
                    if reported == 0 and int(cursor.rowcount) != 2:
                        return amount
                    return reported - 2**64 if reported > INT64_MAX else reported
                row = cursor.fetchone()
        except StorageError as exc:
            if self._primitives.mysql and self._is_integrity_error(exc):
                raise counter_overflow(key, amount) from None
            raise
        if row is None:  # the WHERE refused: not a counter, or no room for the addition
            raise counter_overflow(key, amount)
        return int(bytes(row[0]))

    def _touch_kv(self, key: str, expires_at: datetime | None, now: datetime) -> bool:
        with self._cursor() as cursor:
            cursor.execute(self._primitives.touch_kv,
                           {"id": key, "expires_at": _optional_micros(expires_at), "now": _micros(now)})
            return int(cursor.rowcount) > 0

    # -- maintenance ----------------------------------------------------------------

    def _cleanup_batch(self, now: datetime, limit: int) -> CleanupReport:
        params = {"now": _micros(now), "limit": limit}
        counts: dict[str, int] = {}
        for name in ("tokens", "sessions", "kv"):
            # One table per statement, each its own (autocommitted) transaction:
            # every lock it takes is released before the next batch starts.
            with self._cursor() as cursor:
                cursor.execute(self._sql_cleanup[name], params)
                counts[name] = max(int(cursor.rowcount), 0)
        return CleanupReport(tokens=counts["tokens"], sessions=counts["sessions"], kv=counts["kv"])

    def _stats(self, now: datetime) -> dict[str, int]:
        params = {"now": _micros(now)}
        stats: dict[str, int] = {}
        with self._cursor() as cursor:
            for name in ("tokens", "sessions", "kv"):
                cursor.execute(self._sql_stats[name], params)
                total, expired = cursor.fetchone()
                stats[f"{name}_live"] = int(total) - int(expired)
                stats[f"{name}_expired"] = int(expired)
        return stats

    def _id_page(self, kind: str, cursor_id: str | None, limit: int) -> tuple[list[str], str | None]:
        first, after = self._sql_id_page[kind]
        with self._cursor() as cursor:
            if cursor_id is None:
                cursor.execute(first, {"limit": limit})
            else:
                cursor.execute(after, {"limit": limit, "cursor": cursor_id})
            ids = [_text(row[0]) for row in cursor.fetchall()]
        return ids, (ids[-1] if len(ids) == limit else None)

    def _token_id_page(self, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        return self._id_page("tokens", cursor, limit)

    def _session_id_page(self, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        return self._id_page("sessions", cursor, limit)

    # -- lock -----------------------------------------------------------------------

    def _drop_old_copies(self) -> None:
        # The WAL still holds the pages as they were before a rewrite (plaintext,
        # before `authkit encrypt`) until a checkpoint copies the new ones over
        # them (secure_delete zeroes what they freed) and TRUNCATE empties it.
        # Readers in the middle of a transaction can make it partial: best effort.
        if self._is_sqlite and not self._in_memory:
            with self._cursor() as cursor:
                cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                cursor.fetchall()

    def _lock(self, name: str, timeout: float, ttl: float) -> AbstractContextManager[None]:
        if self._is_postgresql:
            key = int.from_bytes(self._lock_hash(name)[:8], "big", signed=True)
            take, release = "SELECT pg_try_advisory_lock(%(key)s)", "SELECT pg_advisory_unlock(%(key)s)"
            return self._session_lock(take, release, {"key": key}, name, timeout)
        if self._is_mysql:
            # GET_LOCK names are at most 64 characters and server-wide: a hash of prefix and name.
            lock_name = self._lock_hash(name).hex()
            return self._session_lock(
                "SELECT GET_LOCK(%(name)s, 0)", "SELECT RELEASE_LOCK(%(name)s)", {"name": lock_name}, name, timeout
            )
        return self._sqlite_lock(name, timeout, ttl)

    def _lock_hash(self, name: str) -> bytes:
        return hashlib.sha256(f"authkit\x00{self._prefix}\x00{name}".encode("utf-8", "surrogatepass")).digest()

    @staticmethod
    def _poll(attempt: Callable[[], bool], name: str, timeout: float) -> None:
        """Call ``attempt`` until it succeeds, backing off, or raise TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        delay = _LOCK_POLL_FIRST
        while not attempt():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"lock {name!r} is held by another holder")
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, _LOCK_POLL_MAX)

    @contextmanager
    def _session_lock(
        self, take_sql: str, release_sql: str, params: dict[str, Any], name: str, timeout: float
    ) -> Iterator[None]:
        """A PostgreSQL advisory / MySQL ``GET_LOCK`` lock, held by one connection.

        The lock belongs to the database session: the connection stays checked
        out for the whole ``with`` block, and if the process dies the server
        closes the session and frees the lock (so ``ttl`` is not needed here).
        """
        with self._cursor() as cursor:

            def attempt() -> bool:
                cursor.execute(take_sql, params)
                row = cursor.fetchone()
                return bool(row and row[0])

            self._poll(attempt, name, timeout)
            try:
                yield
            finally:
                try:
                    cursor.execute(release_sql, params)
                    cursor.fetchall()
                except Exception as exc:
                    # _cursor closes this connection (never back to the pool still holding
                    # the lock); ending the session frees the lock on the server.
                    raise _LockReleaseFailed(
                        f"lock {name!r}: releasing it on {self._label} failed, so its connection was closed; "
                        "if the connection had died, the lock was lost while held"
                    ) from exc

    @contextmanager
    def _sqlite_lock(self, name: str, timeout: float, ttl: float) -> Iterator[None]:
        """A row in ``<prefix>locks``: taken if absent or expired, in one ``BEGIN IMMEDIATE``.

        SQLite's write lock makes the take atomic across processes; a holder
        that dies leaves its row, which the next taker replaces once ``ttl`` has
        passed.  Times are the wall clock, which every process on the host shares.
        """
        owner = uuid.uuid4().hex

        def attempt() -> bool:
            now = int(time.time() * 1_000_000)
            with self._cursor(transaction=True) as cursor:
                cursor.execute(self._sql_lock_expire, {"lock": name, "now": now})
                cursor.execute(self._sql_lock_take, {"name": name, "owner": owner, "expires_at": now + int(ttl * 1e6)})
                return int(cursor.rowcount) == 1

        self._poll(attempt, name, timeout)
        try:
            yield
        finally:
            with self._cursor() as cursor:
                cursor.execute(self._sql_lock_release, {"lock": name, "owner": owner})
