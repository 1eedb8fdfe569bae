"""PgBouncer noticed on connect (authkit/storage/_sql_pgbouncer.py): adapted to, or refused.

No ``prepare_threshold`` passed here: SqlStorage finds the pooler itself.  Private PgBouncers
in front of the shared PostgreSQL (tests/local_servers.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

pytest.importorskip("psycopg")

from authkit.errors import ConfigurationError
from authkit.models import SessionData
from authkit.storage.sql import SqlStorage
from tests.local_servers import pgbouncer
from tests.services import POSTGRES_URL, require, unique_prefix
from tests.threads import run_threads


@contextmanager
def _store(url: str) -> Iterator[SqlStorage]:
    storage = SqlStorage(url, prefix=unique_prefix("pm"), timeout=10)
    try:
        yield storage
    finally:
        storage.drop_schema()
        storage.close()


def _prepare_threshold(storage: SqlStorage) -> object:
    fairy = storage._runner.engine.raw_connection()
    try:
        return fairy.dbapi_connection.prepare_threshold  # type: ignore[union-attr]
    finally:
        fairy.close()


def _busy(storage: SqlStorage) -> None:
    """Every statement many times over, from threads sharing two server connections: a statement
    prepared on one server connection is run on the other."""
    def work(t: int) -> None:
        for n in range(15):
            sid = f"t{t}n{n}"
            assert storage.create_session(sid, SessionData(sid, "u"))
            assert storage.get_session(sid) is not None
            storage.incr_kv("hits")

    run_threads(work, 6)
    assert storage.get_kv("hits") == b"90"


def test_direct_connections_keep_prepared_statements() -> None:
    with _store(require(POSTGRES_URL, "PostgreSQL")) as storage:
        storage.incr_kv("hits")
        assert _prepare_threshold(storage) == 5  # psycopg's default: the marker reached the server


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_behind_pgbouncer_prepared_statements_are_off(mode: str) -> None:
    # Session pooling holds a server connection per client connection: give it enough.
    with pgbouncer(pool_mode=mode, pool_size=2 if mode == "transaction" else 16) as url, \
            _store(url) as storage:
        _busy(storage)
        assert _prepare_threshold(storage) is None


def test_a_bouncer_that_refuses_startup_options_is_connected_to_without_them() -> None:
    # PgBouncer's default: "unsupported startup parameter: options".
    with pgbouncer(pool_size=2, settings={"ignore_startup_parameters": "extra_float_digits"}) as url, \
            _store(url) as storage:
        _busy(storage)
        assert _prepare_threshold(storage) is None


def test_statement_pooling_is_refused_clearly() -> None:
    with pgbouncer(pool_mode="statement") as url:
        with pytest.raises(ConfigurationError, match="statement pooling"):
            SqlStorage(url, prefix=unique_prefix("pm"), timeout=10)
