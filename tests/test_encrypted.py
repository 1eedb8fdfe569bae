"""EncryptedStorage beyond the conformance suite: nothing secret at rest, ciphertexts
bound to their records, wrong keys and tampering detected, key rotation and
``reencrypt()``, ``open_storage`` wiring, threads and processes.

The conformance suite itself runs on ``encrypted-*`` backends (tests/backends.py).
"""

from __future__ import annotations

import base64
import dataclasses
import multiprocessing
import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from authkit.errors import ConfigurationError, EncryptionError
from authkit.models import AuthToken, SessionData
from authkit.storage import AuthStorage, MemoryStorage, open_storage
from authkit.storage.encrypted import ENVELOPE_PREFIX, EncryptedStorage, generate_key
from authkit.storage.url import ENCRYPTION_KEYS_ENV
from tests.at_rest import raw_redis
from tests.backends import BACKENDS, drop_redis_keys
from tests.clock import FakeClock
from tests.services import REDIS_URL, require, unique_prefix
from tests.threads import run_threads

ACCESS = "00DSECRETACCESSaaaaaaaaaaaa"
REFRESH = "5AepSECRETREFRESHbbbbbbbbbb"
SESSION_SECRET = "SESSIONSECRETcccccccccccc"
KV_SECRET = b"KVSECRETdddddddddddddddd"
IP = "203.0.113.77"
AGENT = "SecretAgent/7.0"
META_SECRET = "METASECRETeeeeeeeeeeee"
SECRETS = [ACCESS, REFRESH, SESSION_SECRET, KV_SECRET.decode(), IP, AGENT, META_SECRET]


@pytest.fixture
def inner(clock: FakeClock) -> MemoryStorage:
    return MemoryStorage(clock=clock)


@pytest.fixture
def key() -> str:
    return generate_key()


@pytest.fixture
def storage(inner: MemoryStorage, key: str) -> EncryptedStorage:
    return EncryptedStorage(inner, [key])


def secret_token(token_id: str = "tok-1", **fields: object) -> AuthToken:
    values: dict[str, object] = {
        "user_id": "user-1",
        "access_token": ACCESS,
        "refresh_token": REFRESH,
        "metadata": {"note": META_SECRET},
        "scopes": ["api"],
    }
    values.update(fields)
    return AuthToken(token_id=token_id, **values)  # type: ignore[arg-type]


def secret_session(**fields: object) -> SessionData:
    values: dict[str, object] = {
        "session_id": "",
        "user_id": "user-1",
        "ip_address": IP,
        "user_agent": AGENT,
        "data": {"secret": SESSION_SECRET},
    }
    values.update(fields)
    return SessionData(**values)  # type: ignore[arg-type]


def store_secrets(storage: AuthStorage) -> None:
    storage.store_token(secret_token())
    storage.store_session("sess-1", secret_session())
    storage.store_kv("kv-1", KV_SECRET, ttl=3600)


def assert_no_plaintext(blob: bytes) -> None:
    for secret in SECRETS:
        assert secret.encode() not in blob, "a secret reached the inner store in plaintext"
        # and not base64-encoded either (a store could base64 the raw value)
        assert base64.b64encode(secret.encode())[:16] not in blob


def assert_secrets_read_back(storage: AuthStorage) -> None:
    token = storage.get_token_by_access_token(ACCESS)
    assert token is not None and token.refresh_token == REFRESH and token.metadata == {"note": META_SECRET}
    session = storage.get_session("sess-1")
    assert session is not None and session.data == {"secret": SESSION_SECRET}
    assert session.ip_address == IP and session.user_agent == AGENT
    assert storage.get_kv("kv-1") == KV_SECRET


# -- keys ---------------------------------------------------------------------


def test_generate_key_is_urlsafe_text_of_32_random_bytes() -> None:
    keys = {generate_key() for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        assert len(key) == 44 and isinstance(key, str)
        assert len(base64.urlsafe_b64decode(key)) == 32


def test_keys_as_text_with_or_without_padding_and_as_raw_bytes(inner: MemoryStorage) -> None:
    raw = os.urandom(32)
    text = base64.urlsafe_b64encode(raw).decode()
    for form in (text, text.rstrip("="), f"  {text}\n", raw, text.encode()):
        storage = EncryptedStorage(inner, [form])
        storage.store_kv("k", b"v")
        # Every form is the same key: a storage built from another form reads it.
        assert EncryptedStorage(inner, [raw]).get_kv("k") == b"v"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "not base64 at all!",
        base64.urlsafe_b64encode(b"x" * 16).decode(),  # AES-128 length
        base64.urlsafe_b64encode(b"x" * 33).decode(),
        b"\xff" * 31,
        "ü" * 44,
    ],
    ids=["empty", "garbage", "16-bytes", "33-bytes", "31-raw-bytes", "non-ascii"],
)
def test_bad_key_material_is_a_configuration_error_that_does_not_echo_it(inner: MemoryStorage, bad: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        EncryptedStorage(inner, [generate_key(), bad])  # type: ignore[list-item]
    assert "#2" in str(info.value)
    if isinstance(bad, str) and len(bad) > 3:
        assert bad not in str(info.value)


def test_key_list_errors(inner: MemoryStorage, key: str) -> None:
    with pytest.raises(ConfigurationError):
        EncryptedStorage(inner, [])
    with pytest.raises(TypeError):
        EncryptedStorage(inner, key)  # a single key, not a list
    with pytest.raises(TypeError):
        EncryptedStorage(inner, [123])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        EncryptedStorage("memory://", [key])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="repeats"):
        EncryptedStorage(inner, [key, base64.urlsafe_b64decode(key)])


def test_repr_and_errors_show_no_key(inner: MemoryStorage, key: str) -> None:
    storage = EncryptedStorage(inner, [key, generate_key()])
    text = repr(storage)
    assert key not in text and key[:10] not in text
    assert "keys=<2>" in text
    raw = base64.urlsafe_b64decode(key)
    assert raw.hex() not in text


# -- nothing secret at rest -----------------------------------------------------


def test_inner_records_hold_no_secret(storage: EncryptedStorage, inner: MemoryStorage) -> None:
    store_secrets(storage)
    token = inner.get_token("tok-1")
    assert token is not None
    assert token.access_token != ACCESS and token.refresh_token is not None
    assert token.refresh_token.startswith(ENVELOPE_PREFIX) and token.metadata == {}  # the ciphertext's carrier
    assert token.user_id == "user-1" and token.scopes == ["api"]  # looked up or harmless: stays plain
    session = inner.get_session("sess-1")
    assert session is not None and session.data == {}
    # ip_address holds the expiry tag: the key id and a MAC of the id and expiry, in hex.
    assert session.ip_address is not None and len(session.ip_address) == 40 and session.user_agent is not None
    assert "10." not in session.ip_address
    assert session.user_agent.startswith(ENVELOPE_PREFIX)
    kv = inner.get_kv("kv-1")
    assert kv is not None
    assert_no_plaintext(repr(dataclasses.asdict(token)).encode() + repr(dataclasses.asdict(session)).encode() + kv)
    assert_secrets_read_back(storage)


def test_same_plaintext_gives_different_ciphertexts(storage: EncryptedStorage, inner: MemoryStorage) -> None:
    storage.store_kv("a", b"same")
    first = inner.get_kv("a")
    storage.store_kv("a", b"same")
    assert inner.get_kv("a") != first  # random nonce: equal values are not visible as equal


def test_sqlite_file_holds_no_plaintext(tmp_path: Path, clock: FakeClock, key: str) -> None:
    path = tmp_path / "enc.db"
    with open_storage(f"sqlite:///{path}", encryption_keys=[key], clock=clock) as storage:
        store_secrets(storage)
        # 100 more records so the secrets are not only in a page cache
        for i in range(100):
            storage.store_token(secret_token(f"tok-x{i}", access_token=f"{ACCESS}{i}"))
        assert_secrets_read_back(storage)
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("enc.db"))
    assert b"tok-1" in blob  # the ids are there: the file is what we think it is
    assert_no_plaintext(blob)


def test_redis_keys_and_values_hold_no_plaintext(clock: FakeClock, key: str) -> None:
    import redis

    url = require(REDIS_URL, "Redis")
    prefix = unique_prefix("enc").rstrip("_") + ":"
    client = redis.Redis.from_url(url)
    try:
        with open_storage(url, prefix=prefix, encryption_keys=[key], clock=clock) as storage:
            store_secrets(storage)
            assert_secrets_read_back(storage)
            dump = raw_redis(url, prefix)
            assert b"tok-1" in dump and b"sess-1" in dump and b"kv-1" in dump
            assert_no_plaintext(dump)
    finally:
        drop_redis_keys(client, prefix)
        client.close()


# -- ciphertexts are bound to their record ------------------------------------


def test_kv_ciphertext_moved_to_another_key_fails(storage: EncryptedStorage, inner: MemoryStorage) -> None:
    storage.store_kv("alice", b"alice's secret")
    storage.store_kv("bob", b"bob's secret")
    stolen = inner.get_kv("alice")
    assert stolen is not None
    inner.store_kv("bob", stolen)
    with pytest.raises(EncryptionError):
        storage.get_kv("bob")
    assert storage.get_kv("alice") == b"alice's secret"


def test_token_ciphertext_moved_to_another_token_fails(storage: EncryptedStorage, inner: MemoryStorage) -> None:
    storage.store_token(secret_token("t1", access_token="access-one"))
    storage.store_token(secret_token("t2", access_token="access-two"))
    one, two = inner.get_token("t1"), inner.get_token("t2")
    assert one is not None and two is not None
    two.refresh_token = one.refresh_token  # the ciphertext
    inner.update_token(two)
    with pytest.raises(EncryptionError):
        storage.get_token("t2")
    with pytest.raises(EncryptionError):
        storage.list_user_tokens("user-1")
    assert storage.get_token("t1") is not None


def test_token_moved_to_another_user_fails(storage: EncryptedStorage, inner: MemoryStorage) -> None:
    storage.store_token(secret_token("t1"))
    sealed = inner.get_token("t1")
    assert sealed is not None
    sealed.user_id = "mallory"
    inner.store_token(sealed)
    with pytest.raises(EncryptionError):
        storage.list_user_tokens("mallory")


def test_copied_access_token_index_is_detected(storage: EncryptedStorage, inner: MemoryStorage) -> None:
    storage.store_token(secret_token("victim", access_token="victim-access"))
    storage.store_token(secret_token("mallory", access_token="mallory-access"))
    victim, mallory = inner.get_token("victim"), inner.get_token("mallory")
    assert victim is not None and mallory is not None
    mallory.access_token = victim.access_token  # point the victim's index at mallory's record
    inner.store_token(mallory)
    with pytest.raises(EncryptionError):
        storage.get_token_by_access_token("victim-access")


def test_session_ciphertext_moved_to_another_session_fails(storage: EncryptedStorage, inner: MemoryStorage) -> None:
    storage.store_session("s1", secret_session(data={"n": 1}))
    storage.store_session("s2", secret_session(data={"n": 2}))
    one, two = inner.get_session("s1"), inner.get_session("s2")
    assert one is not None and two is not None
    two.user_agent = one.user_agent  # the ciphertext
    inner.store_session("s2", two)
    with pytest.raises(EncryptionError):
        storage.get_session("s2")
    with pytest.raises(EncryptionError):
        storage.list_user_sessions("user-1")


# -- wrong keys and tampering -------------------------------------------------


def test_wrong_key_is_an_encryption_error(storage: EncryptedStorage, inner: MemoryStorage) -> None:
    store_secrets(storage)
    stranger = EncryptedStorage(inner, [generate_key()])
    with pytest.raises(EncryptionError, match="not configured"):
        stranger.get_kv("kv-1")
    with pytest.raises(EncryptionError):
        stranger.get_token("tok-1")
    with pytest.raises(EncryptionError):
        stranger.get_session("sess-1")
    # A lookup by access token under the wrong key finds no index at all.
    assert stranger.get_token_by_access_token(ACCESS) is None


def test_wrong_key_with_the_same_key_id_fails_authentication(storage: EncryptedStorage, inner: MemoryStorage) -> None:
    storage.store_kv("k", b"secret")
    impostor = EncryptedStorage(inner, [generate_key()])
    # Make the impostor's key answer to the real key's id, as a 4-byte id collision would.
    real_id = storage._ring.current.key_id
    impostor._ring.current.key_id = real_id
    impostor._ring.by_id = {real_id: impostor._ring.current}
    with pytest.raises(EncryptionError, match="cannot decrypt"):
        impostor.get_kv("k")


@pytest.mark.parametrize("position", [0, 1, 5, 17, 30, -1])
def test_a_flipped_byte_anywhere_is_detected(storage: EncryptedStorage, inner: MemoryStorage, position: int) -> None:
    storage.store_kv("k", b"a secret value")
    blob = bytearray(inner.get_kv("k") or b"")
    blob[position] ^= 0x01
    inner.store_kv("k", bytes(blob))
    with pytest.raises(EncryptionError):
        storage.get_kv("k")


def test_tampered_token_and_session_are_detected(storage: EncryptedStorage, inner: MemoryStorage) -> None:
    store_secrets(storage)
    token = inner.get_token("tok-1")
    assert token is not None
    text = token.refresh_token
    assert text is not None
    # A digit of both carrier alphabets (hex, base64) that differs from the one replaced, in
    # any case: hex reads "A" as "a", so swapping in a letter could leave the bytes unchanged.
    token.refresh_token = text[:-5] + ("0" if text[-5] != "0" else "1") + text[-4:]
    inner.store_token(token)
    with pytest.raises(EncryptionError):
        storage.get_token_by_access_token(ACCESS)
    session = inner.get_session("sess-1")
    assert session is not None
    session.user_agent = ENVELOPE_PREFIX + "!!not base64!!"
    inner.store_session("sess-1", session)
    with pytest.raises(EncryptionError, match="malformed"):
        storage.get_session("sess-1")


def test_truncated_and_plaintext_records_are_encryption_errors(storage: EncryptedStorage, inner: MemoryStorage) -> None:
    inner.store_kv("short", b"\x01abc")
    with pytest.raises(EncryptionError, match="too short"):
        storage.get_kv("short")
    inner.store_kv("plain", b"x" * 64)
    with pytest.raises(EncryptionError):
        storage.get_kv("plain")
    inner.store_token(AuthToken("plain", "user-1", "plain-access", metadata={"a": 1}))
    with pytest.raises(EncryptionError, match="not encrypted"):
        storage.get_token("plain")
    inner.store_session("plain", SessionData("plain", "user-1"))
    with pytest.raises(EncryptionError, match="not encrypted"):
        storage.get_session("plain")


def test_error_messages_hold_no_secret(storage: EncryptedStorage, inner: MemoryStorage, key: str) -> None:
    store_secrets(storage)
    stranger = EncryptedStorage(inner, [generate_key()])
    for call in (lambda: stranger.get_kv("kv-1"), lambda: stranger.get_token("tok-1"),
                 lambda: stranger.get_session("sess-1")):
        with pytest.raises(EncryptionError) as info:
            call()
        message = str(info.value)
        assert "sess-1" not in message  # a session id is a credential
        assert key not in message and all(s not in message for s in SECRETS)


# -- rotation -----------------------------------------------------------------


def fill_under_old_key(old: EncryptedStorage, clock: FakeClock, n: int = 25) -> None:
    now = clock()
    old.store_tokens_bulk(
        [secret_token(f"t{i}", access_token=f"access-{i}", expires_at=now + timedelta(hours=1)) for i in range(n)]
        + [secret_token("expired", access_token="access-expired", expires_at=now - timedelta(seconds=1))]
    )
    old.store_sessions_bulk([(f"s{i}", secret_session(data={"i": i})) for i in range(n)])
    for i in range(n):
        old.store_kv(f"k{i}", f"value-{i}".encode(), ttl=100 + i)
    old.store_kv("forever", b"no ttl")


def test_rotation_old_records_readable_new_ones_under_new_key(inner: MemoryStorage, clock: FakeClock) -> None:
    old_key, new_key = generate_key(), generate_key()
    fill_under_old_key(EncryptedStorage(inner, [old_key]), clock)
    rotated = EncryptedStorage(inner, [new_key, old_key])
    token = rotated.get_token_by_access_token("access-3")  # found through the old key's index
    assert token is not None and token.token_id == "t3"
    assert rotated.get_kv("k3") == b"value-3"
    rotated.store_token(secret_token("fresh", access_token="fresh-access"))
    # The new key alone reads what the rotated storage wrote, not the old records.
    new_only = EncryptedStorage(inner, [new_key])
    assert new_only.get_token_by_access_token("fresh-access") is not None
    assert new_only.get_token_by_access_token("access-3") is None
    with pytest.raises(EncryptionError):
        new_only.get_token("t3")


def test_reencrypt_moves_everything_to_the_first_key(inner: MemoryStorage, clock: FakeClock) -> None:
    old_key, new_key = generate_key(), generate_key()
    fill_under_old_key(EncryptedStorage(inner, [old_key]), clock)
    rotated = EncryptedStorage(inner, [new_key, old_key])
    rotated.store_kv("already-new", b"x")
    seen: list[int] = []
    rewritten = rotated.reencrypt(batch_size=7, progress=seen.append)
    assert rewritten == 26 + 25 + 26  # tokens (one expired), sessions, kv (not "already-new")
    assert seen[-1] == rewritten and seen == sorted(seen) and len(seen) >= 3 * (25 // 7)
    assert rotated.reencrypt() == 0

    # The old key can go now.
    new_only = EncryptedStorage(inner, [new_key])
    for i in range(25):
        token = new_only.get_token_by_access_token(f"access-{i}")
        assert token is not None and token.token_id == f"t{i}" and token.refresh_token == REFRESH
        session = new_only.get_session(f"s{i}")
        assert session is not None and session.data == {"i": i} and session.ip_address == IP
        assert new_only.get_kv(f"k{i}") == f"value-{i}".encode()
    expired = new_only.get_token("expired")
    assert expired is not None and expired.refresh_token == REFRESH
    assert new_only.get_kv("forever") == b"no ttl"

    # kv TTLs survived the rewrite: k0 expires at +100 s, k24 at +124 s.
    clock.advance(100.5)
    assert new_only.get_kv("k0") is None and new_only.get_kv("k1") == b"value-1"
    clock.advance(24)
    assert new_only.list_kv_keys("k") == []
    assert new_only.get_kv("forever") == b"no ttl"


def test_reads_keep_working_while_reencrypt_runs(inner: MemoryStorage, clock: FakeClock) -> None:
    old_key, new_key = generate_key(), generate_key()
    fill_under_old_key(EncryptedStorage(inner, [old_key]), clock, n=60)
    rotated = EncryptedStorage(inner, [new_key, old_key])
    done = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not done.is_set():
                for i in range(0, 60, 7):
                    assert rotated.get_token_by_access_token(f"access-{i}") is not None
                    assert rotated.get_kv(f"k{i}") == f"value-{i}".encode()
                    session = rotated.get_session(f"s{i}")
                    assert session is not None and session.data == {"i": i}
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        assert rotated.reencrypt(batch_size=5) == 61 + 60 + 61
    finally:
        done.set()
        for t in threads:
            t.join()
    assert errors == []


def test_reencrypt_argument_errors(storage: EncryptedStorage) -> None:
    with pytest.raises(ValueError):
        storage.reencrypt(batch_size=0)
    with pytest.raises(TypeError):
        storage.reencrypt(batch_size=1.5)  # type: ignore[arg-type]
    assert storage.reencrypt() == 0


def test_reencrypt_stops_on_a_record_no_key_reads(inner: MemoryStorage, clock: FakeClock) -> None:
    lost_key, new_key = generate_key(), generate_key()
    EncryptedStorage(inner, [lost_key]).store_kv("orphan", b"x")
    with pytest.raises(EncryptionError):
        EncryptedStorage(inner, [new_key]).reencrypt()


@pytest.mark.parametrize("backend", ["sqlite-file", "redis"])
def test_reencrypt_on_real_backends(backend: str, tmp_path: Path, clock: FakeClock) -> None:
    old_key, new_key = generate_key(), generate_key()
    with BACKENDS[backend](tmp_path, clock) as inner:
        fill_under_old_key(EncryptedStorage(inner, [old_key]), clock, n=40)
        rotated = EncryptedStorage(inner, [new_key, old_key])
        assert rotated.reencrypt(batch_size=16) == 41 + 40 + 41
        new_only = EncryptedStorage(inner, [new_key])
        assert new_only.get_token_by_access_token("access-39") is not None
        assert new_only.get_session("s39") is not None
        assert new_only.get_kv("k39") == b"value-39"
        clock.advance(139.5)  # k39 had ttl=139 s: its expiry survived the rewrite
        assert new_only.get_kv("k39") is None and new_only.get_kv("forever") == b"no ttl"


# -- delegation ---------------------------------------------------------------


class _ClosingMemory(MemoryStorage):
    closed = False

    def close(self) -> None:
        self.closed = True


def test_maintenance_delegates_to_the_inner_store(clock: FakeClock, key: str) -> None:
    inner = _ClosingMemory(clock=clock)
    storage = EncryptedStorage(inner, [key])
    assert storage.inner is inner
    storage.store_session("s1", secret_session(expires_at=clock() + timedelta(seconds=5)))
    storage.store_kv("k", b"v", ttl=5)
    assert storage.count_active_sessions() == inner.count_active_sessions() == 1
    # The inner store also counts the encryption marker, which the wrapper hides.
    assert storage.stats() == {**inner.stats(), "kv_live": inner.stats()["kv_live"] - 1}
    assert storage.list_kv_keys() == ["k"] and sorted(inner.list_kv_keys()) == ["authkit:encrypted-store", "k"]
    clock.advance(6)
    assert storage.cleanup_expired().total == 2
    assert inner.stats()["sessions_expired"] == 0
    with storage.lock("job", timeout=0):
        with pytest.raises(TimeoutError):  # the wrapper and the inner store share one lock
            with inner.lock("job", timeout=0):
                pass
    with storage:
        pass
    assert inner.closed


# -- open_storage ---------------------------------------------------------------


def test_open_storage_with_encryption_keys(key: str) -> None:
    with open_storage("memory://", encryption_keys=[key]) as storage:
        assert isinstance(storage, EncryptedStorage)
        assert isinstance(storage.inner, MemoryStorage)
        store_secrets(storage)
        assert_secrets_read_back(storage)


def test_open_storage_with_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    new, old = generate_key(), generate_key()
    monkeypatch.setenv(ENCRYPTION_KEYS_ENV, f" {new} , {old},")
    with open_storage("memory://") as storage:
        assert isinstance(storage, EncryptedStorage)
        assert repr(storage).endswith("keys=<2>)")
        storage.store_kv("k", b"v")
        assert storage.get_kv("k") == b"v"
    monkeypatch.setenv(ENCRYPTION_KEYS_ENV, "")  # set but empty: an unrendered secret, never "no encryption"
    with pytest.raises(ConfigurationError, match="holds no key"):
        open_storage("memory://")
    monkeypatch.delenv(ENCRYPTION_KEYS_ENV)
    assert isinstance(open_storage("memory://"), MemoryStorage)


def test_open_storage_bad_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENCRYPTION_KEYS_ENV, " , ,")
    with pytest.raises(ConfigurationError, match="holds no key"):
        open_storage("memory://")
    monkeypatch.setenv(ENCRYPTION_KEYS_ENV, "hunter2-is-not-a-key")
    with pytest.raises(ConfigurationError) as info:
        open_storage("memory://")
    assert "hunter2" not in str(info.value)
    monkeypatch.delenv(ENCRYPTION_KEYS_ENV)
    with pytest.raises(ConfigurationError):
        open_storage("memory://", encryption_keys=["short"])


# -- threads and processes ------------------------------------------------------


def test_threads_share_one_encrypted_storage(storage: EncryptedStorage) -> None:
    def worker(n: int) -> None:
        for i in range(40):
            name = f"w{n}-{i}"
            storage.store_token(secret_token(name, access_token=f"access-{name}", user_id=f"u{n}"))
            got = storage.get_token_by_access_token(f"access-{name}")
            assert got is not None and got.token_id == name
            storage.store_kv(name, name.encode())
            assert storage.get_kv(name) == name.encode()
            storage.store_session(name, secret_session(data={"n": name}))
            session = storage.get_session(name)
            assert session is not None and session.data == {"n": name}

    run_threads(worker, 8)
    assert all(len(storage.list_user_tokens(f"u{n}")) == 40 for n in range(8))


def _process_worker(url: str, key: str, n: int) -> None:
    with open_storage(url, encryption_keys=[key]) as storage:
        for i in range(20):
            name = f"p{n}-{i}"
            storage.store_token(secret_token(name, access_token=f"access-{name}", user_id=f"proc{n}"))
            storage.store_kv(name, name.encode())


def test_processes_share_one_encrypted_sqlite_file(tmp_path: Path, key: str) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    open_storage(url, encryption_keys=[key]).close()  # create the schema once, before the workers race
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_worker, args=(url, key, n)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    with open_storage(url, encryption_keys=[key]) as storage:
        for n in range(3):
            for i in range(20):
                name = f"p{n}-{i}"
                got = storage.get_token_by_access_token(f"access-{name}")
                assert got is not None and got.token_id == name
                assert storage.get_kv(name) == name.encode()


def test_authentic_but_malformed_plaintext_is_an_encryption_error(
    storage: EncryptedStorage, inner: MemoryStorage
) -> None:
    # Only a holder of the key can produce this; the reader still refuses it cleanly.
    from authkit.storage._seal import token_ad

    none = b"\xff\xff\xff\xff"
    for plaintext in (b"\x00\x00\x00\x10ab", b"\x00\x00", none + none + b"[1]", none + none, b"\x00\x00\x00\x01\xff"):
        token = AuthToken("t1", "user-1", "x")
        envelope = storage._ring.seal(plaintext, token_ad(token))
        token.refresh_token = ENVELOPE_PREFIX + base64.b64encode(envelope).decode()
        inner.store_token(token)
        with pytest.raises(EncryptionError, match="malformed"):
            storage.get_token("t1")


# -- atomic primitives through the wrapper -----------------------------------------


def test_primitives_seal_what_they_write(storage: EncryptedStorage, inner: MemoryStorage) -> None:
    session = SessionData("", "u1", ip_address="10.9.8.7", data={"secret": "s3cr3t"})
    assert storage.create_session("s1", session) is True
    assert storage.replace_session("s1", dataclasses.replace(session, data={"secret": "other"})) is True
    sealed = inner.get_session("s1")
    assert sealed is not None and sealed.data == {} and sealed.ip_address != "10.9.8.7"
    assert sealed.user_agent is not None and sealed.user_agent.startswith(ENVELOPE_PREFIX)
    got = storage.get_session("s1")
    assert got is not None and got.data == {"secret": "other"} and got.ip_address == "10.9.8.7"
    assert storage.add_kv("k", b"plain-secret") is True
    raw = inner.get_kv("k")
    assert raw is not None and b"plain-secret" not in raw
    assert storage.get_kv("k") == b"plain-secret"


def test_counters_are_kept_in_clear_and_survive_reencrypt(inner: MemoryStorage, clock: FakeClock) -> None:
    old_key, new_key = generate_key(), generate_key()
    old = EncryptedStorage(inner, [old_key])
    assert old.incr_kv("hits", 41, ttl=60) == 41
    old.store_kv("secret", b"42")
    assert inner.get_kv("hits") == b"41"  # in clear: the inner store adds to it
    sealed = inner.get_kv("secret")
    assert sealed is not None and sealed != b"42"
    with pytest.raises(ValueError):  # a sealed value is no counter, even if its plaintext is a number
        old.incr_kv("secret")
    rotated = EncryptedStorage(inner, [new_key, old_key])
    assert rotated.reencrypt() == 1  # "secret"; the counter has nothing to re-encrypt
    assert rotated.incr_kv("hits") == 42
    entry = rotated.get_kv_entry("hits")
    assert entry is not None and entry.value == b"42" and entry.expires_at is not None
    assert EncryptedStorage(inner, [new_key]).get_kv("secret") == b"42"


def test_touch_kv_through_the_wrapper_moves_the_expiry(storage: EncryptedStorage, clock: FakeClock) -> None:
    storage.store_kv("k", b"v", ttl=10)
    assert storage.touch_kv("k", 100) is True
    clock.advance(50)
    entry = storage.get_kv_entry("k")
    assert entry is not None and entry.value == b"v" and entry.expires_at is not None
    assert entry.expires_at > clock()


# -- records of the previous release (format version 3) --------------------------------

# What release 3's EncryptedStorage left in a MemoryStorage (the fields it writes; the rest is
# visible as stored), made by that release with V3_KEY: base64 carriers, every bound field in
# the associated data, an expiry tag over the expiry as text.
V3_KEY = "S0lTVVBFUlNFQ1JFVEtFWUZPUlRIRVYzRklYVFVSRTE="
V3_TIME = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
V3_TOKEN_INDEX = "9c0f31c83013a50fd9d83d8ad09a439b1b9441a1f82522484407813208a6b9f3"
V3_TOKEN_TEXT = (
    "authkit:enc:A+4wO7zsyYIa6jpi9wYtJsPia88fPLldfvEiN+ALMyYfHMKqrAoXHHSdkZCRL6btFoWCxzU85joWqTS/PNLO0iiSbbQbxni173xDKalV"
    "Yoi+7s97LBcWXKcYA4sLzAoSlq3aDcI7caJHseBP+pjY"
)
V3_SESSION_TAG = "ee303bbcee14385137273a1480d78191405daf5d"
V3_SESSION_TEXT = (
    "authkit:enc:A+4wO7y89VZCfoHAEtgJJe7BF7n+nUpStsAPeotXuglb90gSQfhWZvc/VYge0hu7m2IJw3F8gOaua7XsmoxerqFZ9FDYwVWCn3M6/6iB"
    "rX7FEKwtNpND"
)
V3_KV = bytes.fromhex("03ee303bbc9f280fb2a27881b832cefb2a8d5911c91df95b4fc83eb98f8b11f02143fb931a8c3431f9e0f96482")


def v3_store(inner: MemoryStorage, **token_fields: object) -> None:
    """Put release 3's records into ``inner`` as that release wrote them (``token_fields`` changed)."""
    fields: dict[str, object] = {
        "token_id": "tok-v3", "user_id": "user-v3", "access_token": V3_TOKEN_INDEX, "refresh_token": V3_TOKEN_TEXT,
        "scopes": ["api", "web"], "issued_at": V3_TIME, "expires_at": V3_TIME + timedelta(hours=2),
        "client_id": "client-v3", "metadata": {},
    }
    fields.update(token_fields)
    inner.store_token(AuthToken(**fields))  # type: ignore[arg-type]
    inner.store_session("sess-v3", SessionData(
        "", "user-v3", created_at=V3_TIME, last_activity=V3_TIME, expires_at=V3_TIME + timedelta(hours=1),
        ip_address=V3_SESSION_TAG, user_agent=V3_SESSION_TEXT, data={},
    ))
    inner.store_kv("kv-v3", V3_KV)


@pytest.fixture
def v3_inner() -> MemoryStorage:
    return MemoryStorage(clock=lambda: V3_TIME)


def test_records_of_the_previous_release_are_read(v3_inner: MemoryStorage) -> None:
    v3_store(v3_inner)
    storage = EncryptedStorage(v3_inner, [V3_KEY])
    for token in (storage.get_token("tok-v3"), storage.get_token_by_access_token("access-v3-secret")):
        assert token is not None
        assert (token.access_token, token.refresh_token) == ("access-v3-secret", "refresh-v3-secret")
        assert token.metadata == {"instance_url": "https://v3.example"} and token.scopes == ["api", "web"]
    session = storage.get_session("sess-v3")
    assert session is not None
    assert (session.ip_address, session.user_agent) == ("10.3.3.3", "agent-v3")
    assert session.data == {"secret": "session-v3-secret"}
    assert storage.get_kv("kv-v3") == b"kv-v3-secret"


@pytest.mark.parametrize("change", [{"scopes": ["api", "web", "full"]}, {"client_id": "other"},
                                    {"expires_at": V3_TIME + timedelta(days=9)}, {"user_id": "user-x"}])
def test_a_previous_release_record_with_a_changed_bound_field_is_refused(
    v3_inner: MemoryStorage, change: dict[str, object]
) -> None:
    v3_store(v3_inner, **change)
    with pytest.raises(EncryptionError, match="tampered"):
        EncryptedStorage(v3_inner, [V3_KEY]).get_token("tok-v3")


def test_a_previous_release_session_is_touched_and_reencrypt_moves_every_record_to_the_new_format(
    v3_inner: MemoryStorage,
) -> None:
    v3_store(v3_inner)
    storage = EncryptedStorage(v3_inner, [V3_KEY])
    later = V3_TIME + timedelta(hours=5)
    assert storage.touch_session("sess-v3", later)  # a new tag over the old ciphertext
    session = storage.get_session("sess-v3")
    assert session is not None and session.expires_at == later and session.data == {"secret": "session-v3-secret"}
    raw = v3_inner.get_session("sess-v3")
    assert raw is not None and raw.ip_address != V3_SESSION_TAG
    raw.ip_address = V3_SESSION_TAG  # the old tag no longer matches the new expiry
    v3_inner.store_session("sess-v3", raw)
    with pytest.raises(EncryptionError, match="tampered"):
        storage.get_session("sess-v3")
    v3_store(v3_inner)

    assert storage.reencrypt() == 3
    token, session, kv = v3_inner.get_token("tok-v3"), v3_inner.get_session("sess-v3"), v3_inner.get_kv("kv-v3")
    assert token is not None and token.refresh_token is not None
    assert token.refresh_token.startswith(ENVELOPE_PREFIX + "04")
    assert session is not None and session.user_agent is not None
    assert session.user_agent.startswith(ENVELOPE_PREFIX + "04") and kv is not None and kv[0] == 4
    assert storage.reencrypt() == 0
    got = storage.get_token_by_access_token("access-v3-secret")
    assert got is not None and got.refresh_token == "refresh-v3-secret" and got.scopes == ["api", "web"]
    got_session = storage.get_session("sess-v3")
    assert got_session is not None and got_session.data == {"secret": "session-v3-secret"}
    assert storage.get_kv("kv-v3") == b"kv-v3-secret"


# -- records of the current format (version 4), as stored before its reads were rewritten ------

# What EncryptedStorage wrote into a MemoryStorage with V4_KEY (the release whose reads opened a
# record through _envelope, token_ad, session_ad and _record): the reads written out in one frame
# must open exactly these, and refuse them once a bound field changes.
V4_KEY = "S0lTVVBFUlNFQ1JFVEtFWUZPUlRIRVY0RklYVFVSRTE="
V4_TIME = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
V4_TOKEN_INDEX = "1b25bdf4ea49ba4c17fedf3e4092c37241e0dba811e33067782e401df9d40506"
V4_TOKEN_TEXT = (
    "authkit:enc:04ec2f3a05418442423f7d47a58172a5feccc32d91eb657c98374168bcad2238c710ed3bb7451fe76e65eff9cda2"
    "deea22fe51bee2af3bc1d79b7f1308c94b774d2d5342aee914c2ec313cea0e002dae2a5d974357f983f1b45a4ea87f8b0dcbd800"
    "6490b39aad79bf113d806d0a64da0ad396ae424de5391e9f6bad3d461436d58e0798633349f93159a6d2532f5b3a7972"
)
V4_SESSION_TAG = "ec2f3a058c3b3783ea53922e232b34c502102e2b"
V4_SESSION_TEXT = (
    "authkit:enc:04ec2f3a0578b7dc6fc66552b28554e53e11839afbb6b083e6b5b93bcfcd74defae4ab6e271aa50727d86d03bf53"
    "b338df2bca3e9b71e178bbe3759ca56f6657f673aa6eb5b662cd82020b6d61b85ef7c2b740704d9d3f"
)
V4_KV = bytes.fromhex("04ec2f3a05b23fcdc4e92c7c36638fab4ac2948ba0a60d7c04a6bc2589b05a12930eea8f0216215e97b140b9f7")


def v4_store(inner: MemoryStorage, token_fields: dict[str, object] | None = None,
             session_fields: dict[str, object] | None = None) -> None:
    """Put the format 4 records into ``inner`` as they were stored (with ``*_fields`` changed)."""
    token: dict[str, object] = {
        "token_id": "tok-v4", "user_id": "user-v4", "access_token": V4_TOKEN_INDEX, "refresh_token": V4_TOKEN_TEXT,
        "scopes": ["api", "web"], "issued_at": V4_TIME, "expires_at": V4_TIME + timedelta(hours=2),
        "client_id": "client-v4", "metadata": {},
    }
    token.update(token_fields or {})
    inner.store_token(AuthToken(**token))  # type: ignore[arg-type]
    session: dict[str, object] = {
        "session_id": "", "user_id": "user-v4", "created_at": V4_TIME, "last_activity": V4_TIME,
        "expires_at": V4_TIME + timedelta(hours=1), "ip_address": V4_SESSION_TAG, "user_agent": V4_SESSION_TEXT,
    }
    session.update(session_fields or {})
    inner.store_session("sess-v4", SessionData(**session))  # type: ignore[arg-type]
    inner.store_kv("kv-v4", V4_KV)


def test_stored_records_of_the_current_format_are_read() -> None:
    inner = MemoryStorage(clock=lambda: V4_TIME)
    v4_store(inner)
    storage = EncryptedStorage(inner, [V4_KEY])
    for token in (storage.get_token("tok-v4"), storage.get_token_by_access_token("access-v4-secret")):
        assert token is not None
        assert (token.access_token, token.refresh_token) == ("access-v4-secret", "refresh-v4-secret")
        assert token.metadata == {"instance_url": "https://v4.example"} and token.scopes == ["api", "web"]
        assert token.client_id == "client-v4"
    session = storage.get_session("sess-v4")
    assert session is not None
    assert (session.ip_address, session.user_agent) == ("10.4.4.4", "agent-v4")
    assert session.data == {"secret": "session-v4-secret"}
    assert storage.get_kv("kv-v4") == b"kv-v4-secret"
    assert storage.reencrypt() == 0  # already the current format and key


@pytest.mark.parametrize("token_change", [
    {"scopes": ["api"]}, {"client_id": "other"}, {"client_id": None}, {"token_type": "MAC"},
    {"issued_at": V4_TIME + timedelta(microseconds=1)}, {"expires_at": V4_TIME + timedelta(days=9)},
    {"expires_at": None}, {"user_id": "user-x"}, {"token_id": "tok-x"},
])
def test_a_stored_current_format_token_with_a_changed_bound_field_is_refused(token_change: dict[str, object]) -> None:
    inner = MemoryStorage(clock=lambda: V4_TIME)
    v4_store(inner, token_fields=token_change)
    storage = EncryptedStorage(inner, [V4_KEY])
    token_id = str(token_change.get("token_id", "tok-v4"))
    with pytest.raises(EncryptionError, match="tampered"):
        storage.get_token(token_id)


@pytest.mark.parametrize("session_change", [
    {"created_at": V4_TIME - timedelta(seconds=1)}, {"expires_at": V4_TIME + timedelta(days=9)},
    {"user_id": "user-x"}, {"ip_address": "ec2f3a05" + "0" * 32}, {"ip_address": None},
])
def test_a_stored_current_format_session_with_a_changed_bound_field_is_refused(
    session_change: dict[str, object],
) -> None:
    inner = MemoryStorage(clock=lambda: V4_TIME)
    v4_store(inner, session_fields=session_change)
    with pytest.raises(EncryptionError, match="tampered"):
        EncryptedStorage(inner, [V4_KEY]).get_session("sess-v4")


def test_a_stored_current_format_kv_value_moved_to_another_key_is_refused() -> None:
    inner = MemoryStorage(clock=lambda: V4_TIME)
    v4_store(inner)
    inner.store_kv("kv-other", V4_KV)
    with pytest.raises(EncryptionError, match="tampered"):
        EncryptedStorage(inner, [V4_KEY]).get_kv("kv-other")


def test_a_large_record_is_carried_as_base64_and_a_small_one_as_hex(storage: EncryptedStorage,
                                                                     inner: MemoryStorage) -> None:
    storage.store_session("small", secret_session())
    storage.store_session("large", secret_session(data={"blob": "x" * (1 << 17)}))
    small, large = inner.get_session("small"), inner.get_session("large")
    assert small is not None and small.user_agent is not None and large is not None and large.user_agent is not None
    assert small.user_agent.startswith(ENVELOPE_PREFIX + "04")
    assert large.user_agent.startswith(ENVELOPE_PREFIX + "B")  # base64 of the version byte 4
    assert len(large.user_agent) < (1 << 17) * 4 // 3 + 1000
    got = storage.get_session("large")
    assert got is not None and got.data == {"blob": "x" * (1 << 17)}


def test_times_are_bound_by_their_instant_whatever_the_zone_or_class() -> None:
    from authkit.storage._seal import _NO_TIME, _instant

    class Subclass(datetime):  # pickles itself its own way: the bytes must not change
        def __reduce__(self) -> tuple[object, ...]:
            return (Subclass, ())

    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    same = [moment.astimezone(timezone(timedelta(hours=-5))),
            Subclass(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)]
    assert all(_instant(other) == _instant(moment) for other in same)
    assert _instant(moment + timedelta(microseconds=1)) != _instant(moment)
    latest = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)
    assert len(_instant(latest)) == 10 and _instant(latest)[0] < 0xFF == _NO_TIME[0]
