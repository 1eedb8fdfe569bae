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
them in expiry order touches a different page for almost every row, and that
measured 4-5x the time of a pass in storage order, which touches each page once
for all its expired rows (what the single ``DELETE`` of Django's
``clearsessions`` does, holding its locks to the end).  The walk looks at the
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

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from authkit.storage._sql_schema import Tables
from authkit.storage._sql_statements import Statements
from authkit.storage.base import CLEANUP_DONE

__all__ = ["CleanupSql"]

_KEYS = (("tokens", "token_id"), ("sessions", "session_id"), ("kv", "name"))
_PAGE_END = 65535  # above every line pointer of a page: "(p,65535)" is the end of page p
_ROWS_PER_PAGE = 50.0  # a first guess, until the table's statistics or a step say better


@dataclass(frozen=True)
class _Pages:
    """Where a PostgreSQL walk is: rows after the TID ``(page, offset)`` are left."""

    page: int
    offset: int
    end: int  # the table's pages when the walk began: rows added later wait for the next cleanup
    density: float  # live and dead rows per page, as last seen


class CleanupSql:
    """The statements of one storage's cleanup walks, and the step that runs them."""

    def __init__(self, statements: Statements, tables: Tables, tid_ranges: bool) -> None:
        self.tid_ranges = tid_ranges
        # The table's pages now, and its rows per page as of its last VACUUM/ANALYZE.
        self._size = (
            "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int, c.reltuples, c.relpages "  # noqa: S608
            f"FROM pg_class c WHERE c.oid = {statements.placeholder.format('table')}::regclass"
        )
        self._pages: dict[str, str] = {}
        self._bound: dict[str, str] = {}
        self._range: dict[str, str] = {}
        self._rest: dict[str, str] = {}
        bp = sa.bindparam
        p = statements.placeholder.format
        for kind, pk in _KEYS:
            table: sa.Table = getattr(tables, kind)
            key, expires = table.c[pk], table.c.expires_at
            if tid_ranges:
                t = statements.quote(table.name)
                # One statement: pick the next rows in physical order (the ORDER BY sorts
                # only the pages in range), delete the expired ones among them by address,
                # and say how many were looked at and the last one's address.  The DELETE
                # re-tests expiry; a row updated meanwhile has a new address as well.
                self._pages[kind] = (
                    f"WITH picked AS (SELECT ctid, expires_at FROM {t} "  # noqa: S608
                    f"WHERE ctid > {p('after')}::tid AND ctid < {p('before')}::tid ORDER BY ctid LIMIT {p('limit')}), "
                    f"gone AS (DELETE FROM {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM picked "
                    f"WHERE expires_at <= {p('now')})) AND expires_at <= {p('now')} RETURNING 1) "
                    f"SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM picked), "
                    f"(SELECT max(ctid) FROM picked)::text"
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
        self._names = {kind: getattr(tables, kind).name for kind, _ in _KEYS}

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
            end, tuples, pages = run(lambda db: _fetchone(db, self._size, {"table": self._names[kind]}))
            density = float(tuples) / pages if tuples > 0 and pages > 0 else _ROWS_PER_PAGE
            cursor = _Pages(0, 0, int(end), max(1.0, density))
        where: _Pages = cursor
        if where.page >= where.end:
            return 0, CLEANUP_DONE
        # Pages enough for `limit` rows at the density seen (+1: the rest of the cursor's page).
        span = math.ceil(limit / where.density) + 1
        params = {"after": f"({where.page},{where.offset})", "before": f"({where.page + span},0)",
                  "limit": limit, "now": now}
        deleted, looked, last = run(lambda db: _fetchone(db, self._pages[kind], params))
        if looked >= limit:  # stopped by the limit, inside the pages: go on right after the last row
            page, offset = (int(part) for part in last.strip("()").split(","))
            return int(deleted), _Pages(page, offset, where.end, where.density)
        if where.page + span >= where.end:
            return int(deleted), CLEANUP_DONE
        # The pages ran out before the limit: fewer rows per page than thought.
        density = looked / span if looked else where.density / 2
        return int(deleted), _Pages(where.page + span - 1, _PAGE_END, where.end, max(1.0, density))


def _fetchone(db: Any, sql: str, params: dict[str, Any]) -> Any:
    db.execute(sql, params)
    return db.fetchone()
