"""The SQL of the atomic primitives, one statement each, per dialect.

:class:`~authkit.storage.sql.SqlStorage` compiles these once (with its own
``compile``) and runs each as ONE statement in autocommit mode: the database
decides "is there a live record?" and writes in the same step, so racing
callers never both win and no lock is taken.

How each dialect answers "did it write?" in that one statement:

* **PostgreSQL, SQLite**: ``INSERT ... ON CONFLICT (pk) DO UPDATE SET ...
  WHERE <the old row has expired>``: the row count is 1 if it inserted or
  replaced an expired row, 0 if a live row stood.  ``incr_kv`` adds
  ``RETURNING value`` and a ``WHERE`` that also requires the old value to be
  a counter with room for the addition: no row back means "not a counter /
  would overflow", and nothing was changed.  On PostgreSQL ``create_session``
  and ``add_kv`` insert ``SELECT <params> WHERE NOT EXISTS (<live row>)``, so a
  loser never locks the live row (see :meth:`PrimitiveStatements._pg_insert_unless_live`).
* **MySQL/MariaDB** (``INSERT ... ON DUPLICATE KEY UPDATE``, whose row count
  cannot tell an insert from an unchanged row): the first assignment sets
  the primary key to ``IF(<may write>, pk, NULL)``, which fails the whole
  statement (strict mode, error 1048) when a live row stands or the counter
  cannot take the addition — the same guard the token upsert uses.
  ``incr_kv`` passes its result out through ``LAST_INSERT_ID(expr)``
  (the driver's ``lastrowid``; an unsigned 64-bit copy of the signed value).
  Assignments run left to right there and see the columns already assigned,
  so ``expires_at`` is always assigned last.
* ``replace_session``, ``touch_session``, ``touch_kv``: ``UPDATE ... WHERE
  pk = :id AND <live at :now>``; the row count (rows *matched* on MySQL,
  where the driver sets ``CLIENT_FOUND_ROWS``) says whether it was live.
* ``delete_user_sessions``/``delete_user_tokens``: ``DELETE ... WHERE
  user_id = :user [AND session_id <> :keep]`` on the ``user_id`` index.

Counters are canonical ASCII decimal (see ``_codec``): PostgreSQL and MySQL
test the form with a regular expression before any cast (a cast of a
non-number would raise, or, in MySQL strict mode, fail the statement);
SQLite has no regular expressions and tests it as "casting to INTEGER and
back gives the same text".  The range test compares with ``:lo``/``:hi``
from ``_codec.counter_bounds``, so no arithmetic here can overflow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as sa_mysql
from sqlalchemy.dialects import postgresql as sa_postgresql
from sqlalchemy.dialects import sqlite as sa_sqlite

from authkit.storage._sql_schema import MYSQL_DIALECTS, Id, Tables

__all__ = ["PrimitiveStatements", "SESSION_COLUMNS"]

SESSION_COLUMNS = (
    "session_id", "user_id", "created_at", "expires_at", "last_activity", "ip_address", "user_agent", "data",
)
_KV_COLUMNS = ("name", "value", "expires_at")
# Canonical signed 64-bit decimal: no sign on zero, no leading zeros, 1..19 digits.
_COUNTER_PATTERN = "'^(0|-?[1-9][0-9]{0,18})$'"

Compile = Callable[[Any, Sequence[str] | None], str]


def _expired(table: sa.Table) -> Any:
    """The stored row has an expiry and it has passed at ``:now``."""
    return sa.and_(table.c.expires_at.is_not(None), table.c.expires_at <= sa.bindparam("now"))


def _live(table: sa.Table) -> Any:
    return sa.or_(table.c.expires_at.is_(None), table.c.expires_at > sa.bindparam("now"))


def _cast_type(type_: Any) -> Any:
    """A column's type as a PostgreSQL ``CAST`` target: an id without its collation.

    The inserted value takes the column's ``COLLATE "C"`` anyway; SQLAlchemy 2.0.0
    renders it inside ``CAST(x AS VARCHAR(255) COLLATE "C")``, which PostgreSQL refuses.
    """
    if isinstance(type_, Id):
        return sa.String(type_.impl.length)
    return type_

class PrimitiveStatements:
    """The compiled statements of one storage (one prefix, one dialect)."""

    def __init__(self, tables: Tables, dialect_name: str, compile_: Compile) -> None:
        sessions, tokens, kv = tables.sessions, tables.tokens, tables.kv
        bp = sa.bindparam
        self.mysql = dialect_name in MYSQL_DIALECTS
        others = [c for c in SESSION_COLUMNS if c != "session_id"]

        if self.mysql:
            self.create_session = compile_(
                self._mysql_insert_unless_live(sessions, "session_id", others), SESSION_COLUMNS
            )
            self.add_kv = compile_(self._mysql_insert_unless_live(kv, "name", ["value", "expires_at"]), _KV_COLUMNS)
            self.incr_kv = compile_(self._mysql_incr(kv), _KV_COLUMNS)
        elif dialect_name == "postgresql":
            module: Any = sa_postgresql
            self.create_session = compile_(self._pg_insert_unless_live(sessions, "session_id", SESSION_COLUMNS), None)
            self.add_kv = compile_(self._pg_insert_unless_live(kv, "name", _KV_COLUMNS), None)
        else:
            module = sa_sqlite
            ins = module.insert(sessions)
            self.create_session = compile_(
                ins.on_conflict_do_update(
                    index_elements=["session_id"], set_={c: ins.excluded[c] for c in others}, where=_expired(sessions)
                ),
                SESSION_COLUMNS,
            )
            ins = module.insert(kv)
            self.add_kv = compile_(
                ins.on_conflict_do_update(
                    index_elements=["name"],
                    set_={"value": ins.excluded.value, "expires_at": ins.excluded.expires_at},
                    where=_expired(kv),
                ),
                _KV_COLUMNS,
            )
        if not self.mysql:
            self.incr_kv = compile_(self._incr(module, kv, dialect_name), _KV_COLUMNS)

        self.replace_session = compile_(
            sa.update(sessions).where(sessions.c.session_id == bp("id"), _live(sessions)), others
        )
        self.touch_session = compile_(
            sa.update(sessions).where(sessions.c.session_id == bp("id"), _live(sessions)),
            ["expires_at", "last_activity"],
        )
        self.touch_session_ip = compile_(
            sa.update(sessions).where(sessions.c.session_id == bp("id"), _live(sessions)),
            ["expires_at", "last_activity", "ip_address"],
        )
        self.touch_kv = compile_(sa.update(kv).where(kv.c.name == bp("id"), _live(kv)), ["expires_at"])
        self.delete_user_sessions = compile_(sa.delete(sessions).where(sessions.c.user_id == bp("user")), None)
        self.delete_user_sessions_keep = compile_(
            sa.delete(sessions).where(sessions.c.user_id == bp("user"), sessions.c.session_id != bp("keep")), None
        )
        self.delete_user_tokens = compile_(sa.delete(tokens).where(tokens.c.user_id == bp("user")), None)

    # -- MySQL / MariaDB -----------------------------------------------------------

    @staticmethod
    def _mysql_insert_unless_live(table: sa.Table, pk: str, others: Sequence[str]) -> Any:
        ins = sa_mysql.insert(table)
        # The guard first (it reads the old expires_at), expires_at last.
        updates: list[tuple[str, Any]] = [(pk, sa.func.IF(_expired(table), table.c[pk], sa.null()))]
        updates += [(c, ins.inserted[c]) for c in others if c != "expires_at"]
        updates.append(("expires_at", ins.inserted.expires_at))
        return ins.on_duplicate_key_update(updates)

    @staticmethod
    def _mysql_incr(kv: sa.Table) -> Any:
        ins = sa_mysql.insert(kv)
        expired = _expired(kv)
        is_counter = kv.c.value.op("REGEXP")(sa.literal_column(_COUNTER_PATTERN))
        # Nested IFs, not AND: MySQL in strict mode fails a statement whose cast of
        # a non-number only warns, so the cast must run only after the pattern matched.
        may_add = sa.func.IF(
            is_counter,
            sa.cast(kv.c.value, sa.Numeric(19, 0)).between(sa.bindparam("lo"), sa.bindparam("hi")),
            sa.false(),
        )
        total = sa.cast(kv.c.value, sa_mysql.BIGINT()) + sa.bindparam("amount")  # CAST(... AS SIGNED)
        # LAST_INSERT_ID(x) hands x to the client; LEFT(..., 0) keeps it out of the value.
        report_total = sa.func.LEFT(sa.func.LAST_INSERT_ID(total), sa.literal_column("0"))
        report_amount = sa.func.LEFT(sa.func.LAST_INSERT_ID(sa.bindparam("amount")), sa.literal_column("0"))
        return ins.on_duplicate_key_update([
            ("name", sa.func.IF(sa.or_(expired, may_add), kv.c.name, sa.null())),
            ("value", sa.func.IF(
                expired,
                sa.func.CONCAT(ins.inserted.value, report_amount),
                sa.func.CONCAT(sa.cast(total, sa.CHAR()), report_total),
            )),
            ("expires_at", sa.func.IF(expired, ins.inserted.expires_at, kv.c.expires_at)),
        ])

    # -- PostgreSQL / SQLite ----------------------------------------------------------

    @staticmethod
    def _pg_insert_unless_live(table: sa.Table, pk: str, columns: Sequence[str]) -> Any:
        """``INSERT ... SELECT <params> WHERE NOT EXISTS (<live row>) ON CONFLICT DO UPDATE ... WHERE <expired>``.

        The plain snapshot read answers the common losing case (a live row) without
        touching the row: ``ON CONFLICT DO UPDATE`` locks the conflicting row even when
        its ``WHERE`` is false, which gives the statement a transaction id and a WAL
        flush at commit (3x the time of the read).  Racing writers that get past the
        read are decided by ``ON CONFLICT`` on the latest row version, as before.
        """
        live_row: Any = sa.select(sa.literal_column("1")).where(table.c[pk] == sa.bindparam(pk), _live(table))
        row = sa.select(*[sa.cast(sa.bindparam(c), _cast_type(table.c[c].type)).label(c) for c in columns])
        ins = sa_postgresql.insert(table).from_select(list(columns), row.where(~sa.exists(live_row)))
        return ins.on_conflict_do_update(
            index_elements=[pk], set_={c: ins.excluded[c] for c in columns if c != pk}, where=_expired(table)
        )

    @staticmethod
    def _incr(module: Any, kv: sa.Table, dialect_name: str) -> Any:
        ins = module.insert(kv)
        expired = _expired(kv)
        amount = sa.cast(sa.bindparam("amount"), sa.BigInteger())
        bounds: tuple[Any, Any] = (sa.bindparam("lo"), sa.bindparam("hi"))
        text: Any
        may_add: Any
        total: Any
        if dialect_name == "postgresql":
            text = sa.func.encode(kv.c.value, sa.literal_column("'escape'"))  # never fails, unlike convert_from
            may_add = sa.case(
                (text.op("~")(sa.literal_column(_COUNTER_PATTERN)), sa.cast(text, sa.Numeric()).between(*bounds)),
                else_=sa.false(),
            )
            total = sa.func.convert_to(
                sa.cast(sa.cast(text, sa.BigInteger()) + amount, sa.Text()), sa.literal_column("'UTF8'")
            )
        else:
            text = sa.cast(kv.c.value, sa.Text())
            number = sa.cast(text, sa.Integer())  # SQLite: saturates or stops at the first non-digit
            may_add = sa.and_(sa.cast(number, sa.Text()) == text, number.between(*bounds))
            total = sa.cast(sa.cast(number + amount, sa.Text()), sa.LargeBinary())
        return ins.on_conflict_do_update(
            index_elements=["name"],
            set_={
                "value": sa.case((expired, ins.excluded.value), else_=total),
                "expires_at": sa.case((expired, ins.excluded.expires_at), else_=kv.c.expires_at),
            },
            where=sa.or_(expired, may_add),
        ).returning(kv.c.value)
