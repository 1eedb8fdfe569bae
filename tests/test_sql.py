"""SqlStorage beyond the shared contract: locks across processes, faults, fork,
schema versions, secrets in messages, indexes, and SQL-specific edge cases.

The contract itself (tests/test_storage_contract.py) already runs on every SQL
backend through tests/backends.py.  Fault tests never touch the shared
servers: they talk through a TCP proxy this module starts, and cut that.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from authkit.errors import ConfigurationError, StorageError, StorageUnavailableError
from authkit.models import AuthToken, SessionData
from authkit.storage import open_storage
from authkit.storage._sql_cleanup import CleanupSql
from authkit.storage.sql import SqlStorage
from tests.clock import FakeClock
from tests.services import MYSQL_URL, require, unique_prefix
from tests.sql_storages import url_for
from tests.tcp_proxy import TcpProxy
from tests.threads import run_threads

KINDS = ["sqlite-file", "sqlite-memory", "postgresql", "mysql"]
SHARED_KINDS = ["sqlite-file", "postgresql", "mysql"]  # a database other processes can open too




def token(token_id: str, access: str, user: str = "u1", **fields: Any) -> AuthToken:
    return AuthToken(token_id=token_id, user_id=user, access_token=access, **fields)


# -- through a TCP proxy we can cut or stall ----------------------------------------------


@pytest.fixture
def proxy_for() -> Iterator[Callable[[str], TcpProxy]]:
    """``proxy_for(kind)``: a TcpProxy in front of that kind's server, closed afterwards."""
    made: list[TcpProxy] = []

    def make(kind: str) -> TcpProxy:
        url = sa.engine.make_url(url_for(kind, Path()))
        proxy = TcpProxy(url.host or "127.0.0.1", url.port or 0)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


def proxied_url(kind: str, proxy: TcpProxy) -> str:
    url = sa.engine.make_url(url_for(kind, Path()))
    return url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_server_down_is_unavailable_and_the_same_storage_recovers(
    kind: str, proxy_for: Callable[[str], TcpProxy], opened: Callable[..., SqlStorage]
) -> None:
    proxy = proxy_for(kind)
    prefix = unique_prefix("f")
    twin = opened(url_for(kind, Path()), prefix=prefix)  # drops the tables at the end, whatever the proxy does
    storage = opened(proxied_url(kind, proxy), prefix=prefix, timeout=3)
    storage.store_kv("k", b"before")
    storage.store_token(token("t1", "access-1"))
    proxy.cut()
    for call in (
        lambda: storage.get_kv("k"),
        lambda: storage.store_kv("k", b"during"),
        lambda: storage.store_tokens_bulk([token("t2", "access-2"), token("t3", "access-3")]),
        lambda: storage.get_token_by_access_token("access-1"),
        lambda: storage.cleanup_expired(),
        lambda: storage.drop_schema(),
    ):
        with pytest.raises(StorageUnavailableError) as info:
            call()
        assert info.value.__cause__ is not None
    with pytest.raises(StorageUnavailableError):
        with storage.lock("cron", timeout=0):
            pass
    proxy.restore()
    # The same object, no reconnect call: the dead connections are replaced when used.
    assert storage.get_kv("k") == b"before"
    storage.store_kv("k", b"after")
    assert twin.get_kv("k") == b"after"
    assert twin.get_token("t2") is None  # the failed bulk left nothing behind
    with storage.lock("cron", timeout=1):
        pass
    # The server goes away while a lock is held: leaving the block says so, and the
    # lease row stays until its ttl runs out (nobody else gets the lock before that).
    with pytest.raises(StorageUnavailableError):
        with storage.lock("held", timeout=1, ttl=1):
            proxy.cut()
    proxy.restore()
    with pytest.raises(TimeoutError):
        with twin.lock("held", timeout=0):
            pass
    with storage.lock("held", timeout=10):
        assert storage.get_kv("k") == b"after"


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_unreachable_server_is_unavailable(kind: str) -> None:
    url = sa.engine.make_url(url_for(kind, Path()))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # nothing listens once the probe closes
    unreachable = url.set(port=closed_port).render_as_string(hide_password=False)
    with pytest.raises(StorageUnavailableError) as info:
        SqlStorage(unreachable, connect_args={"connect_timeout": 2})
    assert info.value.__cause__ is not None
    with pytest.raises(StorageUnavailableError):
        open_storage(unreachable, connect_args={"connect_timeout": 2})


# -- locks across processes -------------------------------------------------------------


def _count_under_lock(url: str, prefix: str, rounds: int) -> None:
    storage = SqlStorage(url, prefix=prefix, create_schema=False)
    try:
        for _ in range(rounds):
            with storage.lock("counter", timeout=60):
                # A read-modify-write that loses updates unless the lock excludes.
                value = int(storage.get_kv("counter") or b"0")
                time.sleep(0.002)
                storage.store_kv("counter", str(value + 1).encode())
    finally:
        storage.close()


def _hold_and_crash(url: str, prefix: str, ttl: float, acquired: Any, go: Any) -> None:
    storage = SqlStorage(url, prefix=prefix, create_schema=False)
    held = storage.lock("crash", timeout=10, ttl=ttl)  # keep a reference: collecting it would release
    held.__enter__()
    acquired.set()
    go.wait(30)
    os._exit(0)  # dies holding the lock: no release, no cleanup


@pytest.mark.parametrize("kind", SHARED_KINDS)
def test_lock_excludes_other_processes(kind: str, tmp_path: Path, opened: Callable[..., SqlStorage]) -> None:
    url = url_for(kind, tmp_path)
    storage = opened(url)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_count_under_lock, args=(url, storage.prefix, 10)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    assert storage.get_kv("counter") == b"30"


@pytest.mark.parametrize("kind", SHARED_KINDS)
def test_lock_of_a_crashed_process_frees_itself(kind: str, tmp_path: Path, opened: Callable[..., SqlStorage]) -> None:
    url = url_for(kind, tmp_path)
    storage = opened(url)
    context = multiprocessing.get_context("spawn")
    acquired, go = context.Event(), context.Event()
    holder = context.Process(target=_hold_and_crash, args=(url, storage.prefix, 1.0, acquired, go))
    holder.start()
    try:
        assert acquired.wait(60)
        with pytest.raises(TimeoutError):
            with storage.lock("crash", timeout=0.1):
                pass
    finally:
        go.set()
        holder.join(30)
    # The dead holder renews its lease no more: the lock frees itself after its ttl (1 s).
    with storage.lock("crash", timeout=30):
        pass


@pytest.mark.parametrize("kind", SHARED_KINDS)
def test_a_lease_no_longer_renewed_is_taken_over_after_ttl(
    kind: str, tmp_path: Path, opened: Callable[..., SqlStorage]
) -> None:
    url = url_for(kind, tmp_path)
    first = opened(url)
    second = opened(url, prefix=first.prefix, create_schema=False)
    held = first.lock("job", timeout=0, ttl=0.3)
    held.__enter__()
    first.close()  # stops renewing, as a dead process does, without releasing
    with pytest.raises(TimeoutError):
        with second.lock("job", timeout=0):
            pass
    with second.lock("job", timeout=5):
        pass
    with pytest.raises(StorageError):
        held.__exit__(None, None, None)  # the closed storage cannot release (nor hold) anything


# -- threads ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_threads_mix_bulk_writes_cleanup_and_locks(
    kind: str, tmp_path: Path, opened: Callable[..., SqlStorage]
) -> None:
    clock = FakeClock()
    storage = opened(url_for(kind, tmp_path), clock=clock)
    in_lock = 0
    most = 0
    mutex = threading.Lock()

    def worker(n: int) -> None:
        nonlocal in_lock, most
        for round_ in range(5):
            now = clock()
            storage.store_tokens_bulk(
                [token(f"w{n}-{round_}-{i}", f"a{n}-{round_}-{i}", user=f"u{n}",
                       expires_at=now + timedelta(seconds=1 if i % 2 else 3600)) for i in range(20)]
            )
            storage.store_sessions_bulk([(f"s{n}-{round_}", SessionData("", f"u{n}"))])
            storage.cleanup_expired(batch_size=7)
            with storage.lock("shared", timeout=30):
                with mutex:
                    in_lock += 1
                    most = max(most, in_lock)
                time.sleep(0.001)
                with mutex:
                    in_lock -= 1

    run_threads(worker, 8)
    assert most == 1
    assert all(len(storage.list_user_tokens(f"u{n}")) >= 50 for n in range(8))
    assert storage.count_active_sessions() == 40
    clock.advance(2)
    storage.cleanup_expired(batch_size=7)
    assert all(len(storage.list_user_tokens(f"u{n}")) == 50 for n in range(8))


# -- fork ---------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("kind", KINDS)
def test_forked_child_uses_its_own_connections(kind: str, tmp_path: Path, opened: Callable[..., SqlStorage]) -> None:
    storage = opened(url_for(kind, tmp_path))
    storage.store_kv("parent", b"1")  # the pool now holds a live connection
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            storage.store_kv("child", b"2")
            code = 0 if storage.get_kv("parent") == b"1" else 2
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's connections were not shared with the child: they still work.
    for _ in range(3):
        assert storage.get_kv("parent") == b"1"
    expected = None if kind == "sqlite-memory" else b"2"  # in memory, the child wrote to its own copy
    assert storage.get_kv("child") == expected


# -- schema -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SHARED_KINDS)
def test_schema_version_mismatch_is_a_configuration_error(
    kind: str, tmp_path: Path, opened: Callable[..., SqlStorage]
) -> None:
    url = url_for(kind, tmp_path)
    storage = opened(url)
    meta = storage._tables.meta
    with storage.engine.begin() as conn:
        conn.execute(sa.update(meta).values(value="999"))
    for create in (True, False):
        with pytest.raises(ConfigurationError, match=r"schema version 999.*uses version 1"):
            SqlStorage(url, prefix=storage.prefix, create_schema=create)


@pytest.mark.parametrize("kind", SHARED_KINDS)
def test_create_schema_false_needs_the_tables(kind: str, tmp_path: Path, opened: Callable[..., SqlStorage]) -> None:
    url = url_for(kind, tmp_path)
    prefix = unique_prefix("n")
    with pytest.raises(ConfigurationError, match="not exist"):
        SqlStorage(url, prefix=prefix, create_schema=False)
    made = opened(url, prefix=prefix)
    again = opened(url, prefix=prefix, create_schema=False)
    made.store_kv("k", b"v")
    assert again.get_kv("k") == b"v"
    made.drop_schema()
    with pytest.raises(ConfigurationError, match="not exist"):
        SqlStorage(url, prefix=prefix, create_schema=False)


def test_create_schema_false_on_a_missing_sqlite_file_leaves_no_file(tmp_path: Path) -> None:
    typo = tmp_path / "tyop.db"
    with pytest.raises(ConfigurationError, match="does not exist") as info:
        SqlStorage(f"sqlite:///{typo}", create_schema=False)
    assert "authkit init" in str(info.value)
    assert not typo.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_every_lookup_column_and_expiry_is_indexed(
    kind: str, tmp_path: Path, opened: Callable[..., SqlStorage]
) -> None:
    storage = opened(url_for(kind, tmp_path))
    p = storage.prefix
    with storage.engine.connect() as conn:
        inspector = sa.inspect(conn)

        def indexes(table: str) -> dict[tuple[str, ...], bool]:
            return {tuple(i["column_names"]): bool(i["unique"]) for i in inspector.get_indexes(f"{p}{table}")}

        tokens = indexes("tokens")
        assert tokens[("access_digest",)] is True
        assert ("user_id",) in tokens and ("expires_at",) in tokens
        sessions = indexes("sessions")
        assert ("user_id",) in sessions and ("expires_at",) in sessions
        assert ("expires_at",) in indexes("kv")
        for table, pk in (("tokens", "token_id"), ("sessions", "session_id"), ("kv", "name"), ("meta", "name")):
            assert inspector.get_pk_constraint(f"{p}{table}")["constrained_columns"] == [pk]


def test_drop_schema_removes_only_this_prefix(tmp_path: Path, opened: Callable[..., SqlStorage]) -> None:
    url = url_for("sqlite-file", tmp_path)
    keep = opened(url)
    gone = opened(url)
    keep.store_kv("k", b"v")
    gone.drop_schema()
    names = sa.inspect(keep.engine).get_table_names()
    assert not any(n.startswith(gone.prefix) for n in names)
    assert keep.get_kv("k") == b"v"


# -- secrets, URLs and options ------------------------------------------------------------


PASSWORD = "pw-Very-Secret-42"


def _with_password(url: str, port: int | None = None) -> str:
    parsed = sa.engine.make_url(url).set(password=PASSWORD)
    if port is not None:
        parsed = parsed.set(port=port)
    return parsed.render_as_string(hide_password=False)


def _everything_said(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.__cause__)


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_password_never_appears(kind: str, opened: Callable[..., SqlStorage]) -> None:
    url = url_for(kind, Path())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(StorageUnavailableError) as info:
        SqlStorage(_with_password(url, closed_port), connect_args={"connect_timeout": 2})
    assert PASSWORD not in _everything_said(info.value)
    with pytest.raises(ConfigurationError) as bad:
        SqlStorage(_with_password(url).replace("@", "@[::1", 1))  # an unparseable host
    assert PASSWORD not in _everything_said(bad.value)
    if kind == "postgresql":  # the local server trusts any password: the storage opens
        storage = opened(_with_password(url))
        assert PASSWORD not in repr(storage) and PASSWORD not in str(storage.engine.url)
    else:  # MariaDB's root has no password: a wrong one is refused
        with pytest.raises(StorageError) as refused:
            SqlStorage(_with_password(url))
        assert PASSWORD not in _everything_said(refused.value)


def test_bad_urls_and_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not 'psycopg2'"):
        SqlStorage("postgresql+psycopg2://u@h/db")
    with pytest.raises(ConfigurationError, match="supports sqlite"):
        SqlStorage("oracle://u@h/db")
    with pytest.raises(ConfigurationError, match="cannot be parsed"):
        SqlStorage("sqlite::::")
    with pytest.raises(ValueError):
        SqlStorage("sqlite://", prefix="bad-prefix")
    with pytest.raises(ValueError):
        SqlStorage("sqlite://", prefix="x" * 40)
    with pytest.raises(TypeError):
        SqlStorage("sqlite://", prefix=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SqlStorage(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SqlStorage("sqlite://", no_such_engine_option=1)


def test_connection_option_the_driver_rejects_is_a_configuration_error() -> None:
    url = require(MYSQL_URL, "MariaDB/MySQL")
    with pytest.raises(ConfigurationError, match="query parameters"):
        SqlStorage(url + ("&" if "?" in url else "?") + "charset=bogus", prefix=unique_prefix("cfg"))


def test_open_storage_builds_sql_storage(tmp_path: Path) -> None:
    with open_storage(f"sqlite:///{tmp_path / 'a.db'}", prefix="app_") as storage:
        assert isinstance(storage, SqlStorage) and storage.prefix == "app_"
        storage.store_kv("k", b"v")
        assert storage.get_kv("k") == b"v"
        assert repr(storage) == f"SqlStorage('sqlite:///{tmp_path / 'a.db'}', prefix='app_')"


@pytest.mark.parametrize("kind", ["sqlite-file", "postgresql", "mysql"])
def test_an_existing_engine_can_be_shared(kind: str, tmp_path: Path) -> None:
    url = url_for(kind, tmp_path)
    drivers = {"sqlite-file": "sqlite", "postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql"}
    engine = sa.create_engine(sa.engine.make_url(url).set(drivername=drivers[kind]))
    storage = SqlStorage(engine, prefix=unique_prefix("e"))
    try:
        storage.store_tokens_bulk([token("t1", "a1"), token("t2", "a2")])
        storage.store_kv("k", b"v")
        assert storage.get_token_by_access_token("a2") is not None
        # Committed, not left in an open transaction: a separate connection sees it.
        with engine.connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(storage._tables.tokens)).scalar()
        assert count == 2
        storage.close()  # does not dispose the caller's engine
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        SqlStorage(engine, prefix=storage.prefix).drop_schema()
        engine.dispose()


# -- SQL-specific behaviour ----------------------------------------------------------------


@pytest.fixture(params=KINDS)
def sql(request: pytest.FixtureRequest, tmp_path: Path, opened: Callable[..., SqlStorage]) -> SqlStorage:
    return opened(url_for(request.param, tmp_path), clock=FakeClock())


def test_prefix_range_edges(sql: SqlStorage) -> None:
    keys = ["a\U0010ffff", "a\U0010ffffz", "b", "\ud7ffx", "\ue000", "\U0010ffff\U0010ffff", "%", "%a", "_b", "\\c"]
    for key in keys:
        sql.store_kv(key, b"x")
    assert sql.list_kv_keys("a\U0010ffff") == ["a\U0010ffff", "a\U0010ffffz"]
    assert sql.list_kv_keys("\ud7ff") == ["\ud7ffx"]
    assert sql.list_kv_keys("\U0010ffff") == ["\U0010ffff\U0010ffff"]
    assert sql.list_kv_keys("%") == ["%", "%a"]
    assert sql.list_kv_keys("_") == ["_b"]
    assert sql.list_kv_keys("\\") == ["\\c"]
    assert sql.list_kv_keys() == sorted(keys)


def test_access_token_moving_to_another_token_id(sql: SqlStorage) -> None:
    sql.store_token(token("old", "shared-access"))
    sql.store_token(token("new", "shared-access"))
    got = sql.get_token_by_access_token("shared-access")
    assert got is not None and got.token_id == "new"
    old = sql.get_token("old")
    assert old is not None and old.access_token == "shared-access"  # kept, found by id only
    sql.delete_token("new")
    assert sql.get_token_by_access_token("shared-access") is None
    # In one bulk: the last token with an access token owns it.
    sql.store_tokens_bulk([token("b1", "bulk-access"), token("b2", "bulk-access"), token("b3", "other")])
    got = sql.get_token_by_access_token("bulk-access")
    assert got is not None and got.token_id == "b2"
    # update_token can take an access token over too.
    sql.update_token(token("b3", "bulk-access", user="u2"))
    got = sql.get_token_by_access_token("bulk-access")
    assert got is not None and got.token_id == "b3" and got.user_id == "u2"
    assert sql.get_token("b2") is not None


def test_update_with_identical_values_is_found(sql: SqlStorage) -> None:
    same = token("t1", "a1")
    sql.store_token(same)
    sql.update_token(same)  # MySQL reports 0 rows *changed*; the row was still found
    assert sql.get_token("t1") == same


def test_failed_bulk_writes_nothing(sql: SqlStorage) -> None:
    good = [token(f"g{i}", f"ga{i}") for i in range(600)]
    bad = token("bad", "unencodable-\ud800")  # a lone surrogate: valid str, invalid UTF-8
    with pytest.raises(ValueError):  # checked before anything is sent
        sql.store_tokens_bulk([*good, bad])
    assert sql.get_token("g0") is None and sql.get_token("g599") is None
    assert sql.stats()["tokens_live"] == 0


def test_bulk_delete_beyond_one_in_list(sql: SqlStorage) -> None:
    sql.store_tokens_bulk([token(f"t{i}", f"a{i}") for i in range(1200)])
    sql.delete_tokens_bulk([f"t{i}" for i in range(1100)])
    assert sorted(sql.iter_token_ids(batch_size=37)) == sorted(f"t{i}" for i in range(1100, 1200))


def test_json_with_lone_surrogates_round_trips(sql: SqlStorage) -> None:
    data = {"s": "\udc80 odd", "emoji": "\U0001f600"}
    sql.store_session("s1", SessionData("", "u1", data=data))
    got = sql.get_session("s1")
    assert got is not None and got.data == data


def test_closed_storage_refuses_work(tmp_path: Path) -> None:
    storage = SqlStorage(url_for("sqlite-file", tmp_path))
    storage.close()
    with pytest.raises(StorageError):
        storage.get_kv("k")


def test_cleanup_holds_no_lock_between_batches(sql: SqlStorage) -> None:
    clock = sql._clock
    assert isinstance(clock, FakeClock)
    sql.store_tokens_bulk([token(f"t{i}", f"a{i}", expires_at=clock() + timedelta(seconds=1)) for i in range(30)])
    clock.advance(2)
    writes_done: list[bool] = []

    def write_meanwhile(_report: object) -> None:
        # Another thread writes between two batches; a cleanup that kept a transaction
        # (and its locks) open across batches would make it wait.
        writer = threading.Thread(target=lambda: writes_done.append(sql.store_kv("k", b"v") is None))
        writer.start()
        writer.join(10)
        assert not writer.is_alive()

    report = sql.cleanup_expired(batch_size=10, progress=write_meanwhile)
    assert report.tokens == 30 and len(writes_done) >= 3


def _waits_for_a_row_lock(watcher: sa.Connection, kind: str, table: str) -> bool:
    """Whether a statement on ``table`` (a unique name: this test's own) waits for a row lock."""
    if kind == "postgresql":
        sql = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %(t)s"
    else:
        sql = ("SELECT count(*) FROM information_schema.innodb_trx "
               "WHERE trx_state = 'LOCK WAIT' AND trx_query LIKE %(t)s")
    return bool(watcher.exec_driver_sql(sql, {"t": f"%{table}%"}).scalar())


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_cleanup_goes_on_after_a_batch_a_concurrent_write_shortened(
    kind: str, opened: Callable[..., SqlStorage]
) -> None:
    """A write makes a picked row live while the batch deletes: the batch comes back short,
    and the cleanup still deletes every other expired row (it once stopped there)."""
    clock = FakeClock()
    storage = opened(url_for(kind, Path()), clock=clock)
    start = clock()
    # s00 expires first, so the first batch (ordered by expiry) picks it.
    storage.store_session("s00", SessionData("", "u", expires_at=start + timedelta(seconds=1)))
    storage.store_sessions_bulk([(f"s{i:02d}", SessionData("", "u", expires_at=start + timedelta(seconds=2)))
                                 for i in range(1, 30)])
    clock.advance(3)
    table = storage._tables.sessions.name
    future = int((clock() + timedelta(days=1)).timestamp()) * 1_000_000
    engine = sa.create_engine(storage.engine.url)
    reports: list[Any] = []
    cleanup = threading.Thread(target=lambda: reports.append(storage.cleanup_expired(batch_size=10)), daemon=True)
    try:
        with engine.connect() as watcher, engine.connect() as writer:
            revive = writer.begin()
            writer.exec_driver_sql(f"UPDATE {table} SET expires_at = %(e)s WHERE session_id = %(id)s",
                                   {"e": future, "id": "s00"})
            cleanup.start()
            deadline = time.monotonic() + 20  # bounded: a failing run must end, not hang the suite
            while not _waits_for_a_row_lock(watcher, kind, table):  # the first batch waits for s00
                assert cleanup.is_alive() and time.monotonic() < deadline, "the cleanup never waited for s00"
                watcher.rollback()  # a fresh snapshot for the next look
                # InnoDB refreshes innodb_trx only when it was last read over 0.1 s ago, by anyone:
                # two test runs polling the same server in a fixed rhythm can keep it stale for ever.
                time.sleep(random.uniform(0.15, 0.35))
            revive.commit()
            cleanup.join(30)
    finally:
        engine.dispose()
    assert not cleanup.is_alive() and len(reports) == 1
    assert reports[0].sessions == 29
    assert storage.get_session("s00") is not None and storage.count_active_sessions() == 1


@pytest.mark.parametrize("walk", ["storage order", "key ranges"])
def test_cleanup_walks_the_whole_table_in_steps_of_at_most_batch_size(
    sql: SqlStorage, walk: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many pages of sessions, expired and live interleaved and in random key order: small
    steps delete every expired one, keep every live one, and none looks at more rows than
    asked.  PostgreSQL walks TID ranges (14+) or, like the others, key ranges (before 14)."""
    if walk == "key ranges":
        if not sql._is_postgresql:
            pytest.skip("the other databases walk key ranges anyway")
        monkeypatch.setattr(sql, "_cleanup_sql", CleanupSql(sql._sql, sql._tables, tid_ranges=False))
    elif sql._is_postgresql:
        assert sql._cleanup_sql.tid_ranges  # the test servers run PostgreSQL 14 or newer
    clock = sql._clock
    assert isinstance(clock, FakeClock)
    start = clock()
    rng = random.Random(5)
    ids = [f"{rng.getrandbits(128):032x}" for _ in range(1500)]
    sql.store_sessions_bulk([(sid, SessionData("", "u", expires_at=start + timedelta(seconds=1 if i % 3 else 3600),
                                               data={"pad": "x" * 200}))
                             for i, sid in enumerate(ids)])
    sql.store_session("forever", SessionData("", "u"))
    clock.advance(2)
    seen: list[int] = []
    report = sql.cleanup_expired(batch_size=64, progress=lambda total: seen.append(total.sessions))
    assert report.sessions == 1000 and sql.count_active_sessions() == 501
    assert all(b - a <= 64 for a, b in zip([0, *seen], seen, strict=False)) and len(seen) >= 1000 // 64
    assert all(sql.get_session(sid) is not None for sid in ids[::3])
    assert sql.stats()["sessions_expired"] == 0


def test_only_the_thread_holding_a_lost_lock_is_refused(sql: SqlStorage) -> None:
    clock = sql._clock
    assert isinstance(clock, FakeClock)
    others: list[bytes | None] = []
    with pytest.raises(StorageError, match="was lost"):
        with sql.lock("job", timeout=0, ttl=5):
            clock.advance(6)  # the lease ran out: another holder may have the lock by now
            run_threads(lambda _: others.append(sql.get_kv("k")), 1)  # holds no lock: unaffected
            with pytest.raises(StorageError, match="was lost"):
                sql.get_kv("k")
    assert others == [None]
    assert sql.get_kv("k") is None  # outside the block, calls work again
    with sql.lock("job", timeout=0):  # and the lock can be taken again
        assert sql.get_kv("k") is None


@pytest.mark.parametrize("scheme", ["mysql", "mariadb"])
def test_mysql_and_mariadb_urls(scheme: str, opened: Callable[..., SqlStorage]) -> None:
    url = url_for("mysql", Path())
    storage = opened(scheme + url[url.index("://"):])
    assert storage.engine.dialect.driver == "pymysql"
    storage.store_kv("k", b"v")
    assert storage.get_kv("k") == b"v"


def test_postgres_url_uses_psycopg(opened: Callable[..., SqlStorage]) -> None:
    url = url_for("postgresql", Path())
    storage = opened("postgres" + url[url.index("://"):])
    assert storage.engine.dialect.driver == "psycopg"
