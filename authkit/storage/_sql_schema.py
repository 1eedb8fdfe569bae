"""The tables :class:`~authkit.storage.sql.SqlStorage` keeps, one ``MetaData`` per prefix.

Column choices, and why:

* Ids and keys are compared exactly and sort in code-point order on every
  database: ``VARCHAR COLLATE "C"`` on PostgreSQL (byte order of UTF-8 is
  code-point order, and a ``C`` b-tree also serves range scans), ``VARBINARY``
  on MySQL/MariaDB (binary and NO PAD: ``'a'`` and ``'a '``, ``'A'`` and
  ``'a'``, NFC and NFD are different ids), SQLite's default ``BINARY``.
* Datetimes are ``BIGINT`` microseconds since the Unix epoch: the whole
  1970..9999 range to the microsecond, no time zones, no 2038 limit, and the
  same on every dialect.
* Values are ``LONGBLOB``/``LONGTEXT`` on MySQL so 8 MiB fits (``BLOB`` stops
  at 64 KiB); ``BYTEA``/``TEXT`` elsewhere.
* Access tokens are found through ``access_digest``, the SHA-256 of the
  token, under a unique index: a fixed 32-byte key, whatever the token's length.
  It is NULL for a token whose access token a newer token took over.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect

from authkit.storage.base import MAX_ID_LENGTH

__all__ = ["SCHEMA_VERSION", "Tables", "MYSQL_DIALECTS"]

SCHEMA_VERSION = 1
"""Bumped whenever the tables change shape; a store with another version is refused."""

MYSQL_DIALECTS = ("mysql", "mariadb")


class Id(sa.types.TypeDecorator[str]):
    """An id or key: exact, code-point ordered comparison on every dialect (see module doc)."""

    impl = sa.String(MAX_ID_LENGTH)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in MYSQL_DIALECTS:
            return dialect.type_descriptor(mysql.VARBINARY(4 * MAX_ID_LENGTH))
        if dialect.name == "postgresql":
            return dialect.type_descriptor(sa.String(MAX_ID_LENGTH, collation="C"))
        return dialect.type_descriptor(sa.String(MAX_ID_LENGTH))


def _text() -> sa.types.TypeEngine[str]:
    return sa.Text().with_variant(mysql.LONGTEXT(), *MYSQL_DIALECTS)


def _blob() -> sa.types.TypeEngine[bytes]:
    return sa.LargeBinary().with_variant(mysql.LONGBLOB(), *MYSQL_DIALECTS)


def _digest() -> sa.types.TypeEngine[bytes]:
    # BINARY(32) on MySQL: an indexable fixed-size key (a BLOB needs a prefix length).
    return sa.LargeBinary(32).with_variant(mysql.BINARY(32), *MYSQL_DIALECTS)


def _micros() -> sa.types.TypeEngine[int]:
    return sa.BigInteger()


class Tables:
    """The ``Table`` objects of one prefix."""

    def __init__(self, prefix: str, dialect_name: str) -> None:
        self.metadata = sa.MetaData()
        options: dict[str, Any] = {}
        if dialect_name in MYSQL_DIALECTS:
            options = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
        self.meta = sa.Table(
            f"{prefix}meta",
            self.metadata,
            sa.Column("name", sa.String(64), primary_key=True),
            sa.Column("value", sa.String(255), nullable=False),
            **options,
        )
        self.tokens = sa.Table(
            f"{prefix}tokens",
            self.metadata,
            sa.Column("token_id", Id(), primary_key=True),
            sa.Column("user_id", Id(), nullable=False),
            sa.Column("access_token", _text(), nullable=False),
            sa.Column("access_digest", _digest(), nullable=True),
            sa.Column("refresh_token", _text(), nullable=True),
            sa.Column("token_type", _text(), nullable=False),
            sa.Column("scopes", _text(), nullable=False),
            sa.Column("issued_at", _micros(), nullable=False),
            sa.Column("expires_at", _micros(), nullable=True),
            sa.Column("client_id", _text(), nullable=True),
            sa.Column("metadata", _text(), nullable=False),
            sa.Index(f"{prefix}tokens_access_digest", "access_digest", unique=True),
            sa.Index(f"{prefix}tokens_user_id", "user_id"),
            sa.Index(f"{prefix}tokens_expires_at", "expires_at"),
            **options,
        )
        self.sessions = sa.Table(
            f"{prefix}sessions",
            self.metadata,
            sa.Column("session_id", Id(), primary_key=True),
            sa.Column("user_id", Id(), nullable=False),
            sa.Column("created_at", _micros(), nullable=False),
            sa.Column("expires_at", _micros(), nullable=True),
            sa.Column("last_activity", _micros(), nullable=False),
            sa.Column("ip_address", _text(), nullable=True),
            sa.Column("user_agent", _text(), nullable=True),
            sa.Column("data", _text(), nullable=False),
            sa.Index(f"{prefix}sessions_user_id", "user_id"),
            sa.Index(f"{prefix}sessions_expires_at", "expires_at"),
            **options,
        )
        self.kv = sa.Table(
            f"{prefix}kv",
            self.metadata,
            sa.Column("name", Id(), primary_key=True),
            sa.Column("value", _blob(), nullable=False),
            sa.Column("expires_at", _micros(), nullable=True),
            sa.Index(f"{prefix}kv_expires_at", "expires_at"),
            **options,
        )
        # A held lock is a lease row (see _sql_lock): committed data, so it survives a
        # server restart, and no connection stays checked out while it is held.
        self.locks = sa.Table(
            f"{prefix}locks",
            self.metadata,
            sa.Column("name", Id(), primary_key=True),
            sa.Column("owner", sa.String(32), nullable=False),
            sa.Column("expires_at", _micros(), nullable=False),
            **options,
        )
