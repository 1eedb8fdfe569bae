"""PostgreSQL behind PgBouncer: noticed on each new connection, adapted to, or refused.

A client cannot ask PgBouncer its ``pool_mode`` (only its admin console can), but PgBouncer
shows in what it does to a new connection, and authkit checks that once per new connection
(one query; nothing per call):

- **It does not pass the startup** ``options`` **to the server**: it refuses them ("unsupported
  startup parameter: options", its default) or drops them (``ignore_startup_parameters =
  options``).  authkit's options carry the server-side ``statement_timeout`` and a marker
  setting, ``authkit.direct``: a connection on which the marker is unset is behind a pooler.  A
  refused connection is made again without options (:func:`connect`).
- **Statement pooling** refuses transaction blocks.  authkit needs them (bulk writes are all or
  nothing), so a store behind statement pooling is refused with a
  :class:`~authkit.errors.ConfigurationError` naming the fix (``pool_mode = transaction``).

Behind a pooler (:func:`adapt`) a connection gets no server-side prepared statements
(psycopg's ``prepare_threshold`` set to ``None``): a statement prepared in one transaction lives
on one server connection, and under transaction pooling the next transaction may run on another
("prepared statement does not exist").  That is harmless under session pooling.  The server-side
``statement_timeout`` is lost with the options; the client-side read timeout still bounds every
call (set ``statement_timeout`` on the role for the server's side).  Locks need nothing: they are
lease rows (``_sql_lock.py``), committed data every server connection sees.

A pooler that forwards startup options to the server is not detected (nothing here needs it to
be, except prepared statements): pass ``connect_args={"prepare_threshold": None}`` yourself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from authkit.errors import ConfigurationError

__all__ = ["MARKER_OPTION", "adapt", "connect"]

logger = logging.getLogger("authkit.storage")

#: Added to the connection's startup options; a pooler that drops or refuses options loses it.
MARKER_OPTION = "-c authkit.direct=on"
_REFUSED_OPTIONS = "unsupported startup parameter: options"
_STATEMENT_POOLING = "statement pooling"


def connect(make: Callable[..., Any], cargs: Any, cparams: dict[str, Any]) -> Any:
    """``make(*cargs, **cparams)``; if a pooler refuses the startup options, made again without
    them, and every later connection of the engine too (``cparams`` is the engine's own dict)."""
    try:
        return make(*cargs, **cparams)
    except Exception as exc:
        if _REFUSED_OPTIONS not in str(exc) or cparams.pop("options", None) is None:
            raise
    logger.info("PostgreSQL: a pooler (PgBouncer?) refused the startup options; connecting without them "
                "(no server-side statement_timeout: set it on the role)")
    return make(*cargs, **cparams)


def adapt(dbapi_connection: Any, _record: Any = None) -> None:
    """The engine's ``connect`` hook: check a new psycopg connection for a pooler and adapt to it."""
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True  # the probe's own transaction block, not the driver's implicit one
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('authkit.direct', true)")
        row = cursor.fetchone()
        if row is None or row[0] != "on":  # the options did not reach the server: a pooler
            dbapi_connection.prepare_threshold = None
            try:
                # Two statements in one transaction block: statement pooling refuses it.
                cursor.execute("BEGIN")
                cursor.execute("SELECT 1")
                cursor.execute("COMMIT")
            except Exception as exc:
                if _STATEMENT_POOLING not in str(exc):
                    raise
                raise ConfigurationError(
                    "PostgreSQL is behind a pooler in statement pooling mode, which refuses transactions; "
                    "authkit needs them (bulk writes are all or nothing): use pool_mode = transaction"
                ) from None
    # Only on success: a connection that failed here is thrown away.
    dbapi_connection.autocommit = autocommit
