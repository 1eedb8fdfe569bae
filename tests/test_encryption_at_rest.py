"""Security at rest on every backend: the encrypted-store marker, bound fields, key
sources, raw scans of what the servers hold, secrets in output, and file modes
(``encrypt_existing`` / ``authkit encrypt``: ``test_encrypt_existing.py``).

Every test that reads "the database" reads it raw (``tests/at_rest.py``).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from authkit.errors import ConfigurationError, EncryptionError, StorageError
from authkit.models import AuthToken, SessionData
from authkit.storage import AuthStorage, MemoryStorage, open_storage
from authkit.storage._marker import MARKER_KEY
from authkit.storage.encrypted import EncryptedStorage, generate_key
from authkit.storage.keys import ENCRYPTION_KEY_FILE_ENV, ENCRYPTION_KEYS_ENV, read_key_file
from tests.at_rest import (
    ACCESS,
    IP,
    KV_SECRET,
    REFRESH,
    ROOT,
    SESSION_SECRET,
    Site,
    assert_no_secret,
    make_site,
    secret_session,
    secret_token,
)
from tests.clock import FakeClock
from tests.services import POSTGRES_URL, require, unique_prefix

# -- 1. an encrypted store knows it is encrypted ------------------------------------------


def test_opening_an_encrypted_store_without_keys_is_refused(site: Site, key: str) -> None:
    with site.open(encryption_keys=[key]) as storage:
        storage.store_kv("k", b"v")
        storage.store_session("s1", secret_session(expires_at=site.clock() + timedelta(hours=1)))
    with pytest.raises(ConfigurationError, match="encrypted") as info:
        site.open()
    assert key not in str(info.value)
    with pytest.raises(ConfigurationError):
        site.open(encryption_keys=[])
    with site.open(encryption_keys=[key]) as storage:  # the keys still open it
        assert storage.get_kv("k") == b"v"


def test_a_plain_backend_built_directly_refuses_every_call_and_writes_nothing(site: Site, key: str) -> None:
    with site.open(encryption_keys=[key]) as storage:
        storage.store_kv("k", b"v")
    if site.name == "redis":
        from authkit.storage.redis import RedisStorage

        plain: AuthStorage = RedisStorage.from_url(site.url, prefix=site.prefix)
    else:
        from authkit.storage.sql import SqlStorage

        plain = SqlStorage(site.url, prefix=site.prefix)
    with plain:
        for call in (lambda: plain.store_kv("k", b"plaintext"), lambda: plain.get_kv("k"),
                     lambda: plain.store_session("s", secret_session()), lambda: plain.get_session("s"),
                     lambda: plain.list_kv_keys(), lambda: plain.stats()):
            with pytest.raises(ConfigurationError, match="encrypted"):
                call()
    with site.open(encryption_keys=[key]) as storage:
        assert storage.get_kv("k") == b"v" and storage.get_session("s") is None


def test_a_plain_store_stays_plain_and_opens_without_keys(site: Site) -> None:
    with site.open() as storage:
        storage.store_kv("k", b"v")
    with site.open() as storage:
        assert storage.get_kv("k") == b"v"


def test_empty_key_lists_are_configuration_errors_everywhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(ENCRYPTION_KEYS_ENV, raising=False)
    monkeypatch.delenv(ENCRYPTION_KEY_FILE_ENV, raising=False)
    for empty in ([], (), lambda: []):
        with pytest.raises(ConfigurationError, match="empty"):
            open_storage("memory://", encryption_keys=empty)
    with pytest.raises(ConfigurationError):
        EncryptedStorage(MemoryStorage(), [])
    for value in ("", "  ", ",,"):
        monkeypatch.setenv(ENCRYPTION_KEYS_ENV, value)
        with pytest.raises(ConfigurationError, match=ENCRYPTION_KEYS_ENV):
            open_storage("memory://")
    monkeypatch.delenv(ENCRYPTION_KEYS_ENV)
    monkeypatch.setenv(ENCRYPTION_KEY_FILE_ENV, "")
    with pytest.raises(ConfigurationError, match=ENCRYPTION_KEY_FILE_ENV):
        open_storage("memory://")


def test_flask_storage_options_with_an_empty_key_list(tmp_path: Path) -> None:
    pytest.importorskip("flask")
    from flask import Flask, session

    from authkit.contrib.flask import AuthKit

    app = Flask(__name__)
    app.testing = True
    app.config.update(SECRET_KEY="x", AUTHKIT_STORAGE_URL=f"sqlite:///{tmp_path / 'f.db'}",
                      AUTHKIT_STORAGE_OPTIONS={"encryption_keys": []})
    AuthKit(app)

    @app.route("/")
    def index() -> str:
        session["user_id"] = "u1"
        return "ok"

    with pytest.raises(ConfigurationError, match="empty"):
        app.test_client().get("/")
    assert not (tmp_path / "f.db").exists()  # nothing was opened, nothing written in clear


def test_django_settings_with_an_empty_key_list(tmp_path: Path) -> None:
    """Django reads AUTHKIT_STORAGE_OPTIONS; run in a subprocess with its own settings."""
    pytest.importorskip("django")
    code = (
        "from django.conf import settings\n"
        f"settings.configure(AUTHKIT_STORAGE_URL='sqlite:///{tmp_path / 'd.db'}',"
        " AUTHKIT_STORAGE_OPTIONS={'encryption_keys': []})\n"
        "from authkit.errors import ConfigurationError\n"
        "from authkit.contrib.django import get_storage\n"
        "try:\n"
        "    get_storage()\n"
        "except ConfigurationError as exc:\n"
        "    print('refused:', exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHKIT_")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert "refused:" in result.stdout and "empty" in result.stdout, result.stdout + result.stderr
    assert not (tmp_path / "d.db").exists()


def test_the_marker_is_hidden_and_reserved(key: str, clock: FakeClock) -> None:
    inner = MemoryStorage(clock=clock)
    storage = EncryptedStorage(inner, [key])
    storage.store_kv("a", b"1")
    assert storage.list_kv_keys() == ["a"] and storage.stats()["kv_live"] == 1
    assert MARKER_KEY in inner.list_kv_keys()
    for call in (lambda: storage.store_kv(MARKER_KEY, b"x"), lambda: storage.get_kv(MARKER_KEY),
                 lambda: storage.delete_kv(MARKER_KEY)):
        with pytest.raises(ValueError, match="reserved"):
            call()
    assert storage.cleanup_expired().total == 0 and MARKER_KEY in inner.list_kv_keys()


# -- 4. authenticated records: bound fields ------------------------------------------------


TOKEN_TAMPERS: dict[str, Callable[[AuthToken], None]] = {
    "expires_at": lambda t: setattr(t, "expires_at", (t.expires_at or t.issued_at) + timedelta(days=365)),
    "scopes": lambda t: setattr(t, "scopes", [*t.scopes, "full"]),
    "client_id": lambda t: setattr(t, "client_id", "another-client"),
    "user_id": lambda t: setattr(t, "user_id", "mallory"),
    "token_type": lambda t: setattr(t, "token_type", "MAC"),
    "issued_at": lambda t: setattr(t, "issued_at", t.issued_at + timedelta(seconds=1)),
}

SESSION_TAMPERS: dict[str, Callable[[SessionData], None]] = {
    "expires_at": lambda s: setattr(s, "expires_at", (s.expires_at or s.created_at) + timedelta(days=365)),
    "user_id": lambda s: setattr(s, "user_id", "mallory"),
    "created_at": lambda s: setattr(s, "created_at", s.created_at - timedelta(days=1)),
}


def test_changing_a_bound_token_field_in_the_database_is_an_encryption_error(site: Site, key: str) -> None:
    with site.open(encryption_keys=[key]) as storage:
        assert isinstance(storage, EncryptedStorage)
        expires = site.clock() + timedelta(hours=1)
        for field in TOKEN_TAMPERS:
            storage.store_token(secret_token(f"tok-{field}", access_token=f"{ACCESS}-{field}", expires_at=expires))
        for field, tamper in TOKEN_TAMPERS.items():
            sealed = storage.inner.get_token(f"tok-{field}")
            assert sealed is not None
            tamper(sealed)
            storage.inner.store_token(sealed)  # what someone with write access to the database does
            with pytest.raises(EncryptionError, match="tampered"):
                storage.get_token(f"tok-{field}")
            if field != "user_id":  # (moved to another user: the lookup by user no longer lists it)
                with pytest.raises(EncryptionError):
                    storage.get_token_by_access_token(f"{ACCESS}-{field}")


def test_changing_a_bound_session_field_in_the_database_is_an_encryption_error(site: Site, key: str) -> None:
    with site.open(encryption_keys=[key]) as storage:
        assert isinstance(storage, EncryptedStorage)
        for field in SESSION_TAMPERS:
            storage.store_session(f"s-{field}", secret_session(expires_at=site.clock() + timedelta(hours=1)))
        for field, tamper in SESSION_TAMPERS.items():
            sealed = storage.inner.get_session(f"s-{field}")
            assert sealed is not None
            tamper(sealed)
            storage.inner.store_session(f"s-{field}", sealed)
            with pytest.raises(EncryptionError, match="tampered"):
                storage.get_session(f"s-{field}")


def test_extending_an_expiry_with_raw_sql_is_detected(tmp_path: Path, clock: FakeClock, key: str) -> None:
    import sqlalchemy as sa

    site = make_site("sqlite", tmp_path, clock)
    with site.open(encryption_keys=[key]) as storage:
        storage.store_session("s1", secret_session(expires_at=clock() + timedelta(minutes=5)))
        storage.store_token(secret_token(expires_at=clock() + timedelta(minutes=5)))
    engine = sa.create_engine(site.url)
    with engine.begin() as conn:
        for name in ("authkit_sessions", "authkit_tokens"):
            table = sa.Table(name, sa.MetaData(), autoload_with=conn)
            conn.execute(sa.update(table).values(expires_at=table.c.expires_at + 10**12))  # +11 days
    engine.dispose()
    with site.open(encryption_keys=[key]) as storage:
        with pytest.raises(EncryptionError):
            storage.get_session("s1")
        with pytest.raises(EncryptionError):
            storage.get_token("tok-1")


def test_unbound_fields_can_change(key: str, clock: FakeClock) -> None:
    """last_activity is not bound (touching it grants nothing); a kv entry's expiry is the store's TTL."""
    inner = MemoryStorage(clock=clock)
    storage = EncryptedStorage(inner, [key])
    storage.store_session("s1", secret_session(expires_at=clock() + timedelta(hours=1)))
    sealed = inner.get_session("s1")
    assert sealed is not None
    sealed.last_activity += timedelta(seconds=30)
    inner.store_session("s1", sealed)
    session = storage.get_session("s1")
    assert session is not None and session.data == {"secret": SESSION_SECRET}


def test_touch_session_through_the_wrapper_tags_the_new_expiry(site: Site, key: str) -> None:
    with site.open(encryption_keys=[key]) as storage:
        start = site.clock()
        storage.store_session("s1", secret_session(expires_at=start + timedelta(minutes=5)))
        later = start + timedelta(hours=2)
        assert storage.touch_session("s1", later, last_activity=start + timedelta(minutes=1))
        session = storage.get_session("s1")
        assert session is not None and session.expires_at == later and session.data == {"secret": SESSION_SECRET}
        assert session.ip_address == IP and session.last_activity == start + timedelta(minutes=1)
        assert not storage.touch_session("missing", later)
        site.clock.advance(3600)  # past the old expiry, before the new one: still live
        assert storage.get_session("s1") is not None
        # The expiry tag the touch wrote binds the new expiry: moving it by hand is detected.
        assert isinstance(storage, EncryptedStorage)
        sealed = storage.inner.get_session("s1")
        assert sealed is not None
        sealed.expires_at = later + timedelta(days=30)
        storage.inner.store_session("s1", sealed)
        with pytest.raises(EncryptionError):
            storage.get_session("s1")
        # touch_kv: one step on the server (a kv expiry is the store's own TTL, not bound).
        storage.store_kv("k", KV_SECRET, ttl=60)
        assert storage.touch_kv("k", 7200)
        entry = storage.get_kv_entry("k")
        assert entry is not None and entry.value == KV_SECRET
        assert entry.expires_at is not None and entry.expires_at > site.clock() + timedelta(seconds=7000)
    assert_no_secret(site.raw())


# -- raw scans after every kind of write --------------------------------------------------


def test_no_secret_in_clear_after_every_kind_of_write(site: Site, key: str) -> None:
    with site.open(encryption_keys=[key]) as storage:
        now = site.clock()
        storage.store_token(secret_token("t1", expires_at=now + timedelta(hours=1)))
        storage.update_token(secret_token("t1", expires_at=now + timedelta(hours=2)))
        storage.store_tokens_bulk([secret_token(f"b{i}", access_token=f"{ACCESS}{i}") for i in range(3)])
        storage.store_session("s1", secret_session())
        storage.store_sessions_bulk([(f"sb{i}", secret_session()) for i in range(3)])
        storage.store_kv("k1", KV_SECRET, ttl=60)
        storage.store_kv("k2", KV_SECRET)
        assert storage.create_session("c1", secret_session(expires_at=now + timedelta(hours=1)))
        assert storage.replace_session("c1", secret_session(data={"secret": SESSION_SECRET, "n": 2},
                                                      expires_at=now + timedelta(hours=1)))
        assert storage.touch_session("c1", now + timedelta(hours=3))
        assert storage.add_kv("a1", KV_SECRET, ttl=60) and storage.touch_kv("a1", 120)
        assert storage.incr_kv("counter", 2) == 2
        assert storage.get_token_by_access_token(ACCESS) is not None
        session = storage.get_session("c1")
        assert session is not None and session.data["n"] == 2
        blob = site.raw()
    assert b"t1" in blob or b"sb1" in blob  # the ids are there: we read the right place
    assert_no_secret(blob)


# -- 3. keys from where operators keep them ---------------------------------------------------


def _key_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "authkit.keys"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path, key: str) -> None:
    for mode in (0o644, 0o640, 0o604, 0o660):
        path = _key_file(tmp_path, key + "\n", mode)
        with pytest.raises(ConfigurationError, match="chmod 600") as info:
            open_storage("memory://", encryption_keys=path)
        assert key not in str(info.value)
    path = _key_file(tmp_path, f"# newest first\n{key}\n\n{generate_key()}\n", 0o600)
    assert read_key_file(path)[0] == key
    with open_storage("memory://", encryption_keys=path) as storage:
        assert repr(storage).endswith("keys=<2>)")
    os.chmod(path, 0o400)
    assert len(read_key_file(path)) == 2


def test_key_file_errors_never_echo_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secretish = "hunter2-not-a-key-at-all"
    path = _key_file(tmp_path, secretish + "\n")
    with pytest.raises(ConfigurationError) as info:
        open_storage("memory://", encryption_keys=path)
    assert secretish not in str(info.value) and "#1" in str(info.value)
    for text in ("", "# only a comment\n"):
        with pytest.raises(ConfigurationError, match="holds no key"):
            read_key_file(_key_file(tmp_path, text))
    with pytest.raises(ConfigurationError, match="cannot open"):
        read_key_file(tmp_path / "missing")
    with pytest.raises(ConfigurationError, match="not a regular file"):
        read_key_file(tmp_path)
    passwd = Path("/etc/passwd")
    if passwd.exists():
        with pytest.raises(ConfigurationError) as info:
            read_key_file(passwd)
        assert "root:" not in str(info.value)


def test_the_key_file_variable(tmp_path: Path, key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENCRYPTION_KEYS_ENV, raising=False)
    path = _key_file(tmp_path, key)
    monkeypatch.setenv(ENCRYPTION_KEY_FILE_ENV, str(path))
    with open_storage("memory://") as storage:
        assert isinstance(storage, EncryptedStorage)
    monkeypatch.setenv(ENCRYPTION_KEYS_ENV, key)
    with pytest.raises(ConfigurationError, match="not both"):
        open_storage("memory://")


def test_a_key_provider(key: str) -> None:
    calls = []

    def provider() -> list[str]:
        calls.append(1)
        return [key]

    with open_storage("memory://", encryption_keys=provider) as storage:
        storage.store_kv("k", b"v")
        assert storage.get_kv("k") == b"v"
    assert calls == [1]  # called once, when the storage is built

    def failing() -> list[str]:
        raise RuntimeError(f"vault said no, token={key}")

    with pytest.raises(ConfigurationError, match="RuntimeError") as info:
        open_storage("memory://", encryption_keys=failing)
    assert key not in str(info.value) and info.value.__cause__ is None
    with pytest.raises(ConfigurationError, match="list"):
        open_storage("memory://", encryption_keys=lambda: key)
    with pytest.raises(TypeError):
        open_storage("memory://", encryption_keys=key)  # a bare key: a list is required


# -- 5. no secret in any output ------------------------------------------------------------


def test_errors_mask_passwords_in_every_url_part() -> None:
    pytest.importorskip("psycopg")
    from authkit.storage._redact import redact_url
    from authkit.storage.sql import SqlStorage

    secret = "Pg-Secret-123"
    url = f"postgresql://postgres:{secret}@127.0.0.1:1/test?password={secret}&connect_timeout=1"
    with pytest.raises(StorageError) as info:
        SqlStorage(url)
    assert secret not in str(info.value)
    assert secret not in redact_url(url) and "connect_timeout=1" in redact_url(url)


def test_sql_repr_masks_a_query_password() -> None:
    from authkit.storage.sql import SqlStorage

    secret = "Query-Secret-456"
    url = require(POSTGRES_URL, "PostgreSQL")
    joiner = "&" if "?" in url else "?"
    storage = SqlStorage(f"{url}{joiner}password={secret}", prefix=unique_prefix("q"))
    try:
        assert secret not in repr(storage) and "password=***" in repr(storage)
    finally:
        storage.drop_schema()
        storage.close()


def test_redis_errors_mask_a_query_password() -> None:
    pytest.importorskip("redis")
    from authkit.storage.redis import RedisStorage

    secret = "Redis-Secret-789"
    # Opening checks the store's marker key: the first round trip, and the first failure.
    with pytest.raises(StorageError) as info:
        RedisStorage.from_url(f"redis://127.0.0.1:1/0?password={secret}", socket_connect_timeout=0.5)
    assert "unavailable" in str(info.value) and secret not in str(info.value)


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHKIT_", "SF_"))}
    base["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "authkit", *args], env={**base, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_command_output_holds_no_secret_on_any_failure_path(tmp_path: Path, key: str) -> None:
    password = "Cli-Pass-0042"
    bad_key = "hunter2hunter2-not-a-key"
    loose = _key_file(tmp_path, key + "\n", 0o644)
    garbage = tmp_path / "garbage.keys"
    garbage.write_text(bad_key + "\n")
    garbage.chmod(0o600)
    db = f"sqlite:///{tmp_path / 'ok.db'}"
    runs = [
        (("stats", "--storage", f"postgresql://u:{password}@127.0.0.1:1/db?password={password}"), {}),
        (("stats", "--json", "--storage", f"postgresql://u@127.0.0.1:1/db?password={password}"), {}),
        (("init", "--json", "--storage", f"mysql://u:{password}@127.0.0.1:1/db"), {}),
        (("stats", "--storage", f"redis://:{password}@127.0.0.1:1/0"), {}),
        (("init", "--storage", db), {ENCRYPTION_KEYS_ENV: bad_key}),
        (("init", "--json", "--storage", db), {ENCRYPTION_KEY_FILE_ENV: str(loose)}),
        (("init", "--storage", db), {ENCRYPTION_KEY_FILE_ENV: str(garbage)}),
        (("encrypt", "--storage", db), {ENCRYPTION_KEYS_ENV: bad_key}),
        (("init", "--storage", f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}?password={password}"), {}),
        (("init", "--storage", f"bogus://u:{password}@h/d"), {}),
    ]
    for args, env in runs:
        result = _cli(*args, env=env, cwd=tmp_path)
        text = result.stdout + result.stderr
        assert result.returncode != 0, (args, text)
        for secret in (password, bad_key, key):
            assert secret not in text, (args, text)
        assert "Traceback" not in text


def test_init_and_stats_json_mask_the_url(tmp_path: Path) -> None:
    password = "Json-Pass-77"
    url = f"sqlite:///{tmp_path / 'j.db'}?password={password}"
    # SQLite takes no password: the option is only there to be masked, so use a real URL form instead.
    result = _cli("init", "--json", "--storage", f"sqlite:///{tmp_path / 'j.db'}", env={}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    from authkit._cli_run import _redact_url

    assert password not in _redact_url(url)
    pg = require(POSTGRES_URL, "PostgreSQL")
    joiner = "&" if "?" in pg else "?"
    prefix = unique_prefix("j")
    masked = _cli("init", "--json", "--prefix", prefix, "--storage", f"{pg}{joiner}password={password}",
                  env={}, cwd=tmp_path)
    try:
        assert masked.returncode == 0, masked.stderr
        assert password not in masked.stdout + masked.stderr and "password=***" in json.loads(masked.stdout)["storage"]
        stats = _cli("stats", "--prefix", prefix, "--storage", f"{pg}{joiner}password={password}", env={}, cwd=tmp_path)
        assert stats.returncode == 0 and password not in stats.stdout + stats.stderr
    finally:
        from authkit.storage.sql import SqlStorage

        SqlStorage(pg, prefix=prefix, create_schema=False).drop_schema()


def test_debug_logs_reprs_and_errors_hold_no_secret(site: Site, key: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with site.open(encryption_keys=[key]) as storage:
        store = storage
        store.store_token(secret_token())
        store.store_session("s1", secret_session())
        store.store_kv("k", KV_SECRET)
        assert store.get_token_by_access_token(ACCESS) is not None
        stranger = EncryptedStorage(storage.inner, [generate_key()])  # type: ignore[attr-defined]
        errors = []
        for call in (lambda: stranger.get_token("tok-1"), lambda: stranger.get_session("s1"),
                     lambda: stranger.get_kv("k")):
            with pytest.raises(EncryptionError) as info:
                call()
            errors.append(str(info.value))
        text = "\n".join([caplog.text, repr(store), repr(stranger), *errors, repr(store.get_token("tok-1"))])
    for secret in (key, ACCESS, REFRESH, SESSION_SECRET, KV_SECRET.decode(), "s1\x00"):
        assert secret not in text


# -- 6. files only their owner can read ---------------------------------------------------------


def test_sqlite_files_are_created_0600_under_umask_022(tmp_path: Path, key: str) -> None:
    old = os.umask(0o022)
    try:
        with open_storage(f"sqlite:///{tmp_path / 'fresh.db'}", encryption_keys=[key]) as storage:
            storage.store_kv("k", b"v")  # the WAL and SHM files exist while a connection is open
            names = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
        result = _cli("init", "--storage", f"sqlite:///{tmp_path / 'cli.db'}", env={}, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        names["cli.db"] = stat.S_IMODE((tmp_path / "cli.db").stat().st_mode)
    finally:
        os.umask(old)
    assert {"fresh.db", "fresh.db-wal", "fresh.db-shm", "cli.db"} <= set(names)
    for name, mode in names.items():
        assert mode == 0o600, f"{name} is {mode:04o}"


def test_an_existing_sqlite_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    path.touch()
    path.chmod(0o640)
    with open_storage(f"sqlite:///{path}") as storage:
        storage.store_kv("k", b"v")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # chosen by its owner: left alone


def test_no_secret_in_memory_after_the_atomic_primitives(key: str, clock: FakeClock) -> None:
    """MemoryStorage has the primitives already: every write kind, its dicts scanned."""
    inner = MemoryStorage(clock=clock)
    storage = EncryptedStorage(inner, [key])
    now = clock()
    assert storage.create_session("c1", secret_session(expires_at=now + timedelta(hours=1)))
    assert storage.replace_session("c1", secret_session(data={"secret": SESSION_SECRET, "n": 2},
                                                  expires_at=now + timedelta(hours=1)))
    assert storage.touch_session("c1", now + timedelta(hours=3))
    assert storage.add_kv("a1", KV_SECRET, ttl=60) and storage.touch_kv("a1", 120)
    assert storage.incr_kv("counter") == 1  # a counter stays in clear (it holds no secret)
    session = storage.get_session("c1")
    assert session is not None and session.data["n"] == 2 and session.expires_at == now + timedelta(hours=3)
    assert storage.get_kv("a1") == KV_SECRET and storage.get_kv("counter") == b"1"
    assert_no_secret(repr(vars(inner)).encode())


def test_maintenance_without_keys_cleans_and_counts_but_reads_nothing(tmp_path: Path, clock: FakeClock,
                                                                    key: str) -> None:
    from authkit.storage.url import _open_storage

    site = make_site("sqlite", tmp_path, clock)
    with site.open(encryption_keys=[key]) as storage:
        storage.store_kv("short", KV_SECRET, ttl=1)
        storage.store_kv("long", KV_SECRET, ttl=3600)
    clock.advance(5)
    with _open_storage(site.url, maintenance=True, clock=clock) as maintenance:
        assert maintenance.stats()["kv_live"] == 1 and maintenance.stats()["kv_expired"] == 1
        assert maintenance.cleanup_expired().kv == 1
        with maintenance.lock("job", timeout=0):
            pass
        for call in (lambda: maintenance.get_kv("long"), lambda: maintenance.store_kv("x", b"plain"),
                     lambda: maintenance.list_kv_keys()):
            with pytest.raises(ConfigurationError, match="encrypted"):
                call()
    with site.open(encryption_keys=[key]) as storage:
        assert storage.list_kv_keys() == ["long"] and storage.get_kv("long") == KV_SECRET
