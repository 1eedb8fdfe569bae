"""RedisStorage beyond the conformance suite: key layout, native TTLs, index
hygiene, SCAN and glob escaping, a server restart mid-run, threads, processes,
fork, and a real 3-node Redis Cluster.

The shared server (``AUTHKIT_TEST_REDIS_URL``) is only used under a unique
prefix; every fault test starts its own ``redis-server`` on a spare port.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.cluster

from authkit.errors import NotFoundError, StorageError, StorageUnavailableError
from authkit.models import AuthToken, SessionData
from authkit.storage import open_storage
from authkit.storage._codec import EPOCH
from authkit.storage.redis import RedisStorage
from tests.backends import drop_redis_keys
from tests.clock import FakeClock
from tests.redis_cluster import RedisServer, cluster_url
from tests.services import REDIS_URL, require, unique_prefix
from tests.threads import run_threads


def _prefix() -> str:
    return unique_prefix("rt").rstrip("_") + ":"


@pytest.fixture
def raw() -> Iterator[Any]:
    client = redis.Redis.from_url(require(REDIS_URL, "Redis"))
    yield client
    client.close()


@pytest.fixture
def store(raw: Any, clock: FakeClock) -> Iterator[RedisStorage]:
    prefix = _prefix()
    storage = RedisStorage(raw, prefix=prefix, clock=clock)
    try:
        yield storage
    finally:
        drop_redis_keys(raw, prefix)


def keys_of(client: Any, prefix: str, *, marker: bool = False) -> list[bytes]:
    """The key names under ``prefix``; without each storage's marker key unless ``marker``."""
    from authkit.storage._redis_codec import MARKER as _MARKER
    from authkit.storage._redis_codec import glob_escape as _glob_escape

    pattern = _glob_escape(prefix.encode()) + b"*"
    if isinstance(client, redis.cluster.RedisCluster):
        names = [k for node in client.get_primaries()
                 for k in client.scan_iter(match=pattern, count=1000, target_nodes=node)]
    else:
        names = list(client.scan_iter(match=pattern, count=1000))
    return [k for k in names if marker or not k.endswith(b"}:" + _MARKER)]


def token(token_id: str = "t1", user_id: str = "u1", **fields: Any) -> AuthToken:
    fields.setdefault("access_token", f"secret-access-{token_id}")
    return AuthToken(token_id=token_id, user_id=user_id, **fields)


def check_indexes(storage: RedisStorage) -> None:
    """Every index entry points at a stored record that agrees with it, and every record is indexed."""
    client: Any = storage._client
    b = storage._b
    owners = {k.decode(): v for k, v in client.hgetall(b + b"to").items()}
    assert {m.decode() for m in client.zrange(b + b"tx", 0, -1)} == set(owners)
    assert {m.decode() for m in client.zrange(b + b"ti", 0, -1)} == set(owners)
    for token_id, owner in owners.items():
        got = storage.get_token(token_id)
        assert got is not None, token_id
        from authkit.storage._redis_codec import digest as _digest

        assert owner == _digest(got.access_token) + got.user_id.encode()
        holder = client.get(b + b"ta:" + owner[:64])  # this token, or another with the same access token
        assert holder is not None and owners[holder.decode()][:64] == owner[:64]
        assert client.zscore(b + b"tu:" + got.user_id.encode(), token_id) is not None
    token_keys = [k for k in keys_of(client, storage.prefix) if k.startswith(b + b"t:")]
    assert len(token_keys) == len(owners)
    access_keys = [k for k in keys_of(client, storage.prefix) if k.startswith(b + b"ta:")]
    assert len(access_keys) == len({o[:64] for o in owners.values()})


# -- layout -------------------------------------------------------------------


def test_every_key_is_under_the_prefix_with_one_hash_tag(store: RedisStorage, raw: Any) -> None:
    store.store_token(token(expires_at=store.now() + timedelta(hours=1)))
    store.store_session("s1", SessionData("", "u1", expires_at=store.now() + timedelta(hours=1)))
    store.store_kv("k", b"v", ttl=60)
    with store.lock("l"):
        names = keys_of(raw, store.prefix)
        assert any(b"lock:" in n for n in names)
    tag = store.prefix.rstrip(":").encode()
    assert names and all(n.startswith(store.prefix.encode() + b"{" + tag + b"}:") for n in names)
    assert len({redis.cluster.key_slot(n) for n in names}) == 1


def test_no_raw_token_in_key_names_and_json_records(store: RedisStorage, raw: Any) -> None:
    store.store_token(token(access_token="very-secret-access", refresh_token="very-secret-refresh"))
    names = b"\n".join(keys_of(raw, store.prefix))
    assert b"very-secret" not in names
    record = raw.get(store._b + b"t:t1")
    assert record.startswith(b"[1,") and b"very-secret-access" in record  # JSON, never pickle


def test_native_ttls(store: RedisStorage, raw: Any, clock: FakeClock) -> None:
    store.store_kv("k", b"v", ttl=60)
    store.store_kv("forever", b"v")
    store.store_session("s1", SessionData("", "u1", expires_at=clock() + timedelta(seconds=120)))
    store.store_token(token(expires_at=clock() + timedelta(seconds=30)))
    assert 55_000 < raw.pttl(store._b + b"kv:k") <= 60_000
    assert raw.pttl(store._b + b"kv:forever") == -1
    assert 115_000 < raw.pttl(store._b + b"s:s1") <= 120_000
    assert raw.pttl(store._b + b"t:t1") == -1  # tokens outlive expiry until cleanup_expired


def test_token_retention_is_a_safety_net_after_expiry(raw: Any, clock: FakeClock) -> None:
    prefix = _prefix()
    storage = RedisStorage(raw, prefix=prefix, clock=clock, token_retention=timedelta(minutes=10))
    try:
        storage.store_token(token(expires_at=clock() + timedelta(seconds=30)))
        storage.store_token(token("old", expires_at=clock() - timedelta(days=1)))
        storage.store_token(token("forever"))
        assert 625_000 < raw.pttl(storage._b + b"t:t1") <= 630_000
        assert 595_000 < raw.pttl(storage._b + b"t:old") <= 600_000
        assert raw.pttl(storage._b + b"t:forever") == -1
        assert storage.get_token("old") is not None
    finally:
        drop_redis_keys(raw, prefix)


def test_expiry_is_decided_by_the_storage_clock(store: RedisStorage, raw: Any, clock: FakeClock) -> None:
    store.store_kv("k", b"v", ttl=5)
    store.store_session("s1", SessionData("", "u1", expires_at=clock() + timedelta(seconds=5)))
    clock.advance(6)
    assert raw.exists(store._b + b"kv:k") and raw.exists(store._b + b"s:s1")  # Redis has not expired them
    assert store.get_kv("k") is None and store.list_kv_keys() == []
    assert store.get_session("s1") is None and store.list_user_sessions("u1") == []
    assert store.count_active_sessions() == 0


def test_records_redis_expired_are_never_returned_and_cleanup_prunes_them(
    store: RedisStorage, raw: Any, clock: FakeClock
) -> None:
    soon = clock() + timedelta(seconds=5)
    store.store_session("s1", SessionData("", "u1", expires_at=soon))
    store.store_kv("k", b"v", ttl=5)
    # What Redis's own expiry does, without waiting for it:
    raw.delete(store._b + b"s:s1", store._b + b"kv:k")
    assert store.get_session("s1") is None and store.list_user_sessions("u1") == []
    assert store.get_kv("k") is None and store.list_kv_keys() == []
    clock.advance(6)
    report = store.cleanup_expired()
    assert (report.sessions, report.kv) == (1, 1)
    assert keys_of(raw, store.prefix) == []  # no index entry left behind


def test_index_pointing_at_a_replaced_record_is_not_trusted(store: RedisStorage, raw: Any) -> None:
    store.store_token(token(access_token="a1"))
    from authkit.storage._redis_codec import digest as _digest

    # A stale digest key (as a crash between writes could leave, if writes were not atomic):
    raw.set(store._b + b"ta:" + _digest("forged"), b"t1")
    assert store.get_token_by_access_token("forged") is None
    raw.zadd(store._b + b"su:u1", {b"ghost": "+inf"})
    assert store.list_user_sessions("u1") == []


def test_deleted_sessions_leave_no_index_entry(store: RedisStorage, raw: Any) -> None:
    store.store_sessions_bulk([(f"s{i}", SessionData("", f"u{i % 2}")) for i in range(10)])
    store.delete_session("s0")
    store.delete_sessions_bulk([f"s{i}" for i in range(1, 10)])
    assert store.count_active_sessions() == 0
    assert keys_of(raw, store.prefix) == []


def test_token_indexes_follow_replacements(store: RedisStorage, raw: Any) -> None:
    store.store_tokens_bulk([token(f"t{i}", f"u{i % 3}") for i in range(30)])
    store.store_token(token("t1", "u9", access_token="moved"))
    store.update_token(token("t2", "u2", access_token="shared"))
    store.store_token(token("t3", "u0", access_token="shared"))  # two tokens, one access token: last wins
    check_indexes(store)
    assert store.get_token_by_access_token("shared").token_id == "t3"  # type: ignore[union-attr]
    store.delete_tokens_bulk([f"t{i}" for i in range(30)])
    assert keys_of(raw, store.prefix) == []


def test_update_token_is_atomic_check_and_write(store: RedisStorage, raw: Any) -> None:
    with pytest.raises(NotFoundError):
        store.update_token(token())
    assert keys_of(raw, store.prefix) == []
    store.store_token(token())
    raw.delete(store._b + b"t:t1")  # gone (e.g. the safety-net TTL) but still indexed
    with pytest.raises(NotFoundError):
        store.update_token(token())


def test_unreadable_records_are_storage_errors(store: RedisStorage, raw: Any) -> None:
    store.store_token(token())
    store.store_session("s1", SessionData("", "u1"))
    store.store_kv("k", b"v")
    raw.set(store._b + b"t:t1", b"\x80not json secret-access")
    raw.set(store._b + b"s:s1", b"[1, 2]")
    raw.set(store._b + b"kv:k", b"short")
    for call in (lambda: store.get_token("t1"), lambda: store.get_session("s1"), lambda: store.get_kv("k"),
                 lambda: store.list_user_tokens("u1")):
        with pytest.raises(StorageError) as info:
            call()
        assert "secret" not in str(info.value)


# -- list_kv_keys: SCAN, escaped ------------------------------------------------


def test_list_kv_keys_uses_scan_never_keys() -> None:
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        storage = RedisStorage(client, prefix="x:")
        for i in range(2500):
            storage.store_kv(f"k{i:04}", b"v")
        before = client.info("commandstats")
        assert storage.list_kv_keys("k1") == [f"k{i:04}" for i in range(1000, 2000)]
        after = client.info("commandstats")
        assert "cmdstat_keys" not in after
        assert after["cmdstat_scan"]["calls"] > before.get("cmdstat_scan", {}).get("calls", 0)
        client.close()


@pytest.mark.parametrize(
    ("prefix", "neighbour_prefix"),  # the neighbour's keys match the prefix if read as a glob
    [("g*:", "gZ:"), ("g?:", "gQ:"), ("g[ab]:", "ga:"), ("g\\x:", "gx:"), ("g*{t}", "gZ{t}"), ("g[]]:", "g]:")],
)
def test_glob_characters_in_the_storage_prefix(
    raw: Any, clock: FakeClock, prefix: str, neighbour_prefix: str
) -> None:
    unique = unique_prefix("g")
    ours = RedisStorage(raw, prefix=unique + prefix, clock=clock)
    neighbour = RedisStorage(raw, prefix=unique + neighbour_prefix, clock=clock)
    try:
        ours.store_kv("mine", b"1")
        neighbour.store_kv("theirs", b"2")
        neighbour.store_kv("mine2", b"2")
        assert ours.list_kv_keys() == ["mine"]
        assert ours.list_kv_keys("mi") == ["mine"]
    finally:
        drop_redis_keys(raw, unique)


def test_prefix_with_its_own_hash_tag_and_bad_prefixes(raw: Any) -> None:
    prefix = "app:{" + unique_prefix("tag") + "}:"
    try:
        storage = RedisStorage(raw, prefix=prefix)
        assert storage._b == prefix.encode()
    finally:
        drop_redis_keys(raw, prefix)
    with pytest.raises(ValueError, match="hash tag"):
        RedisStorage(raw, prefix="app:{}:")
    with pytest.raises(ValueError):
        RedisStorage(raw, prefix="")
    with pytest.raises(TypeError):
        RedisStorage(raw, prefix=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        RedisStorage("redis://localhost")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="decode_responses"):
        RedisStorage(redis.Redis.from_url(REDIS_URL, decode_responses=True))


# -- URLs, repr, errors -------------------------------------------------------------


def test_open_storage_urls(tmp_path: Path) -> None:
    with RedisServer(None, "--unixsocket", str(tmp_path / "r.sock"), "--unixsocketperm", "700") as server:
        with open_storage(f"unix://{tmp_path / 'r.sock'}?db=0", prefix="u:") as storage:
            assert isinstance(storage, RedisStorage)
            storage.store_kv("k", b"v")
            assert storage.get_kv("k") == b"v"
            assert "r.sock" in repr(storage)
        with open_storage(server.url, prefix="p:", create_schema=True) as storage:
            assert storage.get_kv("k") is None  # another prefix


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made here (no network, no openssl binary)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_rediss_url_talks_tls(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    from tests.ports import free_port

    port = free_port()
    tls = ("--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
           "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no")
    with RedisServer(port, *tls):
        with open_storage(f"rediss://127.0.0.1:{port}/0", prefix="tls:", ssl_ca_certs=str(cert)) as storage:
            storage.store_kv("k", b"over tls")
            assert storage.get_kv("k") == b"over tls"
        # The server's certificate is verified: without the CA, no connection (from the first
        # round trip: opening checks the store's marker key).
        with pytest.raises(StorageUnavailableError):
            open_storage(f"rediss://127.0.0.1:{port}/0", prefix="tls:")
        # A plain-text client on the TLS port gets no answer it understands.
        with pytest.raises(StorageError):
            open_storage(f"redis://127.0.0.1:{port}/0", prefix="tls:", socket_timeout=1)


def test_bad_urls_and_options() -> None:
    from authkit.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as info:
        open_storage("redis://:pw-in-url@127.0.0.1:notaport/0")
    assert "pw-in-url" not in str(info.value)
    with pytest.raises(TypeError, match="nonsense"):
        open_storage("redis://127.0.0.1:6379/0", nonsense=1)


def test_password_never_in_repr_or_errors() -> None:
    with RedisServer(None, "--requirepass", "s3cret-pw") as server:
        url = f"redis://:s3cret-pw@127.0.0.1:{server.port}/0"
        storage = RedisStorage.from_url(url, prefix="x:")
        storage.store_kv("k", b"v")
        assert "s3cret" not in repr(storage)
        server.kill()
        with pytest.raises(StorageUnavailableError) as info:
            storage.get_kv("k")
        assert "s3cret" not in str(info.value)
        storage.close()
        server.start()
        # Opening checks the store's marker key: a wrong password fails there, masked.
        with pytest.raises(StorageError) as info:
            RedisStorage.from_url(f"redis://:wrong-pw-xyz@127.0.0.1:{server.port}/0")
        assert "wrong-pw-xyz" not in str(info.value)


def test_server_restart_mid_run() -> None:
    """Kill our own server: StorageUnavailableError; start it on the same port: the same object works."""
    with RedisServer() as server:
        storage = RedisStorage.from_url(server.url, prefix="r:", socket_timeout=2, socket_connect_timeout=2)
        storage.store_kv("before", b"1")
        storage.store_token(token())
        server.kill()
        calls = [
            lambda: storage.get_kv("before"),
            lambda: storage.store_kv("k", b"v"),
            lambda: storage.get_token_by_access_token("secret-access-t1"),
            lambda: storage.store_tokens_bulk([token("t2")]),
            lambda: storage.list_kv_keys(),
            lambda: storage.cleanup_expired(),
            lambda: storage.lock("l", timeout=0).__enter__(),
        ]
        for call in calls:
            with pytest.raises(StorageUnavailableError) as info:
                call()
            assert isinstance(info.value.__cause__, redis.RedisError)
        server.start()  # same port; no persistence, so it comes back empty
        storage.store_kv("after", b"2")
        assert storage.get_kv("after") == b"2"
        storage.store_token(token())
        assert storage.get_token_by_access_token("secret-access-t1") is not None
        with storage.lock("l", timeout=1):
            pass
        storage.close()


def test_scripts_are_loaded_again_after_the_server_forgets_them(clock: FakeClock) -> None:
    """Scripts run by SHA: a server that lost its script cache (restart, failover, SCRIPT
    FLUSH) is given them again and the call goes through, on our own server."""
    with RedisServer() as server:
        storage = RedisStorage.from_url(server.url, prefix="r:", clock=clock)
        hour = clock() + timedelta(hours=1)
        assert storage.create_session("s", SessionData("", "u1", expires_at=hour, data={"n": 1}))
        storage._client.script_flush()
        assert storage.replace_session("s", SessionData("", "u1", expires_at=hour, data={"n": 2}))
        storage._client.script_flush()
        assert storage.touch_session("s", hour + timedelta(hours=1))
        got = storage.get_session("s")
        assert got is not None and got.data == {"n": 2} and got.expires_at == hour + timedelta(hours=1)
        storage._client.script_flush()
        storage.delete_session("s")
        assert storage.get_session("s") is None and storage.stats()["sessions_live"] == 0
        storage.close()


def test_a_dropped_connection_is_retried_on_a_fresh_one(clock: FakeClock) -> None:
    """The session commands skip redis-py's command layers but keep its Retry: a pooled
    connection the server closed (idle timeout, CLIENT KILL, a proxy) costs no error."""
    with RedisServer() as server:
        storage = RedisStorage.from_url(server.url, prefix="r:", clock=clock)
        admin = redis.Redis.from_url(server.url)
        hour = clock() + timedelta(hours=1)
        assert storage.create_session("s", SessionData("", "u1", expires_at=hour, data={"n": 1}))
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
        got = storage.get_session("s")  # GET on the dead connection
        assert got is not None and got.data == {"n": 1}
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
        assert storage.replace_session("s", SessionData("", "u1", expires_at=hour, data={"n": 2}))  # EVALSHA
        assert storage.get_session("s").data == {"n": 2}  # type: ignore[union-attr]
        admin.close()
        storage.close()


def test_session_commands_are_packed_as_redis_py_packs_them() -> None:
    from authkit.storage._redis_client import _packed

    conn = redis.Redis().connection_pool.make_connection()  # packs; connects nowhere
    for args in [("GET", b"k"), ("EVALSHA", "ab" * 20, 2, b"x", b"", b"\x00\r\n\xff", 0, -5, 2**70, "z")]:
        assert _packed(args) == b"".join(conn.pack_command(*args))
    for odd in ["\u00fc", 1.5, True, memoryview(b"x")]:  # the client's encoder decides: left to redis-py
        assert _packed(("GET", odd)) is None


# -- threads, processes, fork ---------------------------------------------------


def test_threads_racing_on_the_same_tokens_keep_indexes_consistent(store: RedisStorage) -> None:
    def worker(n: int) -> None:
        for i in range(40):
            tid = f"t{i % 7}"
            if i % 5 == 0:
                store.delete_token(tid)
            elif i % 3 == 0:
                try:
                    store.update_token(token(tid, f"u{n % 3}", access_token=f"a{n}-{i}"))
                except NotFoundError:
                    pass
            else:
                store.store_tokens_bulk([token(tid, f"u{n % 3}", access_token=f"b{n}-{i}"),
                                         token(f"x{n}", "ux")])

    run_threads(worker, 10)
    check_indexes(store)


def _process_worker(url: str, prefix: str, n: int, cluster: bool) -> None:
    storage = RedisStorage.from_url(url, prefix=prefix, cluster=cluster)
    for i in range(20):
        storage.store_kv(f"p{n}-{i}", b"x")
        with storage.lock("counter", timeout=60):
            # read-modify-write: only correct if the lock excludes the other processes
            value = int(storage.get_kv("counter") or b"0")
            storage.store_kv("counter", str(value + 1).encode())
    storage.store_tokens_bulk([token(f"p{n}-{i}", f"user{n}") for i in range(10)])
    storage.close()


def _run_processes(url: str, prefix: str, cluster: bool) -> None:
    ctx = multiprocessing.get_context("spawn")
    processes = [ctx.Process(target=_process_worker, args=(url, prefix, n, cluster)) for n in range(4)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(120)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]


def test_processes_share_the_store_and_the_lock(raw: Any) -> None:
    prefix = _prefix()
    storage = RedisStorage(raw, prefix=prefix)
    try:
        _run_processes(require(REDIS_URL, "Redis"), prefix, cluster=False)
        assert storage.get_kv("counter") == b"80"
        assert len(storage.list_kv_keys("p")) == 80
        assert all(len(storage.list_user_tokens(f"user{n}")) == 10 for n in range(4))
        check_indexes(storage)
    finally:
        drop_redis_keys(raw, prefix)


def test_lock_held_by_another_process_times_out_and_expires_after_ttl(store: RedisStorage) -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from authkit.storage.redis import RedisStorage\n"
        "s = RedisStorage.from_url(sys.argv[1], prefix=sys.argv[2])\n"
        "held = s.lock('crash', ttl=3.0)\n"  # a reference: a collected generator would release it
        "held.__enter__()\n"  # acquired, then the process dies holding it
        "print('held', flush=True)\n"
        "import os; os._exit(0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, REDIS_URL, store.prefix], capture_output=True, text=True,
                            timeout=60, cwd=Path(__file__).parent.parent)
    assert result.stdout.strip() == "held", result.stderr
    with pytest.raises(TimeoutError):
        with store.lock("crash", timeout=0.1):
            pass
    with store.lock("crash", timeout=10):  # freed by its ttl
        pass


def test_release_never_frees_someone_elses_lock(store: RedisStorage, raw: Any) -> None:
    with store.lock("l", ttl=0.05):
        threading.Event().wait(0.15)  # our ttl ran out ...
        raw.set(store._b + b"lock:l", b"someone-else")  # ... and another holder took it
    assert raw.get(store._b + b"lock:l") == b"someone-else"


def test_safe_after_fork(store: RedisStorage) -> None:
    store.store_kv("parent", b"1")  # the pool now holds a connection
    pid = os.fork()
    if pid == 0:  # child: must get its own connection, not share the parent's socket
        code = 1
        try:
            for i in range(50):
                store.store_kv(f"child{i}", b"c")
                assert store.get_kv(f"child{i}") == b"c"
            assert store.get_kv("parent") == b"1"
            code = 0
        finally:
            os._exit(code)
    for i in range(50):
        assert store.get_kv("parent") == b"1"
        store.store_kv(f"parent{i}", b"p")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(store.list_kv_keys("child")) == 50


# -- Redis Cluster ----------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_client() -> Iterator[Any]:
    client = redis.cluster.RedisCluster.from_url(cluster_url())
    yield client
    client.close()


def test_cluster_has_three_primaries_and_storages_spread_over_them(cluster_client: Any, clock: FakeClock) -> None:
    primaries = cluster_client.get_primaries()
    assert len(primaries) == 3
    # Find prefixes whose one slot lives on each node: different storages use different nodes.
    by_node: dict[str, str] = {}
    for i in range(200):
        prefix = f"{unique_prefix('c')}{i}:"
        node = cluster_client.get_node_from_key(RedisStorage(cluster_client, prefix=prefix)._b + b"kx")
        by_node.setdefault(node.name, prefix)
        if len(by_node) == 3:
            break
    assert len(by_node) == 3
    try:
        for name, prefix in by_node.items():
            storage = RedisStorage(cluster_client, prefix=prefix, clock=clock)
            storage.store_tokens_bulk([token(f"t{i}", f"u{i % 2}") for i in range(20)])
            storage.store_sessions_bulk([(f"s{i}", SessionData("", "u1")) for i in range(5)])
            storage.store_kv("k", b"v")
            names = keys_of(cluster_client, prefix)
            assert {cluster_client.get_node_from_key(n).name for n in names} == {name}
            assert len({redis.cluster.key_slot(n) for n in names}) == 1
            assert storage.list_kv_keys() == ["k"] and storage.count_active_sessions() == 5
    finally:
        for prefix in by_node.values():
            drop_redis_keys(cluster_client, prefix)


def test_cluster_scan_finds_keys_on_every_node(cluster_client: Any, clock: FakeClock) -> None:
    # A prefix with its own tag per storage would pin one node; three storages under
    # one parent prefix land on different nodes, and teardown must find them all.
    parent = unique_prefix("cs")
    storages = [RedisStorage(cluster_client, prefix=f"{parent}{i}:", clock=clock) for i in range(12)]
    try:
        for storage in storages:
            storage.store_kv("k", b"v")
        found = keys_of(cluster_client, parent)
        assert len(found) == 24  # a kv key and its expiry index each
        assert len({cluster_client.get_node_from_key(k).name for k in found}) > 1
    finally:
        drop_redis_keys(cluster_client, parent)
    assert keys_of(cluster_client, parent) == []


def test_cluster_processes_share_the_store_and_the_lock(cluster_client: Any) -> None:
    prefix = _prefix()
    storage = RedisStorage(cluster_client, prefix=prefix)
    try:
        _run_processes(cluster_url(), prefix, cluster=True)
        assert storage.get_kv("counter") == b"80"
        assert len(storage.list_user_tokens("user3")) == 10
    finally:
        drop_redis_keys(cluster_client, prefix)


def test_cluster_via_open_storage(clock: FakeClock) -> None:
    prefix = _prefix()
    with open_storage(cluster_url(), prefix=prefix, cluster=True, clock=clock) as storage:
        assert isinstance(storage, RedisStorage) and "cluster" in repr(storage)
        storage.store_token(token())
        assert storage.get_token_by_access_token("secret-access-t1") is not None
        storage.delete_token("t1")
        assert keys_of(storage._client, prefix) == []


def test_cluster_node_killed_and_restarted() -> None:
    """The primary holding a storage's slot dies: StorageUnavailableError; it comes back: the same object works."""
    from tests.redis_cluster import LocalRedisCluster

    with LocalRedisCluster() as cluster:
        storage = RedisStorage.from_url(cluster.url, cluster=True, prefix="kill:", socket_timeout=2,
                                        socket_connect_timeout=2)
        storage.store_kv("k", b"v")
        node = storage._client.get_node_from_key(storage._kx)
        victim = next(s for s in cluster.servers if s.port == node.port)
        victim.kill()
        with pytest.raises(StorageUnavailableError) as info:
            storage.get_kv("k")
        assert isinstance(info.value.__cause__, redis.RedisError)
        with pytest.raises(StorageUnavailableError):
            storage.store_token(token())
        victim.start()  # rejoins with its nodes.conf; no persistence, so its data is gone
        deadline = time.monotonic() + 30
        while True:
            try:
                storage.store_kv("again", b"2")
                break
            except StorageUnavailableError:
                assert time.monotonic() < deadline, "the restarted node never came back"
                time.sleep(0.1)
        assert storage.get_kv("again") == b"2"
        storage.close()


def test_a_refused_token_write_leaves_the_old_token_intact(store: RedisStorage) -> None:
    store.store_token(token("t1", "u1", access_token="old-access"))
    # Bypass the argument checks to make Redis refuse the write inside the script
    # (PX 0 is an invalid expire time): nothing of the old token may be unindexed.
    new = token("t1", "u2", access_token="new-access")
    arg = store._token_arg(new, store.now())
    parts = arg.split(b"\0", 4)
    parts[3] = b"0"
    with pytest.raises(StorageError), store._errors:
        store._store_tokens_lua(keys=store._token_keys, args=[store._b, b"0", b"\0".join(parts)])
    got = store.get_token_by_access_token("old-access")
    assert got is not None and got.user_id == "u1"
    assert [t.token_id for t in store.list_user_tokens("u1")] == ["t1"]
    check_indexes(store)


def test_touch_session_keeps_odd_user_ids_and_data(store: RedisStorage, clock: FakeClock) -> None:
    user = 'u"\\,[1,2],\\"'
    data = {"a,b": 'x"],[', "n": [1, 2.5, None]}
    store.store_session("s1", SessionData("", user, data=data, expires_at=clock() + timedelta(seconds=10)))
    later = clock() + timedelta(hours=1)
    assert store.touch_session("s1", later) is True
    got = store.get_session("s1")
    assert got is not None and got.user_id == user and got.data == data and got.expires_at == later
    assert [s.session_id for s in store.list_user_sessions(user)] == ["s1"]
    check_indexes(store)


def check_session_indexes(storage: RedisStorage, users: list[str]) -> None:
    """Every session is in the expiry and id indexes and in its user's index (score 0),
    and the indexes of ``users`` (every user the test used) hold nothing else."""
    client: Any = storage._client
    b = storage._b
    owners = {k.decode(): v.decode() for k, v in client.hgetall(b + b"so").items()}
    assert {m.decode() for m in client.zrange(b + b"sx", 0, -1)} == set(owners)
    assert {m.decode() for m in client.zrange(b + b"si", 0, -1)} == set(owners)
    assert set(owners.values()) <= set(users)
    for user in users:
        members = dict(client.zrange(b + b"su:" + user.encode(), 0, -1, withscores=True))
        assert set(members.values()) <= {0.0}, "the per-user index holds no expiry"
        assert {m.decode() for m in members} == {i for i, u in owners.items() if u == user}


def test_session_writes_decide_liveness_by_the_record_and_the_clock(
    store: RedisStorage, raw: Any, clock: FakeClock
) -> None:
    hour = clock() + timedelta(hours=1)
    store.store_session("gone", SessionData("", "u1", expires_at=hour, data={"v": 1}))
    raw.delete(store._b + b"s:gone")  # Redis expired the record; the indexes still say live
    assert store.replace_session("gone", SessionData("", "u1", expires_at=hour, data={"v": 2})) is False
    assert not raw.exists(store._b + b"s:gone")  # a refused replace writes nothing
    assert store.touch_session("gone", hour) is False
    assert store.create_session("gone", SessionData("", "u1", expires_at=hour, data={"v": 3})) is True
    assert store.get_session("gone").data == {"v": 3}  # type: ignore[union-attr]

    store.store_session("live", SessionData("", "u1", expires_at=hour, data={"v": 1}))
    assert store.create_session("live", SessionData("", "u2", expires_at=hour, data={"v": 2})) is False
    got = store.get_session("live")
    assert got is not None and (got.user_id, got.data) == ("u1", {"v": 1})

    store.store_session("old", SessionData("", "u1", expires_at=clock() + timedelta(seconds=5)))
    clock.advance(6)  # expired by the storage clock; Redis still holds the record
    assert store.replace_session("old", SessionData("", "u1", expires_at=hour)) is False
    assert store.create_session("old", SessionData("", "u3", expires_at=hour, data={"v": 4})) is True
    assert [s.session_id for s in store.list_user_sessions("u3")] == ["old"]
    check_session_indexes(store, ["u1", "u2", "u3"])


def test_session_indexes_follow_every_kind_of_write(store: RedisStorage, clock: FakeClock) -> None:
    hour = clock() + timedelta(hours=1)
    store.store_sessions_bulk([(f"s{i}", SessionData("", f"u{i % 3}", expires_at=hour)) for i in range(9)])
    check_session_indexes(store, [f"u{i}" for i in range(10)])
    later = hour + timedelta(hours=1)
    assert store.replace_session("s0", SessionData("", "u0", expires_at=later, data={"n": 1}))  # same user
    assert store.replace_session("s1", SessionData("", "u7", expires_at=later))  # moves to another user
    assert store.touch_session("s2", later, last_activity=clock())
    assert store.create_session("s9", SessionData("", "u7", expires_at=hour))
    store.store_session("s3", SessionData("", "u8", expires_at=None))
    check_session_indexes(store, [f"u{i}" for i in range(10)])
    assert [s.session_id for s in store.list_user_sessions("u7")] == ["s1", "s9"]
    assert [s.session_id for s in store.list_user_sessions("u1")] == ["s4", "s7"]
    assert store._client.zscore(store._sx, "s2") == float(int((later - EPOCH) / timedelta(microseconds=1)))
    store.delete_session("s1")
    assert store.delete_user_sessions("u7") == 1
    check_session_indexes(store, [f"u{i}" for i in range(10)])
    clock.advance(timedelta(hours=1, seconds=1))  # every session but s0, s2 and s3 expires
    assert store.list_user_sessions("u0") == [store.get_session("s0")]
    assert store.cleanup_expired().sessions == 5
    check_session_indexes(store, [f"u{i}" for i in range(10)])


def test_incr_kv_leaves_no_scratch_key(store: RedisStorage) -> None:
    store.incr_kv("c")
    store.incr_kv("c", 2**62)
    store.store_kv("text", b"abc")
    with pytest.raises(ValueError):
        store.incr_kv("text")
    assert not store._client.exists(store._b + b"incr")
    assert store.get_kv("c") == str(2**62 + 1).encode()


# -- the marker key: a wrong prefix or database is refused -----------------------------


def test_a_store_without_its_marker_is_refused_like_missing_sql_tables(raw: Any) -> None:
    from authkit.errors import ConfigurationError

    prefix = unique_prefix("m").rstrip("_") + ":"
    url = require(REDIS_URL, "Redis")
    try:
        with pytest.raises(ConfigurationError, match=r"no authkit store with prefix .* `authkit init`"):
            RedisStorage.from_url(url, prefix=prefix, create_schema=False)  # nothing there yet
        assert keys_of(raw, prefix, marker=True) == []  # refusing wrote nothing
        with RedisStorage.from_url(url, prefix=prefix) as storage:  # create_schema=True: the marker
            storage.store_kv("k", b"v")
        with RedisStorage.from_url(url, prefix=prefix, create_schema=False) as storage:
            assert storage.get_kv("k") == b"v"
            assert storage.cleanup_expired().total == 0
        with RedisStorage.from_url(url, prefix=prefix, create_schema=False) as storage:
            assert storage.get_kv("k") == b"v"  # cleanup left the marker
        other_db = url.rsplit("/", 1)[0] + "/15"
        with pytest.raises(ConfigurationError, match="wrong database or prefix"):
            RedisStorage.from_url(other_db, prefix=prefix, create_schema=False)
        with pytest.raises(TypeError):
            RedisStorage(raw, prefix=prefix, create_schema="no")  # type: ignore[arg-type]
    finally:
        for name in keys_of(raw, prefix, marker=True):
            raw.delete(name)
