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
explicit ``BEGIN`` and ``COMMIT``.  The statements live in ``_sql_statements``
(the atomic primitives' in ``_sql_primitives``), the row conversion in
``_sql_rows``, engine set-up, timeouts, retries and error translation in
``_sql_engine``, locks in ``_sql_lock``.  See
``docs/sql.md`` for the schema, locks, timeouts and operational notes.
"""

from __future__ import annotations

import functools
import os
import re
import time
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from authkit.errors import ConfigurationError, NotFoundError, StorageError
from authkit.models import AuthToken, CleanupReport, SessionData
from authkit.storage._codec import (
    INT64_MAX,
    counter_bounds,
    counter_overflow,
    digest,
    format_counter,
    micros,
    optional_micros,
    optional_moment,
)
from authkit.storage._redact import redact_url
from authkit.storage.base import AuthStorage, Clock

try:
    import sqlalchemy as sa
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.engine import URL, Engine
except ImportError as _exc:  # pragma: no cover - SQLAlchemy is a runtime dependency
    raise ConfigurationError("SqlStorage needs SQLAlchemy 2: pip install authkit-sf") from _exc

from authkit.storage._sql_cleanup import CleanupSql
from authkit.storage._sql_engine import (
    DEFAULT_TIMEOUT,
    Runner,
    check_dialect,
    check_timeout,
    describe,
    install_connect_hooks,
    make_engine,
)
from authkit.storage._sql_lock import Lease, LeaseKeeper
from authkit.storage._sql_rows import (
    sealed_holder,
    session_from_row,
    session_params,
    text,
    token_from_row,
    token_rows,
)
from authkit.storage._sql_schema import MYSQL_DIALECTS, SCHEMA_VERSION, Tables
from authkit.storage._sql_statements import Statements

__all__ = ["SqlStorage", "SCHEMA_VERSION"]

T = TypeVar("T")

_PREFIX_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")


_IN_CHUNK = 500  # ids per "IN (...)" statement in bulk deletes
# PyMySQL sends bytes as hex, doubling them: a kv value above this size goes to
# MySQL in pieces, so 8 MiB fits the default 16 MiB max_allowed_packet.
_MYSQL_CHUNK = 1024 * 1024


def _rowcount(cursor: Any, sql: str, params: dict[str, Any]) -> int:
    cursor.execute(sql, params)
    return int(cursor.rowcount)


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


class SqlStorage(AuthStorage):
    """Storage in SQL tables named ``<prefix>tokens``, ``<prefix>sessions``, ``<prefix>kv``, ...

    ``url_or_engine`` is a URL (``sqlite:///path.db``, ``sqlite://``,
    ``postgresql://…``, ``mysql://…``, ``mariadb://…``) or an existing
    SQLAlchemy ``Engine`` on one of those drivers.  ``create_schema=False``
    expects the tables to exist already (e.g. made by ``authkit init``).
    ``timeout`` (seconds, default 30) bounds every wait: connecting, each
    statement, each read from the server, the wait for a pooled connection
    (see ``docs/sql.md``).  Other keyword arguments go to
    :func:`sqlalchemy.create_engine` (``pool_size``, ``max_overflow``,
    ``connect_args``, ...).

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
        timeout: float = DEFAULT_TIMEOUT,
        **engine_options: Any,
    ) -> None:
        super().__init__(clock=clock)
        if not isinstance(prefix, str):
            raise TypeError("prefix must be a str")
        if not _PREFIX_RE.fullmatch(prefix):
            raise ValueError("prefix must be 1-32 letters, digits or underscores, not starting with a digit")
        if not isinstance(create_schema, bool):
            raise TypeError("create_schema must be a bool")
        timeout = check_timeout(timeout)
        self._prefix = prefix
        in_memory = False
        if isinstance(url_or_engine, Engine):
            if engine_options:
                raise TypeError("engine options cannot be given together with an Engine")
            owns_engine = False
            engine = url_or_engine
            check_dialect(engine.url)
            if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
                # SQLAlchemy's default pool gives every thread its own, separate memory database.
                raise ConfigurationError("for in-memory SQLite pass the URL 'sqlite://', not an Engine")
            if engine not in _HOOKED:
                _HOOKED.add(engine)
                install_connect_hooks(engine, timeout)
        elif isinstance(url_or_engine, (str, URL)):
            owns_engine = True
            engine, in_memory = make_engine(url_or_engine, engine_options, timeout, create_file=create_schema)
        else:
            raise TypeError(f"url_or_engine must be a URL str or an Engine, not {type(url_or_engine).__name__}")
        self._engine = engine
        self._owns_engine = owns_engine
        self._in_memory = in_memory
        self._dialect_name = engine.dialect.name
        self._is_sqlite = self._dialect_name == "sqlite"
        self._is_mysql = self._dialect_name in MYSQL_DIALECTS
        self._is_postgresql = self._dialect_name == "postgresql"
        self._dbapi: Any = engine.dialect.dbapi
        self._label = describe(engine.url)
        self._tables = Tables(prefix, self._dialect_name)
        try:
            self._runner = Runner(engine, owns_engine=owns_engine, in_memory=in_memory, label=self._label)
            self._setup_schema(create_schema)
            self._sql = Statements(self._tables, engine.dialect)
        except BaseException:
            if owns_engine:
                engine.dispose()
            raise
        self._leases = LeaseKeeper(self)
        _LIVE.add(self)

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
        self._runner.close()
        self._leases.close()
        _LIVE.discard(self)
        if self._owns_engine:
            self._engine.dispose()

    def _after_fork(self) -> None:
        self._runner.after_fork()
        self._leases.after_fork()

    # -- running SQL --------------------------------------------------------------

    def _error(self, exc: BaseException, *, connecting: bool, disconnected: bool = False) -> StorageError:
        """The authkit error for a driver or pool failure (the caller chains ``exc``)."""
        return self._runner.error(exc, connecting=connecting, disconnected=disconnected)

    def _run(self, work: Callable[[Any], T], *, transaction: bool = False, idempotent: bool = True) -> T:
        """``work(cursor)`` on a pooled connection; see :meth:`Runner.run` for the retries."""
        return self._runner.run(work, transaction=transaction, idempotent=idempotent)

    def _is_integrity_error(self, exc: BaseException) -> bool:
        cause = exc.__cause__
        return self._dbapi is not None and isinstance(cause, self._dbapi.IntegrityError)

    # -- schema -------------------------------------------------------------------

    def _setup_schema(self, create: bool) -> None:
        meta = self._tables.meta
        try:
            with self._runner.serial:
                if create:
                    self._create_tables()
                with self._engine.connect() as conn:
                    if not sa.inspect(conn).has_table(meta.name):
                        raise ConfigurationError(
                            f"the authkit tables with prefix {self._prefix!r} do not exist in {self._label} "
                            "(a wrong database or prefix?); create them with `authkit init` "
                            "(flask authkit init, manage.py authkit_init; in code, create_schema=True)"
                        )
                    version = conn.execute(sa.select(meta.c.value).where(meta.c.name == "schema_version")).scalar()
        except sa_exc.SQLAlchemyError as exc:
            raise self._schema_error(exc) from exc
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
        self._runner.drain()  # the idle connections go back to the pool, which DDL uses
        try:
            with self._runner.serial:
                self._tables.metadata.drop_all(self._engine, checkfirst=True)
        except sa_exc.SQLAlchemyError as exc:
            raise self._schema_error(exc) from exc

    def _schema_error(self, exc: sa_exc.SQLAlchemyError) -> StorageError:
        """The authkit error for DDL and schema checks, which run through the engine, not the
        Runner: a connection that could not be made or was lost (a server that is down, a
        PgBouncer refusing the login) is "unavailable", anything else a plain storage error."""
        connecting = isinstance(exc, sa_exc.DBAPIError) and (
            bool(exc.connection_invalidated) or isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)))
        return self._error(exc, connecting=connecting)

    # -- tokens -------------------------------------------------------------------

    def _store_tokens(self, tokens: list[AuthToken]) -> None:
        rows = token_rows(tokens)
        try:
            self._write_tokens(self._sql.upsert_token, rows)
        except StorageError as exc:
            if not self._is_integrity_error(exc):
                raise
            # An access token is moving to another token id: take it from its old
            # holder in the same transaction.  Rare, so the common path stays one statement.
            self._write_tokens(self._sql.upsert_token, rows, release_digests=True)

    def _write_tokens(self, sql: str, rows: list[dict[str, Any]], release_digests: bool = False) -> int:
        def work(cursor: Any) -> int:
            if release_digests:
                cursor.executemany(
                    self._sql.clear_digest,
                    [{"digest": r["access_digest"], "keep": r["token_id"]} for r in rows if r["access_digest"]],
                )
            if len(rows) == 1:
                cursor.execute(sql, rows[0])
            else:
                cursor.executemany(sql, rows)
            return int(cursor.rowcount)

        return self._runner.run(work, transaction=len(rows) > 1 or release_digests)

    def _update_token(self, token: AuthToken) -> None:
        rows = token_rows([token])
        try:
            changed = self._write_tokens(self._sql.update_token, rows)
        except StorageError as exc:
            if not self._is_integrity_error(exc):
                raise
            changed = self._write_tokens(self._sql.update_token, rows, release_digests=True)
        # MySQL reports rows matched, not changed (SQLAlchemy's PyMySQL dialect sets
        # CLIENT_FOUND_ROWS), so an update to identical values still counts as found.
        if changed < 1:
            raise NotFoundError(f"no token with id {token.token_id!r}")

    # The single-statement helpers call the runner directly: they are every call's path.

    def _fetchone(self, sql: str, params: dict[str, Any]) -> Any:
        def work(cursor: Any) -> Any:
            cursor.execute(sql, params)
            return cursor.fetchone()

        return self._runner.run(work)

    def _fetchall(self, sql: str, params: dict[str, Any]) -> list[Any]:
        def work(cursor: Any) -> list[Any]:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

        return self._runner.run(work)

    def _execute(self, sql: str, params: dict[str, Any]) -> int:
        """Run one idempotent statement; its rowcount."""
        return self._runner.run(lambda cursor: _rowcount(cursor, sql, params))

    def _get_token(self, token_id: str) -> AuthToken | None:
        row = self._fetchone(self._sql.get_token, {"id": token_id})
        return None if row is None else token_from_row(row)

    def _get_token_by_access_token(self, access_token: str, now: datetime) -> AuthToken | None:
        row = self._access_token_row(access_token, now)
        return None if row is None else token_from_row(row)

    def _access_token_row(self, access_token: str, now: datetime) -> Any:
        """The row of the live token with this access token, or ``None``."""
        row = self._fetchone(self._sql.get_token_by_access, {"digest": digest(access_token), "now": micros(now)})
        # The digest is the index; the comparison of the token itself is exact.
        return None if row is None or row[2] != access_token else row

    def _get_sealed_token(self, token_id: str) -> AuthToken | None:
        row = self._fetchone(self._sql.get_token, {"id": token_id})
        return None if row is None else token_from_row(row, sealed_holder)

    def _get_sealed_token_by_access_token(self, access_token: str, now: datetime) -> AuthToken | None:
        row = self._access_token_row(access_token, now)
        return None if row is None else token_from_row(row, sealed_holder)

    def _delete_ids(self, kind: str, ids: list[str]) -> None:
        def work(cursor: Any) -> None:
            for start in range(0, len(ids), _IN_CHUNK):
                cursor.execute(*self._sql.in_list(self._sql.delete_in[kind], ids[start:start + _IN_CHUNK]))

        self._run(work, transaction=len(ids) > _IN_CHUNK)

    def _delete_tokens(self, token_ids: list[str]) -> None:
        self._delete_ids("tokens", token_ids)

    def _list_user_tokens(self, user_id: str) -> list[AuthToken]:
        return [token_from_row(row) for row in self._fetchall(self._sql.user_tokens, {"id": user_id})]

    # -- sessions -----------------------------------------------------------------

    def _store_sessions(self, sessions: list[SessionData]) -> None:
        rows = [session_params(s) for s in sessions]

        def work(cursor: Any) -> None:
            if len(rows) == 1:
                cursor.execute(self._sql.upsert_session, rows[0])
            else:
                cursor.executemany(self._sql.upsert_session, rows)

        self._runner.run(work, transaction=len(rows) > 1)

    def _get_session(self, session_id: str, now: datetime) -> SessionData | None:
        row = self._fetchone(self._sql.get_session, {"id": session_id, "now": micros(now)})
        return None if row is None else session_from_row(row)

    def _get_sealed_session(self, session_id: str, now: datetime) -> SessionData | None:
        row = self._fetchone(self._sql.get_session, {"id": session_id, "now": micros(now)})
        return None if row is None else session_from_row(row, sealed_holder)

    def _delete_sessions(self, session_ids: list[str]) -> None:
        self._delete_ids("sessions", session_ids)

    def _list_user_sessions(self, user_id: str, now: datetime) -> list[SessionData]:
        rows = self._fetchall(self._sql.user_sessions, {"id": user_id, "now": micros(now)})
        return [session_from_row(row) for row in rows]

    def _count_active_sessions(self, now: datetime) -> int:
        return int(self._fetchone(self._sql.count_sessions, {"now": micros(now)})[0])

    # -- key-value ------------------------------------------------------------------

    def _store_kv(self, key: str, value: bytes, expires_at: datetime | None) -> None:
        expires = optional_micros(expires_at)
        if self._is_mysql and len(value) > _MYSQL_CHUNK:

            def work(cursor: Any) -> None:
                cursor.execute(self._sql.upsert_kv, {"name": key, "value": value[:_MYSQL_CHUNK], "expires_at": expires})
                for start in range(_MYSQL_CHUNK, len(value), _MYSQL_CHUNK):
                    cursor.execute(self._sql.append_kv, {"id": key, "chunk": value[start:start + _MYSQL_CHUNK]})

            self._run(work, transaction=True)
            return
        self._execute(self._sql.upsert_kv, {"name": key, "value": value, "expires_at": expires})

    def _store_kv_entries(self, entries: list[tuple[str, bytes, datetime | None]]) -> None:
        # Values too big for one MySQL packet go one by one (each its own transaction).
        big = [e for e in entries if self._is_mysql and len(e[1]) > _MYSQL_CHUNK]
        rows = [{"name": k, "value": v, "expires_at": optional_micros(e)} for k, v, e in entries
                if not (self._is_mysql and len(v) > _MYSQL_CHUNK)]
        if rows:
            self._run(lambda cursor: cursor.executemany(self._sql.upsert_kv, rows), transaction=True)
        for key, value, expires_at in big:
            self._store_kv(key, value, expires_at)

    def _get_kv_entry(self, key: str, now: datetime) -> tuple[bytes, datetime | None] | None:
        row = self._fetchone(self._sql.get_kv_entry, {"id": key, "now": micros(now)})
        return None if row is None else (bytes(row[0]), optional_moment(row[1]))

    def _delete_kv(self, key: str) -> None:
        self._execute(self._sql.delete_kv, {"id": key})

    def _list_kv_keys(self, prefix: str, now: datetime) -> list[str]:
        params: dict[str, Any] = {"now": micros(now)}
        if not prefix:
            sql = self._sql.kv_keys_all
        else:
            params["low"] = prefix
            high = _next_prefix(prefix)
            if high is None:
                sql = self._sql.kv_keys_from
            else:
                sql = self._sql.kv_keys_range
                params["high"] = high
        keys = [text(row[0]) for row in self._fetchall(sql, params)]
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
            # Not idempotent: run again after a lost connection, a write that did land
            # would answer False.  A deadlock rolled it back, so that is retried.
            return self._run(lambda cursor: _rowcount(cursor, sql, params) > 0, idempotent=False)
        except StorageError as exc:
            if self._sql.primitives.mysql and self._is_integrity_error(exc):
                return False  # MySQL's guard refused: a live row stands
            raise

    def _create_session(self, session: SessionData, now: datetime) -> bool:
        params = session_params(session)
        params["now"] = micros(now)
        return self._write_unless_live(self._sql.primitives.create_session, params)

    def _replace_session(self, session: SessionData, now: datetime) -> bool:
        params = session_params(session)
        params["id"] = params.pop("session_id")
        params["now"] = micros(now)
        return self._execute(self._sql.primitives.replace_session, params) > 0

    def _touch_session(
        self, session_id: str, expires_at: datetime | None, last_activity: datetime, now: datetime
    ) -> bool:
        params = {"id": session_id, "expires_at": optional_micros(expires_at),
                  "last_activity": micros(last_activity), "now": micros(now)}
        return self._execute(self._sql.primitives.touch_session, params) > 0

    def _touch_session_ip(
        self, session_id: str, expires_at: datetime | None, last_activity: datetime, ip_address: str | None,
        now: datetime,
    ) -> bool:
        params = {"id": session_id, "expires_at": optional_micros(expires_at),
                  "last_activity": micros(last_activity), "ip_address": ip_address, "now": micros(now)}
        return self._execute(self._sql.primitives.touch_session_ip, params) > 0

    def _delete_user_sessions(self, user_id: str, keep: str | None) -> int:
        if keep is None:
            sql, params = self._sql.primitives.delete_user_sessions, {"user": user_id}
        else:
            sql, params = self._sql.primitives.delete_user_sessions_keep, {"user": user_id, "keep": keep}
        # Not idempotent as to the count it returns: no re-run after a lost connection.
        return max(self._run(lambda cursor: _rowcount(cursor, sql, params), idempotent=False), 0)

    def _delete_user_tokens(self, user_id: str) -> int:
        params = {"user": user_id}
        return max(self._run(lambda cursor: _rowcount(cursor, self._sql.primitives.delete_user_tokens, params),
                             idempotent=False), 0)

    def _add_kv(self, key: str, value: bytes, expires_at: datetime | None, now: datetime) -> bool:
        params = {"name": key, "value": value, "expires_at": optional_micros(expires_at), "now": micros(now)}
        if not (self._is_mysql and len(value) > _MYSQL_CHUNK):
            return self._write_unless_live(self._sql.primitives.add_kv, params)
        # Too big for one MySQL packet: the first piece decides, in a transaction
        # with the rest, so no reader ever sees a partial value.
        params["value"] = value[:_MYSQL_CHUNK]

        def work(cursor: Any) -> None:
            cursor.execute(self._sql.primitives.add_kv, params)
            for start in range(_MYSQL_CHUNK, len(value), _MYSQL_CHUNK):
                cursor.execute(self._sql.append_kv, {"id": key, "chunk": value[start:start + _MYSQL_CHUNK]})

        try:
            self._run(work, transaction=True, idempotent=False)
            return True
        except StorageError as exc:
            if self._is_integrity_error(exc):
                return False
            raise

    def _incr_kv(self, key: str, amount: int, expires_at: datetime | None, now: datetime) -> int:
        low, high = counter_bounds(amount)
        params = {"name": key, "value": format_counter(amount), "expires_at": optional_micros(expires_at),
                  "now": micros(now), "amount": amount, "lo": low, "hi": high}

        def work(cursor: Any) -> tuple[Any, ...] | int | None:
            cursor.execute(self._sql.primitives.incr_kv, params)
            if self._sql.primitives.mysql:
                # LAST_INSERT_ID(total) arrives as lastrowid, unsigned.  A plain insert sets
                # none (0): the counter is then `amount`; a changed row (2) always sets it.
                reported = int(cursor.lastrowid or 0)
                if reported == 0 and int(cursor.rowcount) != 2:
                    return amount
                return reported - 2**64 if reported > INT64_MAX else reported
            row: tuple[Any, ...] | None = cursor.fetchone()
            return row

        try:
            # Never re-run after a lost connection: the first addition may have landed.
            result = self._run(work, idempotent=False)
            if isinstance(result, int):
                return result
            row = result
        except StorageError as exc:
            if self._sql.primitives.mysql and self._is_integrity_error(exc):
                raise counter_overflow(key, amount) from None
            raise
        if row is None:  # the WHERE refused: not a counter, or no room for the addition
            raise counter_overflow(key, amount)
        return int(bytes(row[0]))

    def _touch_kv(self, key: str, expires_at: datetime | None, now: datetime) -> bool:
        params = {"id": key, "expires_at": optional_micros(expires_at), "now": micros(now)}
        return self._execute(self._sql.primitives.touch_kv, params) > 0

    # -- maintenance ----------------------------------------------------------------

    @functools.cached_property
    def _cleanup_sql(self) -> CleanupSql:
        # Built on first use: whether PostgreSQL has TID range scans (14+) is known
        # once a connection has been made.
        version = self._engine.dialect.server_version_info or (0,)
        return CleanupSql(self._sql, self._tables, tid_ranges=self._is_postgresql and version >= (14,))

    def _cleanup_batch(self, kind: str, now: datetime, limit: int, cursor: Any) -> tuple[CleanupReport, Any]:
        # Each step its own (autocommitted) statements: every lock they take is
        # released before the next step starts.  See _sql_cleanup for the walk.
        deleted, cursor = self._cleanup_sql.step(self._run, kind, micros(now), limit, cursor)
        return CleanupReport(**{kind: deleted}), cursor

    def _stats(self, now: datetime) -> dict[str, int]:
        params = {"now": micros(now)}

        def work(cursor: Any) -> dict[str, int]:
            stats: dict[str, int] = {}
            for name in ("tokens", "sessions", "kv"):
                cursor.execute(self._sql.stats[name], params)
                total, expired = cursor.fetchone()
                stats[f"{name}_live"] = int(total) - int(expired)
                stats[f"{name}_expired"] = int(expired)
            return stats

        return self._run(work)

    def _id_page(self, kind: str, cursor_id: str | None, limit: int) -> tuple[list[str], str | None]:
        first, after = self._sql.id_page[kind]
        if cursor_id is None:
            rows = self._fetchall(first, {"limit": limit})
        else:
            rows = self._fetchall(after, {"limit": limit, "cursor": cursor_id})
        ids = [text(row[0]) for row in rows]
        return ids, (ids[-1] if len(ids) == limit else None)

    def _record_page(self, kind: str, cursor: str | None, limit: int, now: datetime | None) -> list[Any]:
        first, after = self._sql.record_page[kind]
        params: dict[str, Any] = {"limit": limit}
        if now is not None:
            params["now"] = micros(now)
        if cursor is not None:
            params["cursor"] = cursor
        return self._fetchall(first if cursor is None else after, params)

    def _token_page(self, cursor: str | None, limit: int) -> tuple[list[AuthToken], str | None]:
        tokens = [token_from_row(row) for row in self._record_page("tokens", cursor, limit, None)]
        return tokens, (tokens[-1].token_id if len(tokens) == limit else None)

    def _session_page(self, cursor: str | None, limit: int, now: datetime) -> tuple[list[SessionData], str | None]:
        sessions = [session_from_row(row) for row in self._record_page("sessions", cursor, limit, now)]
        return sessions, (sessions[-1].session_id if len(sessions) == limit else None)

    def _kv_page(
        self, after: str | None, limit: int, now: datetime
    ) -> tuple[list[tuple[str, bytes, datetime | None]], str | None]:
        rows = self._record_page("kv", after, limit, now)
        entries = [(text(row[0]), bytes(row[1]), optional_moment(row[2])) for row in rows]
        return entries, (entries[-1][0] if len(entries) == limit else None)

    def _token_id_page(self, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        return self._id_page("tokens", cursor, limit)

    def _session_id_page(self, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        return self._id_page("sessions", cursor, limit)

    # -- lock (see _sql_lock) ----------------------------------------------------------

    def _drop_old_copies(self) -> None:
        # The WAL still holds the pages as they were before a rewrite (plaintext,
        # before `authkit encrypt`) until a checkpoint copies the new ones over
        # them (secure_delete zeroes what they freed) and TRUNCATE empties it.
        # Readers in the middle of a transaction can make it partial: best effort.
        if self._is_sqlite and not self._in_memory:
            self._run(lambda cursor: cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())

    def _try_lock(self, name: str, ttl: float) -> Lease | None:
        return self._leases.try_take(name, ttl)

    def _release_lock(self, name: str, handle: Any) -> None:
        self._leases.release(handle)
