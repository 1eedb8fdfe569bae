"""Every statement ``SqlStorage`` runs, compiled once per storage to the driver's own SQL.

SQLAlchemy Core builds them (from the tables in ``_sql_schema``) for the
storage's dialect, with named parameters the storage fills in itself; at run
time only the compiled text goes to the driver, so a call costs what the same
SQL costs through the driver.  The atomic primitives' statements are in
``_sql_primitives``.

    statements = Statements(Tables("authkit_", "postgresql"), engine.dialect)
    cursor.execute(statements.get_kv_entry, {"id": "greeting", "now": micros(now)})
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as sa_mysql
from sqlalchemy.dialects import postgresql as sa_postgresql
from sqlalchemy.dialects import sqlite as sa_sqlite
from sqlalchemy.engine import Dialect

from authkit.storage._sql_primitives import SESSION_COLUMNS, PrimitiveStatements
from authkit.storage._sql_schema import MYSQL_DIALECTS, Tables

__all__ = ["Statements", "TOKEN_COLUMNS"]

TOKEN_COLUMNS = (
    "token_id", "user_id", "access_token", "refresh_token", "token_type",
    "scopes", "issued_at", "expires_at", "client_id", "metadata",
)
_KV_COLUMNS = ("name", "value", "expires_at")


class Statements:
    """The SQL text of one storage's statements (one prefix, one dialect), as attributes.

    ``placeholder`` formats a parameter name the driver's way (``:name`` or
    ``%(name)s``) for the few statements written by hand.
    """

    def __init__(self, tables: Tables, engine_dialect: Dialect) -> None:
        name_ = engine_dialect.name
        is_postgresql = name_ == "postgresql"
        is_sqlite = name_ == "sqlite"
        self.mysql = name_ in MYSQL_DIALECTS
        self._postgresql = is_postgresql
        self._tokens = tables.tokens
        dialect: Dialect
        if is_postgresql:
            # The plain PostgreSQL dialect: psycopg's would add a ::TYPE cast to every parameter.
            dialect = sa_postgresql.base.PGDialect(paramstyle="pyformat")  # type: ignore[no-untyped-call]
        elif is_sqlite:
            # Named parameters whatever paramstyle the engine was made with (a shared Engine).
            dialect = sa_sqlite.pysqlite.SQLiteDialect_pysqlite(paramstyle="named")
        else:
            dialect = engine_dialect  # knows MariaDB from MySQL, for the upsert syntax
        self.placeholder = ":{}" if dialect.paramstyle == "named" else "%({})s"
        self.quote = quote = dialect.identifier_preparer.quote
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

        self.compile = sql
        token_row = [*TOKEN_COLUMNS, "access_digest"]
        self.upsert_token = sql(self._upsert(tokens, "token_id", token_row), token_row)
        self.upsert_session = sql(self._upsert(sessions, "session_id", SESSION_COLUMNS), SESSION_COLUMNS)
        self.upsert_kv = sql(self._upsert(kv, "name", _KV_COLUMNS),
                                  _KV_COLUMNS)
        self.update_token = sql(
            sa.update(tokens).where(tokens.c.token_id == bp("token_id")), [c for c in token_row if c != "token_id"]
        )
        self.clear_digest = sql(
            sa.update(tokens)
            .where(tokens.c.access_digest == bp("digest"), tokens.c.token_id != bp("keep"))
            .values(access_digest=sa.null())
        )
        token_cols = [tokens.c[c] for c in TOKEN_COLUMNS]
        session_cols = [sessions.c[c] for c in SESSION_COLUMNS]
        self.get_token = sql(sa.select(*token_cols).where(tokens.c.token_id == bp("id")))
        live_token = sa.or_(tokens.c.expires_at.is_(None), tokens.c.expires_at > bp("now"))
        self.get_token_by_access = sql(
            sa.select(*token_cols).where(tokens.c.access_digest == bp("digest"), live_token)
        )
        self.user_tokens = sql(
            sa.select(*token_cols).where(tokens.c.user_id == bp("id")).order_by(tokens.c.issued_at, tokens.c.token_id)
        )
        live_session = sa.or_(sessions.c.expires_at.is_(None), sessions.c.expires_at > bp("now"))
        self.get_session = sql(
            sa.select(*session_cols).where(sessions.c.session_id == bp("id"), live_session)
        )
        self.user_sessions = sql(
            sa.select(*session_cols)
            .where(sessions.c.user_id == bp("id"), live_session)
            .order_by(sessions.c.created_at, sessions.c.session_id)
        )
        self.count_sessions = sql(sa.select(sa.func.count()).select_from(sessions).where(live_session))
        live_kv = sa.or_(kv.c.expires_at.is_(None), kv.c.expires_at > bp("now"))
        self.get_kv_entry = sql(sa.select(kv.c.value, kv.c.expires_at).where(kv.c.name == bp("id"), live_kv))
        # A range on the primary key, not LIKE: exact under binary collations,
        # no wildcard to escape, and an index range scan on every database.
        self.kv_keys_all = sql(sa.select(kv.c.name).where(live_kv))
        self.kv_keys_from = sql(sa.select(kv.c.name).where(kv.c.name >= bp("low"), live_kv))
        self.kv_keys_range = sql(
            sa.select(kv.c.name).where(kv.c.name >= bp("low"), kv.c.name < bp("high"), live_kv)
        )
        # The hand-written statements below (S608) join only identifiers quoted by the
        # dialect, from a prefix checked against _PREFIX_RE; every value is a parameter.
        self.delete_in = {
            name: f"DELETE FROM {quote(table.name)} WHERE {quote(pk)} IN "  # noqa: S608
            for name, table, pk in (("tokens", tokens, "token_id"), ("sessions", sessions, "session_id"))
        }
        self.delete_kv = sql(sa.delete(kv).where(kv.c.name == bp("id")))
        self.append_kv = sql(
            sa.update(kv).where(kv.c.name == bp("id")).values(value=sa.func.concat(kv.c.value, bp("chunk")))
        )
        self.stats: dict[str, str] = {}
        self.id_page: dict[str, tuple[str, str]] = {}
        for name, table, pk in (("tokens", tokens, "token_id"), ("sessions", sessions, "session_id"),
                                ("kv", kv, "name")):
            expired = table.c.expires_at <= bp("now")
            limit_p = self.placeholder.format("limit")
            t, key = quote(table.name), quote(pk)
            self.stats[name] = sql(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(sa.case((expired, one), else_=zero)), zero))
                .select_from(table)
            )
            if name != "kv":
                cursor_p = self.placeholder.format("cursor")
                self.id_page[name] = (
                    f"SELECT {key} FROM {t} ORDER BY {key} LIMIT {limit_p}",  # noqa: S608
                    f"SELECT {key} FROM {t} WHERE {key} > {cursor_p} ORDER BY {key} LIMIT {limit_p}",  # noqa: S608
                )
        self.primitives = PrimitiveStatements(tables, name_, sql)
        locks = tables.locks
        take: Any
        if self.mysql:
            # IGNORE: a duplicate name inserts nothing (rowcount 0) instead of failing.
            take = sa_mysql.insert(locks).prefix_with("IGNORE")
        else:
            take = (sa_postgresql if is_postgresql else sa_sqlite).insert(locks).on_conflict_do_nothing(
                index_elements=["name"]
            )
        self.lock_take = sql(take, ("name", "owner", "expires_at"))
        self.lock_clear = sql(
            sa.delete(locks).where(
                locks.c.name == bp("lock"), sa.or_(locks.c.expires_at <= bp("now"), locks.c.owner == bp("owner"))
            )
        )
        self.lock_renew = sql(
            sa.update(locks)
            .where(locks.c.name == bp("lock"), locks.c.owner == bp("owner"))
            .values(expires_at=bp("until"))
        )
        self.lock_release = sql(sa.delete(locks).where(locks.c.name == bp("lock"), locks.c.owner == bp("owner")))
        # Keyset pages of whole records (encrypt_existing, reencrypt): one statement
        # per page on the primary key's index, from the start or after a cursor.
        # (A literal OFFSET 0: SQLite's compiler would add an OFFSET parameter of its own.)
        limit: Any = bp("limit", type_=sa.Integer)
        self.record_page: dict[str, tuple[str, str]] = {}
        for name, table, pk, cols, live in (("tokens", tokens, "token_id", token_cols, sa.true()),
                                            ("sessions", sessions, "session_id", session_cols, live_session),
                                            ("kv", kv, "name", [kv.c.name, kv.c.value, kv.c.expires_at], live_kv)):
            page = sa.select(*cols).order_by(table.c[pk]).limit(limit).offset(sa.literal_column("0"))
            self.record_page[name] = (sql(page.where(live)), sql(page.where(table.c[pk] > bp("cursor"), live)))


    def _upsert(self, table: sa.Table, pk: str, columns: Sequence[str]) -> Any:
        """INSERT ... ON CONFLICT/ON DUPLICATE KEY UPDATE every column but ``pk``."""
        others = [c for c in columns if c != pk]
        if self.mysql:
            ins = sa_mysql.insert(table)
            updates: list[tuple[str, Any]] = []
            if table is self._tokens:
                # ON DUPLICATE KEY fires on ANY unique key: a new token whose access
                # token an older token holds would overwrite that older row.  This
                # guard makes that case fail (NULL into a NOT NULL column, an error in
                # strict mode), and _store_tokens retries after releasing the digest.
                guard = sa.func.IF(table.c[pk] == ins.inserted[pk], table.c[pk], sa.null())
                updates.append((pk, guard))
            updates += [(c, ins.inserted[c]) for c in others]
            return ins.on_duplicate_key_update(updates)
        module = sa_postgresql if self._postgresql else sa_sqlite
        ins = module.insert(table)
        return ins.on_conflict_do_update(index_elements=[pk], set_={c: ins.excluded[c] for c in others})


    def in_list(self, sql_head: str, ids: Sequence[str]) -> tuple[str, dict[str, str]]:
        names = [f"p{i}" for i in range(len(ids))]
        sql = sql_head + "(" + ", ".join(self.placeholder.format(n) for n in names) + ")"
        return sql, dict(zip(names, ids, strict=True))

