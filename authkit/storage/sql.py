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
explicit ``BEGIN`` and ``COMMIT``.  Engine set-up, timeouts, retries and
error translation live in ``_sql_engine``, locks in ``_sql_lock``.  See
``docs/sql.md`` for the schema, locks, timeouts and operational notes.
"""

from __future__ import annotations

import os
import re
import time
import weakref
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, TypeVar

from authkit.errors import ConfigurationError, NotFoundError, StorageError
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
from authkit.storage._redact import redact_url
from authkit.storage.base import CLEANUP_KINDS, AuthStorage, Clock

try:
    import sqlalchemy as sa
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.dialects import mysql as sa_mysql
    from sqlalchemy.dialects import postgresql as sa_postgresql
    from sqlalchemy.dialects import sqlite as sa_sqlite
    from sqlalchemy.engine import URL, Dialect, Engine
except ImportError as _exc:  # pragma: no cover - SQLAlchemy is a runtime dependency
    raise ConfigurationError("SqlStorage needs SQLAlchemy 2: pip install authkit-sf") from _exc

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
from authkit.storage._sql_primitives import SESSION_COLUMNS, PrimitiveStatements
from authkit.storage._sql_schema import MYSQL_DIALECTS, SCHEMA_VERSION, Tables

__all__ = ["SqlStorage", "SCHEMA_VERSION"]

T = TypeVar("T")

_PREFIX_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")


_IN_CHUNK = 500  # ids per "IN (...)" statement in bulk deletes
# PyMySQL sends bytes as hex, doubling them: a kv value above this size goes to
# MySQL in pieces, so 8 MiB fits the default 16 MiB max_allowed_packet.
_MYSQL_CHUNK = 1024 * 1024

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
            engine, in_memory = make_engine(url_or_engine, engine_options, timeout)
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
            self._compile_statements()
        except BaseException:
            if owns_engine:
                engine.dispose()
            raise
        self._leases = LeaseKeeper(self)
        self._runner.before_call = self._leases.guard
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

    def _cursor(self, transaction: bool = False) -> AbstractContextManager[Any]:
        """A DBAPI cursor on a pooled connection; with ``transaction``, inside BEGIN/COMMIT.

        Nothing is retried: prefer :meth:`_run`, which retries conflicts and, for
        idempotent work, a connection found dead.
        """
        return self._runner.cursor(transaction)

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
        self._runner.drain()  # the idle connections go back to the pool, which DDL uses
        try:
            with self._runner.serial:
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
                # The expiry test is repeated in the DELETE itself: a row a concurrent
                # write made live again after the sub-select picked it is re-checked
                # (PostgreSQL re-evaluates the WHERE on the newest row version) and kept.
                if self._is_postgresql:
                    # The picked rows' physical addresses: a TID scan fetches each directly
                    # ("pk IN (...)" would hash-join against every expired row, each batch
                    # again).  A row updated meanwhile has a new address and a new expiry:
                    # the re-check of both on its newest version keeps it.
                    pick = f"SELECT ctid FROM {t} WHERE {exp} <= {now_p} ORDER BY {exp} LIMIT {limit_p}"  # noqa: S608
                    where = f"ctid = ANY(ARRAY({pick}))"
                else:
                    pick = f"SELECT {key} FROM {t} WHERE {exp} <= {now_p} ORDER BY {exp} LIMIT {limit_p}"  # noqa: S608
                    where = f"{key} IN ({pick})"
                self._sql_cleanup[name] = f"DELETE FROM {t} WHERE {where} AND {exp} <= {now_p}"  # noqa: S608
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
        locks = tables.locks
        take: Any
        if self._is_mysql:
            # IGNORE: a duplicate name inserts nothing (rowcount 0) instead of failing.
            take = sa_mysql.insert(locks).prefix_with("IGNORE")
        else:
            take = (sa_postgresql if self._is_postgresql else sa_sqlite).insert(locks).on_conflict_do_nothing(
                index_elements=["name"]
            )
        self._sql_lock_take = sql(take, ("name", "owner", "expires_at"))
        self._sql_lock_clear = sql(
            sa.delete(locks).where(
                locks.c.name == bp("lock"), sa.or_(locks.c.expires_at <= bp("now"), locks.c.owner == bp("owner"))
            )
        )
        self._sql_lock_renew = sql(
            sa.update(locks)
            .where(locks.c.name == bp("lock"), locks.c.owner == bp("owner"))
            .values(expires_at=bp("until"))
        )
        self._sql_lock_release = sql(sa.delete(locks).where(locks.c.name == bp("lock"), locks.c.owner == bp("owner")))
        # Keyset pages of whole records (encrypt_existing, reencrypt): one statement
        # per page on the primary key's index, from the start or after a cursor.
        # (A literal OFFSET 0: SQLite's compiler would add an OFFSET parameter of its own.)
        limit: Any = bp("limit", type_=sa.Integer)
        self._sql_record_page: dict[str, tuple[str, str]] = {}
        for name, table, pk, cols, live in (("tokens", tokens, "token_id", token_cols, sa.true()),
                                            ("sessions", sessions, "session_id", session_cols, live_session),
                                            ("kv", kv, "name", [kv.c.name, kv.c.value, kv.c.expires_at], live_kv)):
            page = sa.select(*cols).order_by(table.c[pk]).limit(limit).offset(sa.literal_column("0"))
            self._sql_record_page[name] = (sql(page.where(live)), sql(page.where(table.c[pk] > bp("cursor"), live)))

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
        def work(cursor: Any) -> int:
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

        return self._run(work, transaction=len(rows) > 1 or release_digests)

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

    def _fetchone(self, sql: str, params: dict[str, Any]) -> Any:
        def work(cursor: Any) -> Any:
            cursor.execute(sql, params)
            return cursor.fetchone()

        return self._run(work)

    def _fetchall(self, sql: str, params: dict[str, Any]) -> list[Any]:
        def work(cursor: Any) -> list[Any]:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

        return self._run(work)

    def _execute(self, sql: str, params: dict[str, Any]) -> int:
        """Run one idempotent statement; its rowcount."""
        return self._run(lambda cursor: _rowcount(cursor, sql, params))

    def _get_token(self, token_id: str) -> AuthToken | None:
        row = self._fetchone(self._sql_get_token, {"id": token_id})
        return None if row is None else self._token(row)

    def _get_token_by_access_token(self, access_token: str, now: datetime) -> AuthToken | None:
        row = self._fetchone(self._sql_get_token_by_access, {"digest": _digest(access_token), "now": _micros(now)})
        # The digest is the index; the comparison of the token itself is exact.
        if row is None or row[2] != access_token:
            return None
        return self._token(row)

    def _delete_ids(self, kind: str, ids: list[str]) -> None:
        def work(cursor: Any) -> None:
            for start in range(0, len(ids), _IN_CHUNK):
                cursor.execute(*self._in_list(self._sql_delete_in[kind], ids[start:start + _IN_CHUNK]))

        self._run(work, transaction=len(ids) > _IN_CHUNK)

    def _delete_tokens(self, token_ids: list[str]) -> None:
        self._delete_ids("tokens", token_ids)

    def _list_user_tokens(self, user_id: str) -> list[AuthToken]:
        return [self._token(row) for row in self._fetchall(self._sql_user_tokens, {"id": user_id})]

    # -- sessions -----------------------------------------------------------------

    def _store_sessions(self, sessions: list[SessionData]) -> None:
        rows = [self._session_params(s) for s in sessions]

        def work(cursor: Any) -> None:
            if len(rows) == 1:
                cursor.execute(self._sql_upsert_session, rows[0])
            else:
                cursor.executemany(self._sql_upsert_session, rows)

        self._run(work, transaction=len(rows) > 1)

    def _get_session(self, session_id: str, now: datetime) -> SessionData | None:
        row = self._fetchone(self._sql_get_session, {"id": session_id, "now": _micros(now)})
        return None if row is None else self._session(row)

    def _delete_sessions(self, session_ids: list[str]) -> None:
        self._delete_ids("sessions", session_ids)

    def _list_user_sessions(self, user_id: str, now: datetime) -> list[SessionData]:
        rows = self._fetchall(self._sql_user_sessions, {"id": user_id, "now": _micros(now)})
        return [self._session(row) for row in rows]

    def _count_active_sessions(self, now: datetime) -> int:
        return int(self._fetchone(self._sql_count_sessions, {"now": _micros(now)})[0])

    # -- key-value ------------------------------------------------------------------

    def _store_kv(self, key: str, value: bytes, expires_at: datetime | None) -> None:
        expires = _optional_micros(expires_at)
        if self._is_mysql and len(value) > _MYSQL_CHUNK:

            def work(cursor: Any) -> None:
                cursor.execute(self._sql_upsert_kv, {"name": key, "value": value[:_MYSQL_CHUNK], "expires_at": expires})
                for start in range(_MYSQL_CHUNK, len(value), _MYSQL_CHUNK):
                    cursor.execute(self._sql_append_kv, {"id": key, "chunk": value[start:start + _MYSQL_CHUNK]})

            self._run(work, transaction=True)
            return
        self._execute(self._sql_upsert_kv, {"name": key, "value": value, "expires_at": expires})

    def _store_kv_entries(self, entries: list[tuple[str, bytes, datetime | None]]) -> None:
        # Values too big for one MySQL packet go one by one (each its own transaction).
        big = [e for e in entries if self._is_mysql and len(e[1]) > _MYSQL_CHUNK]
        rows = [{"name": k, "value": v, "expires_at": _optional_micros(e)} for k, v, e in entries
                if not (self._is_mysql and len(v) > _MYSQL_CHUNK)]
        if rows:
            self._run(lambda cursor: cursor.executemany(self._sql_upsert_kv, rows), transaction=True)
        for key, value, expires_at in big:
            self._store_kv(key, value, expires_at)

    def _get_kv_entry(self, key: str, now: datetime) -> tuple[bytes, datetime | None] | None:
        row = self._fetchone(self._sql_get_kv_entry, {"id": key, "now": _micros(now)})
        return None if row is None else (bytes(row[0]), _optional_moment(row[1]))

    def _delete_kv(self, key: str) -> None:
        self._execute(self._sql_delete_kv, {"id": key})

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
        keys = [_text(row[0]) for row in self._fetchall(sql, params)]
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
        return self._execute(self._primitives.replace_session, params) > 0

    def _touch_session(
        self, session_id: str, expires_at: datetime | None, last_activity: datetime, now: datetime
    ) -> bool:
        params = {"id": session_id, "expires_at": _optional_micros(expires_at),
                  "last_activity": _micros(last_activity), "now": _micros(now)}
        return self._execute(self._primitives.touch_session, params) > 0

    def _touch_session_ip(
        self, session_id: str, expires_at: datetime | None, last_activity: datetime, ip_address: str | None,
        now: datetime,
    ) -> bool:
        params = {"id": session_id, "expires_at": _optional_micros(expires_at),
                  "last_activity": _micros(last_activity), "ip_address": ip_address, "now": _micros(now)}
        return self._execute(self._primitives.touch_session_ip, params) > 0

    def _delete_user_sessions(self, user_id: str, keep: str | None) -> int:
        if keep is None:
            sql, params = self._primitives.delete_user_sessions, {"user": user_id}
        else:
            sql, params = self._primitives.delete_user_sessions_keep, {"user": user_id, "keep": keep}
        # Not idempotent as to the count it returns: no re-run after a lost connection.
        return max(self._run(lambda cursor: _rowcount(cursor, sql, params), idempotent=False), 0)

    def _delete_user_tokens(self, user_id: str) -> int:
        params = {"user": user_id}
        return max(self._run(lambda cursor: _rowcount(cursor, self._primitives.delete_user_tokens, params),
                             idempotent=False), 0)

    def _add_kv(self, key: str, value: bytes, expires_at: datetime | None, now: datetime) -> bool:
        params = {"name": key, "value": value, "expires_at": _optional_micros(expires_at), "now": _micros(now)}
        if not (self._is_mysql and len(value) > _MYSQL_CHUNK):
            return self._write_unless_live(self._primitives.add_kv, params)
        # Too big for one MySQL packet: the first piece decides, in a transaction
        # with the rest, so no reader ever sees a partial value.
        params["value"] = value[:_MYSQL_CHUNK]

        def work(cursor: Any) -> None:
            cursor.execute(self._primitives.add_kv, params)
            for start in range(_MYSQL_CHUNK, len(value), _MYSQL_CHUNK):
                cursor.execute(self._sql_append_kv, {"id": key, "chunk": value[start:start + _MYSQL_CHUNK]})

        try:
            self._run(work, transaction=True, idempotent=False)
            return True
        except StorageError as exc:
            if self._is_integrity_error(exc):
                return False
            raise

    def _incr_kv(self, key: str, amount: int, expires_at: datetime | None, now: datetime) -> int:
        low, high = counter_bounds(amount)
        params = {"name": key, "value": format_counter(amount), "expires_at": _optional_micros(expires_at),
                  "now": _micros(now), "amount": amount, "lo": low, "hi": high}

        def work(cursor: Any) -> tuple[Any, ...] | int | None:
            cursor.execute(self._primitives.incr_kv, params)
            if self._primitives.mysql:
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
            if self._primitives.mysql and self._is_integrity_error(exc):
                raise counter_overflow(key, amount) from None
            raise
        if row is None:  # the WHERE refused: not a counter, or no room for the addition
            raise counter_overflow(key, amount)
        return int(bytes(row[0]))

    def _touch_kv(self, key: str, expires_at: datetime | None, now: datetime) -> bool:
        params = {"id": key, "expires_at": _optional_micros(expires_at), "now": _micros(now)}
        return self._execute(self._primitives.touch_kv, params) > 0

    # -- maintenance ----------------------------------------------------------------

    def _cleanup_batch(self, now: datetime, limit: int, kinds: Sequence[str] = CLEANUP_KINDS) -> CleanupReport:
        params = {"now": _micros(now), "limit": limit}
        counts = dict.fromkeys(CLEANUP_KINDS, 0)
        for name in kinds:
            # One table per statement, each its own (autocommitted) transaction:
            # every lock it takes is released before the next statement starts.  The
            # statement tests expiry itself, so running it again is harmless.
            counts[name] = max(self._execute(self._sql_cleanup[name], params), 0)
        return CleanupReport(tokens=counts["tokens"], sessions=counts["sessions"], kv=counts["kv"])

    def _stats(self, now: datetime) -> dict[str, int]:
        params = {"now": _micros(now)}

        def work(cursor: Any) -> dict[str, int]:
            stats: dict[str, int] = {}
            for name in ("tokens", "sessions", "kv"):
                cursor.execute(self._sql_stats[name], params)
                total, expired = cursor.fetchone()
                stats[f"{name}_live"] = int(total) - int(expired)
                stats[f"{name}_expired"] = int(expired)
            return stats

        return self._run(work)

    def _id_page(self, kind: str, cursor_id: str | None, limit: int) -> tuple[list[str], str | None]:
        first, after = self._sql_id_page[kind]
        if cursor_id is None:
            rows = self._fetchall(first, {"limit": limit})
        else:
            rows = self._fetchall(after, {"limit": limit, "cursor": cursor_id})
        ids = [_text(row[0]) for row in rows]
        return ids, (ids[-1] if len(ids) == limit else None)

    def _record_page(self, kind: str, cursor: str | None, limit: int, now: datetime | None) -> list[Any]:
        first, after = self._sql_record_page[kind]
        params: dict[str, Any] = {"limit": limit}
        if now is not None:
            params["now"] = _micros(now)
        if cursor is not None:
            params["cursor"] = cursor
        return self._fetchall(first if cursor is None else after, params)

    def _token_page(self, cursor: str | None, limit: int) -> tuple[list[AuthToken], str | None]:
        tokens = [self._token(row) for row in self._record_page("tokens", cursor, limit, None)]
        return tokens, (tokens[-1].token_id if len(tokens) == limit else None)

    def _session_page(self, cursor: str | None, limit: int, now: datetime) -> tuple[list[SessionData], str | None]:
        sessions = [self._session(row) for row in self._record_page("sessions", cursor, limit, now)]
        return sessions, (sessions[-1].session_id if len(sessions) == limit else None)

    def _kv_page(
        self, after: str | None, limit: int, now: datetime
    ) -> tuple[list[tuple[str, bytes, datetime | None]], str | None]:
        rows = self._record_page("kv", after, limit, now)
        entries = [(_text(row[0]), bytes(row[1]), _optional_moment(row[2])) for row in rows]
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
            with self._cursor() as cursor:
                cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                cursor.fetchall()

    def _try_lock(self, name: str, ttl: float) -> Lease | None:
        return self._leases.try_take(name, ttl)

    def _release_lock(self, name: str, handle: Any) -> None:
        self._leases.release(handle)
