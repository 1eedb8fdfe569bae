"""How ``SqlStorage`` talks to its database: the engine, bounded waits, retries and errors.

``make_engine()`` builds a SQLAlchemy engine whose every wait is bounded by one
``timeout`` (seconds, default 30): connecting, each read and write on the
socket (a client-side deadline, so a stalled network or frozen server is
noticed even when nothing is closed), each statement on the server, and the
wait for a pooled connection.  ``Runner.run()`` runs a unit of work on a pooled
DBAPI connection in one round trip per statement (no pre-ping): a connection
found dead when used is replaced and an idempotent unit re-run once on a fresh
one; a deadlock or serialization failure is retried (the server rolled the
work back); everything else leaves as an ``authkit.errors`` exception with the
driver's as ``__cause__``.

    engine, in_memory = make_engine("postgresql://app@db/app", {}, timeout=30)
    runner = Runner(engine, owns_engine=True, in_memory=in_memory, label="PostgreSQL at db/app")

    def work(cursor):
        cursor.execute("DELETE FROM t WHERE expires_at <= %(now)s", {"now": now})
        return cursor.rowcount

    deleted = runner.run(work)                  # retried on a deadlock, or once on a dead connection
"""

from __future__ import annotations

import inspect
import os
import random
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import StaticPool

from authkit.errors import ConfigurationError, StorageError, StorageUnavailableError
from authkit.storage import _sql_pgbouncer
from authkit.storage._private_file import create_private_file
from authkit.storage._redact import url_secrets
from authkit.storage._sql_schema import MYSQL_DIALECTS

__all__ = ["DEFAULT_TIMEOUT", "Runner", "check_dialect", "check_timeout", "describe", "install_connect_hooks",
           "make_engine"]

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0
_SQLITE_MMAP_BYTES = 256 * 1024 * 1024
# Transient conflicts: the server rolled the work back, so running it again is always safe.
_CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock (PostgreSQL)
_CONFLICT_MYSQL_ERRORS = frozenset({1213})  # deadlock found when trying to get lock
_CONFLICT_ATTEMPTS = 5
# A statement the server gave up on after the timeout: the server is overloaded, not the call wrong.
_TIMEOUT_SQLSTATES = frozenset({"57014"})  # query_canceled (statement_timeout)
_TIMEOUT_MYSQL_ERRORS = frozenset({1205, 3024, 1969})  # lock wait timeout, max_execution_time (MySQL, MariaDB)

# Which driver each URL scheme uses, and the extra that installs it.
_DRIVERS = {
    "sqlite": ("sqlite", ("", "pysqlite"), None),
    "postgresql": ("postgresql+psycopg", ("", "psycopg"), "postgres"),
    "postgres": ("postgresql+psycopg", ("", "psycopg"), "postgres"),
    "mysql": ("mysql+pymysql", ("", "pymysql"), "mysql"),
    "mariadb": ("mysql+pymysql", ("", "pymysql"), "mysql"),
}


def check_dialect(url: URL) -> tuple[str, str | None]:
    """The driver name SqlStorage uses for ``url`` and the extra that installs it."""
    backend, _, driver = url.drivername.partition("+")
    known = _DRIVERS.get(backend)
    if known is None:
        raise ConfigurationError(f"SqlStorage supports sqlite, postgresql, mysql and mariadb URLs, not {backend!r}")
    drivername, drivers, extra = known
    if driver not in drivers:
        runs = drivername.partition("+")[2] or "sqlite3"
        raise ConfigurationError(f"SqlStorage runs {backend} on {runs}, not {driver!r}")
    return drivername, extra


def describe(url: URL) -> str:
    """A label for messages: the server, never the password."""
    if url.get_backend_name() == "sqlite":
        return f"SQLite {url.database or ':memory:'}"
    host = url.host or "localhost"
    port = f":{url.port}" if url.port else ""
    kind = "PostgreSQL" if url.get_backend_name() == "postgresql" else "MySQL"
    return f"{kind} at {host}{port}/{url.database or ''}"


def _check_sqlite_directory(database: str) -> None:
    """SQLite creates a missing file but not a missing directory: say which, before it says
    "unable to open database file" (a configuration mistake, not a server that is down)."""
    directory = os.path.dirname(os.path.abspath(database))
    if not os.path.isdir(directory):
        raise ConfigurationError(f"the SQLite database's directory {directory} does not exist; create it first")


def check_timeout(timeout: object) -> float:
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
        raise TypeError("timeout must be a number of seconds")
    if not 0 < timeout <= 24 * 3600:
        raise ValueError("timeout must be > 0 and at most a day")
    return float(timeout)


def make_engine(url_or_str: str | URL, options: dict[str, Any], timeout: float,
                create_file: bool = True) -> tuple[Engine, bool]:
    """A new engine for the URL and whether it is an in-memory SQLite database.

    ``options`` go to :func:`sqlalchemy.create_engine` and win over the defaults
    set here (``connect_args`` are merged key by key).  Without ``create_file`` a
    SQLite file that does not exist is an error, not a new empty database.
    """
    if isinstance(url_or_str, str):
        try:
            url = sa.engine.make_url(url_or_str)
        except (sa_exc.ArgumentError, ValueError):
            # "from None": SQLAlchemy's message would repeat the URL, password included.
            raise ConfigurationError("the storage URL cannot be parsed; e.g. sqlite:///authkit.db") from None
    else:
        url = url_or_str
    drivername, extra = check_dialect(url)
    url = url.set(drivername=drivername)
    settings: dict[str, Any] = {
        # No pool_pre_ping: it costs a round trip per call.  A connection found
        # dead when used is replaced by Runner.run instead.
        "hide_parameters": True,  # SQLAlchemy's messages would otherwise quote tokens
        "isolation_level": "AUTOCOMMIT",
        "pool_reset_on_return": None,  # autocommit: nothing to roll back on return
    }
    options = dict(options)
    connect_args: dict[str, Any] = dict(options.pop("connect_args", {}))
    in_memory = False
    if drivername == "sqlite":
        settings["paramstyle"] = "named"
        connect_args.setdefault("check_same_thread", False)
        if url.database in (None, "", ":memory:"):
            # One connection, kept for the storage's life: the database lives in it.
            in_memory = True
            settings["poolclass"] = StaticPool
        elif not url.database.startswith("file:"):
            _check_sqlite_directory(url.database)
            if not create_file and not os.path.exists(url.database):
                # Connecting would create it: a typo in the path would leave an empty file behind.
                raise ConfigurationError(
                    f"the SQLite database {url.database} does not exist; create it with `authkit init` "
                    "(in code, create_schema=True)"
                )
            create_private_file(url.database)  # 0600, and so its -wal and -shm too
    else:
        settings["pool_recycle"] = 3600
        settings["pool_timeout"] = timeout  # waiting for a pooled connection
        whole = max(1, round(timeout))
        if drivername.startswith("postgresql"):
            connect_args.setdefault("connect_timeout", max(2, whole))  # libpq: whole seconds, at least 2
            # The server gives up on a statement (and on a transaction left idle) after
            # the timeout; keepalives and tcp_user_timeout notice a peer that vanished.
            ms = int(timeout * 1000)
            server_options = (f"-c statement_timeout={ms} -c idle_in_transaction_session_timeout={ms} "
                              f"{_sql_pgbouncer.MARKER_OPTION}")
            # Yours come last: a later "-c" wins, so options you pass override these.
            connect_args["options"] = (server_options + " " + connect_args.get("options", "")).strip()
            connect_args.setdefault("keepalives", 1)
            connect_args.setdefault("keepalives_idle", max(1, whole // 3))
            connect_args.setdefault("keepalives_interval", max(1, whole // 9))
            connect_args.setdefault("keepalives_count", 3)
            connect_args.setdefault("tcp_user_timeout", ms)
        else:
            # PyMySQL: socket timeouts, so a stalled server or network raises at once.
            connect_args.setdefault("connect_timeout", timeout)
            connect_args.setdefault("read_timeout", timeout)
            connect_args.setdefault("write_timeout", timeout)
    settings.update(options)
    settings["connect_args"] = connect_args
    try:
        engine = sa.create_engine(url, **settings)
    except ImportError as exc:
        message = f"{url.get_backend_name()}:// needs its driver: pip install 'authkit-sf[{extra}]'"
        raise ConfigurationError(message) from exc
    except sa_exc.ArgumentError as exc:
        raise TypeError(f"bad engine option: {exc}") from None
    if drivername.startswith("postgresql"):
        _bound_psycopg_reads(engine, timeout)
        event.listen(engine, "connect", _sql_pgbouncer.adapt, insert=True)  # behind PgBouncer? (_sql_pgbouncer.py)
    install_connect_hooks(engine, timeout)
    return engine, in_memory


def _bound_psycopg_reads(engine: Engine, timeout: float) -> None:
    """Make psycopg give up waiting for the server after ``timeout`` seconds.

    libpq has no read timeout, and neither statement_timeout (the server's) nor
    TCP keepalives (answered by any live middlebox) help when the server or the
    network stalls without closing anything.  psycopg's own wait loop takes a
    timeout; connections made by this subclass pass it on every wait.
    """
    import psycopg

    parameters = inspect.signature(psycopg.Connection.wait).parameters
    if "interval" not in parameters or "timeout" not in parameters:  # pragma: no cover
        # Before psycopg 3.3.6 wait() had no read timeout (3.1's "timeout" is the poll
        # interval): setup.cfg asks for 3.3.6, this only keeps an older install working.
        return
    grace = timeout + 2.0  # the server's own statement_timeout should answer first

    wait = psycopg.Connection.wait  # called directly: super() costs a lookup on every statement

    class _BoundedConnection(psycopg.Connection[Any]):
        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            return wait(self, gen, interval, grace if timeout is None else timeout)

    @event.listens_for(engine, "do_connect")
    def connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        return _sql_pgbouncer.connect(_BoundedConnection.connect, cargs, cparams)


def install_connect_hooks(engine: Engine, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Session settings every new connection gets (also on an Engine passed in)."""
    name = engine.dialect.name
    in_memory = engine.url.database in (None, "", ":memory:")

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if name == "sqlite":
                # A writer waits up to the timeout for another process's write lock.
                cursor.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
                # Overwrite deleted and replaced rows with zeros, so a token or a
                # plaintext record replaced by `authkit encrypt` does not linger in
                # free pages (Debian builds SQLite this way; other builds do not).
                cursor.execute("PRAGMA secure_delete = ON")
                if not in_memory:
                    # WAL lets readers and a writer work at once.
                    cursor.execute("PRAGMA journal_mode = WAL")
                    # NORMAL is durable across application crashes in WAL mode; only an OS
                    # crash or power loss may undo the last commits.
                    cursor.execute("PRAGMA synchronous = NORMAL")
                    # Read through the OS page cache instead of copying pages into
                    # SQLite's small (2 MiB) private cache: random lookups in a large
                    # table stay memory-speed.
                    cursor.execute(f"PRAGMA mmap_size = {_SQLITE_MMAP_BYTES}")
            elif name in MYSQL_DIALECTS:
                # Strict mode turns the token upsert's guard into an error instead of a
                # silent coercion.
                cursor.execute(
                    "SET SESSION sql_mode = IF(@@SESSION.sql_mode = '', 'STRICT_ALL_TABLES', "
                    "CONCAT(@@SESSION.sql_mode, ',STRICT_ALL_TABLES'))"
                )
        finally:
            cursor.close()

    event.listen(engine, "connect", on_connect)


def _close_quietly(cursor: Any) -> None:
    if cursor is not None:
        try:
            cursor.close()
        except Exception:  # noqa: S110 - the connection is going back or away anyway
            pass


class _DirectConnection:
    """The pool-connection interface ``Runner`` uses, on a bare DBAPI connection."""

    def __init__(self, dbapi_connection: Any) -> None:
        self.dbapi_connection = dbapi_connection

    def invalidate(self, exc: BaseException | None = None) -> None:
        """An in-memory database cannot be reconnected: keep the connection."""

    def close(self) -> None:
        """Nothing to return: the pool keeps the connection until the engine is disposed."""


class ConnectionLost(StorageError):
    """Raised inside a unit of work to say its connection must be closed, not pooled."""


class _StaleConnectionError(StorageUnavailableError):
    """A pooled connection was found dead when used (not timed out): worth one more try."""


class Runner:
    """Runs units of work on an engine's pooled DBAPI connections (see the module docstring)."""

    def __init__(self, engine: Engine, *, owns_engine: bool, in_memory: bool, label: str) -> None:
        self.engine = engine
        self.owns_engine = owns_engine
        self.label = label
        self.dbapi: Any = engine.dialect.dbapi
        # Every secret of the URL (user-info and ?password=), masked out of messages.
        self.secrets = url_secrets(engine.url.render_as_string(hide_password=False))
        self.is_mysql = engine.dialect.name in MYSQL_DIALECTS
        self.begin = "BEGIN IMMEDIATE" if engine.dialect.name == "sqlite" else "BEGIN"
        self.closed = False
        # In-memory SQLite is one connection that lives as long as the engine: use it
        # directly (under `_lock`) instead of checking it out of the pool every time.
        self._lock: threading.RLock | None = threading.RLock() if in_memory else None
        self.direct: _DirectConnection | None = None
        self.before_call: Callable[[], None] | None = None  # e.g. the lock guard; raises to refuse
        self.borrowed = not owns_engine and not in_memory
        # Connections between calls, still checked out of SQLAlchemy's pool, each with a
        # cursor kept open for the next call and the time.monotonic() after which it is
        # replaced (the pool's recycle time): SQLAlchemy's checkout and checkin, and a new
        # cursor, cost more than a short query.  At most the pool's steady size are kept;
        # SQLAlchemy's pool still bounds how many exist (pool_size + max_overflow).
        self._idle: list[tuple[Any, Any, float]] = []
        pool: Any = engine.pool
        self._keep = pool.size() if hasattr(pool, "size") and not self.borrowed else 0
        recycle = getattr(pool, "_recycle", -1)
        self._recycle = float(recycle) if recycle and recycle > 0 else float("inf")
        if in_memory:
            fairy = engine.raw_connection()
            self.direct = _DirectConnection(fairy.dbapi_connection)
            fairy.close()
            self._keep = 1

    @property
    def serial(self) -> AbstractContextManager[Any]:
        """Held around work outside ``run`` (DDL) on an in-memory database: one thread at a time."""
        return self._lock if self._lock is not None else nullcontext()

    def close(self) -> None:
        self.closed = True
        self.drain()

    def after_fork(self) -> None:
        # The child must not talk on the parent's sockets: forget them without
        # closing them (closing would end the parent's sessions too).  An
        # in-memory SQLite database is the connection itself, so it is kept: the
        # child has its own copy of the memory.
        if self.direct is None:
            self.drain(close=False)
            self.engine.dispose(close=False)
        else:
            self._lock = threading.RLock()

    # -- running ------------------------------------------------------------------

    def run(self, work: Callable[[Any], T], *, transaction: bool = False, idempotent: bool = True) -> T:
        """``work(cursor)`` on a pooled connection (inside BEGIN/COMMIT with ``transaction``).

        A deadlock or serialization failure runs it again (a few times, with jittered
        backoff); a connection that turns out dead runs it once more on a fresh
        connection if ``idempotent`` (a statement that may have been applied before
        the connection died must not run twice, e.g. an increment).
        """
        try:
            return self._attempt(work, transaction)
        except StorageError as exc:
            return self._rerun(exc, work, transaction, idempotent)

    def _rerun(self, exc: StorageError, work: Callable[[Any], T], transaction: bool, idempotent: bool) -> T:
        """After a failed attempt: run ``work`` again while the failure says that is safe."""
        conflicts = 0
        reconnected = False
        while True:
            cause = exc.__cause__
            if cause is not None and self._is_conflict(cause) and conflicts < _CONFLICT_ATTEMPTS - 1:
                conflicts += 1
                time.sleep(random.uniform(0.001, 0.004) * 2**conflicts)
            elif idempotent and not reconnected and isinstance(exc, _StaleConnectionError):
                reconnected = True
            else:
                raise exc
            try:
                return self._attempt(work, transaction)
            except StorageError as again:
                exc = again

    def _attempt(self, work: Callable[[Any], T], transaction: bool) -> T:
        # The hot path of every call: the checkout and checkin of an idle connection
        # are written out here, and exceptions cost nothing until one is raised.
        if self.closed:
            raise StorageError("the storage is closed")
        if self.before_call is not None:
            self.before_call()
        lock = self._lock
        if lock is not None:
            lock.acquire()
        try:
            try:
                connection, cursor, deadline = self._idle.pop()
            except IndexError:  # none idle (or another thread took the last one)
                connection, cursor, deadline = self._checkout()
            else:
                if deadline <= time.monotonic():  # old: SQLAlchemy's pool replaces it
                    self._release(connection, cursor)
                    connection, cursor, deadline = self._checkout()
            began = False
            try:
                if cursor is None:
                    cursor = connection.dbapi_connection.cursor()
                if transaction:
                    cursor.execute(self.begin)
                    began = True
                result = work(cursor)
                if began:
                    cursor.execute("COMMIT")
            except BaseException as exc:
                raise self._failed(exc, connection, cursor, began, deadline) from exc
            if len(self._idle) < self._keep:
                self._idle.append((connection, cursor, deadline))
            else:
                self._release(connection, cursor)
            return result
        finally:
            if lock is not None:
                lock.release()

    # -- connections --------------------------------------------------------------

    def _checkout(self) -> tuple[Any, Any, float]:
        """A connection from SQLAlchemy's pool (none of ours is idle), its cursor not made yet."""
        if self.direct is not None:
            return self.direct, None, float("inf")
        try:
            connection = self.engine.raw_connection()
        except ConfigurationError:
            raise  # the server is there, and says it cannot work (e.g. a pooler's mode)
        except Exception as exc:
            raise self.error(exc, connecting=True) from exc
        # SQLAlchemy checked its age just now; ours starts here.
        deadline = time.monotonic() + self._recycle
        if self.borrowed:
            try:
                self._autocommit(connection)
            except BaseException as exc:
                raise self._failed(exc, connection, None, False, deadline) from exc
        return connection, None, deadline

    def _checkin(self, connection: Any, cursor: Any, deadline: float) -> None:
        """Keep the connection (and its cursor) for the next call, or give it back."""
        if connection.dbapi_connection is not None and len(self._idle) < self._keep:
            self._idle.append((connection, cursor, deadline))
        else:
            self._release(connection, cursor)

    def _release(self, connection: Any, cursor: Any) -> None:
        """Give a connection back to SQLAlchemy's pool (a borrowed engine's in its own mode)."""
        _close_quietly(cursor)
        if connection is self.direct:
            return
        if self.borrowed and connection.dbapi_connection is not None:
            try:
                self.engine.dialect.reset_isolation_level(connection.dbapi_connection)
            except Exception:
                connection.invalidate()
        connection.close()

    def drain(self, *, close: bool = True) -> None:
        """Give every idle connection back to SQLAlchemy's pool (or, after a fork, forget them)."""
        idle, self._idle = self._idle, []
        if close:
            for connection, cursor, _ in idle:
                self._release(connection, cursor)

    def _autocommit(self, connection: Any) -> None:
        # Someone else's engine: its connections are not in autocommit mode, which the
        # statements here rely on; switch for this use.
        dbapi_connection = connection.dbapi_connection
        assert dbapi_connection is not None
        self.engine.dialect.set_isolation_level(dbapi_connection, "AUTOCOMMIT")

    def _failed(self, exc: BaseException, connection: Any, cursor: Any, began: bool, deadline: float) -> BaseException:
        """The exception to raise for ``exc``; the connection is checked in, or invalidated if it broke."""
        disconnected = isinstance(exc, ConnectionLost) or self.is_disconnect(exc, connection.dbapi_connection, cursor)
        if began and not disconnected:
            try:
                cursor.execute("ROLLBACK")
            except Exception:
                disconnected = True
        _close_quietly(cursor)  # in whatever state the failure left it: the next call makes a new one
        if disconnected:
            self._invalidate(connection, exc)
        self._checkin(connection, None, deadline)
        driver_error = self.dbapi is not None and isinstance(exc, self.dbapi.Error)
        if not (isinstance(exc, sa_exc.SQLAlchemyError) or driver_error):
            return exc
        error = self.error(exc, connecting=False, disconnected=disconnected)
        if disconnected and not self._timed_out(exc) and not isinstance(exc, ConnectionLost):
            # Most likely a stale connection: the server restarted or dropped it while
            # it sat in the pool.
            error = _StaleConnectionError(str(error))
        return error

    def _invalidate(self, connection: Any, exc: BaseException) -> None:
        if self.direct is not None:
            return
        # Like SQLAlchemy's own disconnect handling: every pooled connection made
        # before this moment is suspect (a restarted server dropped them all) and is
        # replaced at its next checkout instead of failing one call each.
        pool: Any = self.engine.pool
        try:
            pool._invalidate(connection, exc if isinstance(exc, Exception) else None)
        except AttributeError:  # pragma: no cover - a pool without SQLAlchemy's private hook
            connection.invalidate(exc if isinstance(exc, Exception) else None)
        self.drain()  # the idle ones are as old: SQLAlchemy replaces them at their next checkout

    # -- errors -------------------------------------------------------------------

    def is_disconnect(self, exc: BaseException, connection: Any, cursor: Any) -> bool:
        if self.dbapi is None or not isinstance(exc, self.dbapi.Error):
            return False
        if self._timed_out(exc):
            return True
        try:
            return bool(self.engine.dialect.is_disconnect(exc, connection, cursor))
        except Exception:
            return False

    def _timed_out(self, exc: BaseException) -> bool:
        """Whether the client gave up waiting (the connection's state is then unknown)."""
        if type(exc).__name__ == "_WaitTimeout":  # psycopg's wait loop (see _bound_psycopg_reads)
            return True
        return self.is_mysql and bool(exc.args) and exc.args[0] == 2013 and "timed out" in str(exc)

    def _code(self, orig: BaseException) -> str | int | None:
        code = getattr(orig, "sqlstate", None)
        if code is None and orig.args and isinstance(orig.args[0], int):
            code = orig.args[0]  # a MySQL error number
        return code

    def _is_conflict(self, exc: BaseException) -> bool:
        orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
        code = self._code(orig)
        return code in _CONFLICT_SQLSTATES or (self.is_mysql and code in _CONFLICT_MYSQL_ERRORS)

    def error(self, exc: BaseException, *, connecting: bool, disconnected: bool = False) -> StorageError:
        """The authkit error for a driver or pool failure (the caller chains ``exc``)."""
        orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
        if isinstance(exc, sa_exc.TimeoutError):
            # The server is fine; this process asked for more connections at once than
            # the pool may open.  Say what to size.
            pool: Any = self.engine.pool
            size = "the pool"
            if hasattr(pool, "size"):
                size = f"pool_size={pool.size()}, max_overflow={pool._max_overflow}"
            return StorageError(
                f"{self.label}: no pooled connection became free within the pool timeout ({size}): "
                "more threads use the storage at once than the pool allows; raise pool_size/max_overflow "
                "(SqlStorage(url, pool_size=..., max_overflow=...)) or lower the concurrency"
            )
        dbapi = self.dbapi
        code = self._code(orig)
        timed_out = (
            self._timed_out(orig) or code in _TIMEOUT_SQLSTATES or (self.is_mysql and code in _TIMEOUT_MYSQL_ERRORS)
        )
        unavailable = (
            connecting
            or disconnected
            or timed_out
            or isinstance(exc, (sa_exc.DisconnectionError, OSError))
            or (dbapi is not None and isinstance(orig, dbapi.InterfaceError))
        )
        detail = type(orig).__name__ + (f" [{code}]" if code else "")
        if unavailable:
            if timed_out:
                return StorageUnavailableError(f"{self.label} did not answer within the timeout: {detail}")
            # Connection errors name host, port and user, never data; keep their first line.
            first = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
            for secret in self.secrets:
                first = first.replace(secret, "***")
            message = f"{self.label} is unavailable: {detail}" + (f": {first}" if first else "")
            return StorageUnavailableError(message)
        # Other messages may quote the data (a token, a value): name the error only.
        return StorageError(f"{self.label} failed: {detail}")
