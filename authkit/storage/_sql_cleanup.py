"""How ``SqlStorage.cleanup_expired`` deletes: a walk through each table in its storage order.

Each step deletes the expired rows of the next stretch of one table and carries
where it stopped to the next step, so no step passes rows an earlier one passed:

* PostgreSQL 14 and newer: the next heap pages, in physical order (a TID range
  scan), one statement a step;
* MySQL/MariaDB and SQLite (and PostgreSQL before 14, which has no TID range
  scan): the next primary-key range, two statements a step (where the range
  ends, then the delete).  On InnoDB the primary key *is* the physical order
  (the clustered index).

Why not the ``expires_at`` index: expired rows lie all over a table, so deleting
them in expiry order touches a different page for almost every row; that
measured 4-5x the time of a pass in storage order on PostgreSQL and 1.7x on
MariaDB (200,000 of 400,000 rows), a pass which touches each page once for all
its expired rows, as the single ``DELETE`` of Django's ``clearsessions`` does
(holding its locks to the end).  The walk looks at the
live rows too, which costs little next to deleting.

Every ``DELETE`` tests ``expires_at <= :now`` itself, so a row that a concurrent
write made live again is kept: PostgreSQL re-checks the condition on the newest
version of a row it had to wait for, InnoDB's ``DELETE`` reads the newest
committed version.  Rows written into a stretch already passed wait for the next
cleanup.

    sql = CleanupSql(statements, tables, tid_ranges=True)
    deleted, cursor = sql.step(run, "sessions", micros(now), 2000, None)   # None: from the start
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from authkit.storage._sql_schema import Tables
from authkit.storage._sql_statements import Statements
from authkit.storage.base import CLEANUP_DONE

__all__ = ["CleanupSql"]

_KEYS = (("tokens", "token_id"), ("sessions", "session_id"), ("kv", "name"))


@dataclass(frozen=True)
class _Slots:
    """Where a PostgreSQL walk is, counting line pointers: page ``p``'s are ``p * per_page + 1``
    up to ``(p + 1) * per_page``; the rows after slot ``at`` are left."""

    at: int
    end: int  # the table's last slot when the walk began: rows added later wait for the next cleanup
    per_page: int  # the most rows a page can hold (MaxHeapTuplesPerPage)

    def tid(self, slot: int) -> str:
        # (p, 0) is before page p's first row, so "ctid <= (p + 1, 0)" ends with page p.
        return "({},{})".format(*divmod(slot, self.per_page))


class CleanupSql:
    """The statements of one storage's cleanup walks, and the step that runs them."""

    def __init__(self, statements: Statements, tables: Tables, tid_ranges: bool) -> None:
        self.tid_ranges = tid_ranges
        self._pages: dict[str, str] = {}  # PostgreSQL 14+: the DELETE of a TID range
        self._bound: dict[str, str] = {}  # elsewhere: where the next key range ends,
        self._range: dict[str, str] = {}  # the DELETE of that range,
        self._rest: dict[str, str] = {}  # and of the rest, when fewer rows are left
        # The table's pages now, and the most rows a page can hold (MaxHeapTuplesPerPage:
        # the page minus its header, over a tuple header and a line pointer at the least).
        self._size = (
            "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int, "  # noqa: S608
            "(current_setting('block_size')::int - 24) / 28 "
            f"FROM pg_class c WHERE c.oid = {statements.placeholder.format('table')}::regclass"
        )
        bp = sa.bindparam
        p = statements.placeholder.format
        for kind, pk in _KEYS:
            table: sa.Table = getattr(tables, kind)
            key, expires = table.c[pk], table.c.expires_at
            if tid_ranges:
                t = statements.quote(table.name)
                # A TID range scan: the step's pages only, in physical order.
                self._pages[kind] = (
                    f"DELETE FROM {t} WHERE ctid > {p('after')}::tid AND ctid <= {p('upto')}::tid "  # noqa: S608
                    f"AND expires_at <= {p('now')}"
                )
            else:
                one: Any = sa.literal_column("1")
                self._bound[kind] = statements.compile(
                    sa.select(key).where(key > bp("after")).order_by(key).limit(one).offset(bp("skip"))
                )
                self._range[kind] = statements.compile(
                    sa.delete(table).where(key > bp("after"), key <= bp("upto"), expires <= bp("now"))
                )
                self._rest[kind] = statements.compile(sa.delete(table).where(key > bp("after"), expires <= bp("now")))
        self._names = {kind: statements.quote(getattr(tables, kind).name) for kind, _ in _KEYS}  # for ::regclass

    def step(self, run: Callable[..., Any], kind: str, now: int, limit: int, cursor: Any) -> tuple[int, Any]:
        """Delete the expired rows among the next ``limit`` of ``kind``'s table from ``cursor``.

        ``run(work)`` runs ``work(dbapi_cursor)`` on a pooled connection (retrying
        conflicts); ``now`` is in microseconds.  Returns the rows deleted and the
        next step's cursor, or ``CLEANUP_DONE``.
        """
        if self.tid_ranges:
            return self._page_step(run, kind, now, limit, cursor)
        after = "" if cursor is None else cursor  # "": below every id, which is never empty

        def work(db: Any) -> tuple[int, Any]:
            db.execute(self._bound[kind], {"after": after, "skip": limit - 1})
            row = db.fetchone()
            if row is None:  # fewer than `limit` rows left: the last step
                db.execute(self._rest[kind], {"after": after, "now": now})
                return int(db.rowcount), CLEANUP_DONE
            db.execute(self._range[kind], {"after": after, "upto": row[0], "now": now})
            return int(db.rowcount), row[0]

        return run(work)  # type: ignore[no-any-return]

    def _page_step(self, run: Callable[..., Any], kind: str, now: int, limit: int, cursor: Any) -> tuple[int, Any]:
        if cursor is None:
            pages, per_page = run(lambda db: _fetchone(db, self._size, {"table": self._names[kind]}))
            cursor = _Slots(0, int(pages) * int(per_page), int(per_page))
        where: _Slots = cursor
        # `limit` slots hold `limit` rows at the most (fewer when pages are not full: the
        # batch sizing by time makes up for that).
        upto = min(where.at + limit, where.end)
        params = {"after": where.tid(where.at), "upto": where.tid(upto), "now": now}
        deleted = run(lambda db: _rowcount(db, self._pages[kind], params))
        return deleted, CLEANUP_DONE if upto >= where.end else _Slots(upto, where.end, where.per_page)


def _fetchone(db: Any, sql: str, params: dict[str, Any]) -> Any:
    db.execute(sql, params)
    return db.fetchone()


def _rowcount(db: Any, sql: str, params: dict[str, Any]) -> int:
    db.execute(sql, params)
    return int(db.rowcount)
