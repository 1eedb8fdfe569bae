"""Encrypting an existing store in place (``encrypt_existing``, ``authkit encrypt``) on every
backend: resumable, readers with keys working throughout, bulk reads (a page of records
per round trip), and no secret left in clear (raw scans, ``tests/at_rest.py``).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from authkit.errors import ConfigurationError, EncryptionError
from authkit.storage import AuthStorage, MemoryStorage
from authkit.storage._marker import MARKER_KEY
from authkit.storage.encrypted import EncryptedStorage, generate_key
from authkit.storage.keys import ENCRYPTION_KEYS_ENV
from tests.at_rest import (
    ACCESS,
    KV_SECRET,
    META,
    REFRESH,
    ROOT,
    SECRETS,
    SESSION_SECRET,
    Site,
    assert_filled,
    assert_no_secret,
    fill_plain,
    make_site,
    secret_session,
)
from tests.clock import FakeClock


def test_encrypt_existing_seals_everything_resumably_while_readers_keep_working(site: Site, key: str) -> None:
    n = 7
    with site.open() as plain:
        fill_plain(plain, n, site.clock)
        plain.store_session("gone", secret_session(expires_at=site.clock() + timedelta(seconds=1)))
    assert ACCESS.encode() in site.raw()  # the store really was plaintext
    site.clock.advance(5)

    migrator = site.open(encryption_keys=[key])
    reader = site.open(encryption_keys=[key])  # an application instance, keys rolled out already
    assert isinstance(migrator, EncryptedStorage)
    batches = []

    def interrupt_after_two(done: int) -> None:
        batches.append(done)
        if len(batches) == 2:
            raise KeyboardInterrupt  # Ctrl-C, a crash: the marker keeps the position

    with pytest.raises(KeyboardInterrupt):
        migrator.encrypt_existing(batch_size=3, progress=interrupt_after_two)
    # Mid-migration: plaintext and sealed records side by side, both read with keys.
    for i in range(n):
        token = reader.get_token_by_access_token(f"{ACCESS}{i}")
        assert token is not None and token.refresh_token == REFRESH and token.metadata == {"note": META}
        session = reader.get_session(f"s{i}")
        assert session is not None and session.data == {"secret": SESSION_SECRET}
        assert reader.get_kv(f"k{i}") == KV_SECRET + str(i).encode()
    reader.store_kv("written-during", b"sealed by the reader")  # writes are sealed, always
    with pytest.raises(ConfigurationError):
        site.open()  # a keyless instance started now is refused

    summary = migrator.encrypt_existing(batch_size=3)
    assert summary["resumed"] is True
    assert summary["tokens"] + summary["sessions"] + summary["kv"] + summary["already_sealed"] >= 3 * n - 6
    again = migrator.encrypt_existing(batch_size=3)
    assert again["tokens"] == again["sessions"] == again["kv"] == 0 and again["resumed"] is False
    assert_no_secret(site.raw())
    for storage in (migrator, reader):
        assert storage.get_token_by_access_token(f"{ACCESS}3") is not None
        assert storage.get_kv("written-during") == b"sealed by the reader"
        assert storage.count_active_sessions() == n
    migrator.close()

    # Migration over: a plaintext record planted now is an error again, even for the
    # reader that saw the migration (its cached state lapses with the clock).
    site.clock.advance(10)
    with pytest.raises(ConfigurationError):
        site.open()
    reader.inner.store_session("planted", secret_session(user_id="admin"))
    with pytest.raises(EncryptionError, match="not encrypted"):
        reader.get_session("planted")
    reader.close()


def test_a_forged_migration_marker_does_not_open_the_plaintext_window(key: str, clock: FakeClock) -> None:
    inner = MemoryStorage(clock=clock)
    storage = EncryptedStorage(inner, [key])
    storage.store_kv("a", b"1")
    forged = EncryptedStorage(MemoryStorage(clock=clock), [generate_key()])._marker_value("migrating", None)
    inner.store_kv(MARKER_KEY, forged)  # "migrating", signed with someone else's key
    inner.store_session("planted", secret_session(user_id="admin"))
    fresh = EncryptedStorage(inner, [key])
    with pytest.raises(EncryptionError, match="not encrypted"):
        fresh.get_session("planted")


def _main(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    from authkit import cli

    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    status = cli.main(argv)
    monkeypatch.undo()
    return status, out.getvalue(), err.getvalue()


def test_authkit_encrypt_interrupted_then_resumed(tmp_path: Path, clock: FakeClock, key: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from authkit._cli_run import _Progress

    site = make_site("sqlite", tmp_path, clock)
    with site.open() as plain:
        fill_plain(plain, 10, clock)
    url = site.url
    calls = []

    def interrupting(self: Any, done: int, force: bool = False) -> None:
        calls.append(done)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setenv(ENCRYPTION_KEYS_ENV, key)
        patch.setattr(_Progress, "update", interrupting)
        status, out, err = _main(["encrypt", "--storage", url, "--batch-size", "4"], patch)
    assert status == 130 and "run `authkit encrypt` again" in err
    assert SESSION_SECRET.encode() in site.raw()  # not done yet: the sessions come after the tokens

    monkeypatch.setenv(ENCRYPTION_KEYS_ENV, key)
    status, out, err = _main(["encrypt", "--storage", url, "--batch-size", "4", "--json"], monkeypatch)
    assert status == 0, err
    summary = json.loads(out)
    assert summary["status"] == "ok" and summary["resumed"] is True
    assert summary["longest_write_seconds"] >= 0
    assert_no_secret(site.raw())
    assert all(s not in out + err for s in [key, *SECRETS])


def test_authkit_encrypt_in_a_real_process(tmp_path: Path, clock: FakeClock, key: str) -> None:
    site = make_site("sqlite", tmp_path, clock)
    with site.open() as plain:
        fill_plain(plain, 5, clock)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHKIT_")}
    env["PYTHONPATH"] = str(ROOT)
    refused = subprocess.run([sys.executable, "-m", "authkit", "encrypt", "--storage", site.url],
                             env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and ENCRYPTION_KEYS_ENV in refused.stderr
    started = subprocess.run([sys.executable, "-m", "authkit", "encrypt", "--start", "--storage", site.url],
                             env={**env, ENCRYPTION_KEYS_ENV: key}, capture_output=True, text=True, timeout=60)
    assert started.returncode == 0 and "marked" in started.stdout
    done = subprocess.run([sys.executable, "-m", "authkit", "encrypt", "--storage", site.url],
                          env={**env, ENCRYPTION_KEYS_ENV: key}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "sealed 15 records" in done.stdout, done.stdout + done.stderr
    assert_no_secret(site.raw())
    keyless = subprocess.run([sys.executable, "-m", "authkit", "init", "--check", "--storage", site.url],
                             env=env, capture_output=True, text=True, timeout=60)
    assert keyless.returncode == 2 and "encrypted" in keyless.stderr
    # Cron's cleanup and stats need no keys: they read no secret and write no record.
    for command in ("cleanup", "stats"):
        result = subprocess.run([sys.executable, "-m", "authkit", command, "--json", "--storage", site.url],
                                env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["kv_live"] == 5  # the marker is not counted


def test_readers_and_writers_with_keys_work_throughout_a_migration(tmp_path: Path, clock: FakeClock,
                                                                   key: str) -> None:
    """One thread migrates while others read every record and write new ones, all with keys."""
    from tests.threads import run_threads

    site = make_site("sqlite", tmp_path, clock)
    n = 60
    with site.open() as plain:
        fill_plain(plain, n, clock)
    storages = [site.open(encryption_keys=[key]) for _ in range(3)]
    migrator = storages[0]
    assert isinstance(migrator, EncryptedStorage)
    migrator.begin_encrypt_existing()
    migrated = []

    def work(worker: int) -> None:
        if worker == 0:
            migrated.append(migrator.encrypt_existing(batch_size=7))
            return
        storage = storages[worker]
        for round_ in range(3):
            assert_filled(storage, n)
            storage.store_kv(f"new-{worker}-{round_}", KV_SECRET)

    run_threads(work, 3)
    assert migrated[0]["tokens"] + migrated[0]["already_sealed"] >= n
    for storage in storages:
        storage.close()
    assert_no_secret(site.raw())
    with site.open(encryption_keys=[key]) as storage:
        assert len(storage.list_kv_keys("new-")) == 6 and storage.get_kv("new-1-2") == KV_SECRET


def _count_calls(storage: AuthStorage, names: list[str]) -> dict[str, int]:
    """Count calls of some of ``storage``'s hooks by shadowing them on the instance."""
    calls = dict.fromkeys(names, 0)
    for name in names:
        hook = getattr(storage, name)

        def counted(*args: Any, _hook: Any = hook, _name: str = name) -> Any:
            calls[_name] += 1
            return _hook(*args)

        setattr(storage, name, counted)
    return calls


def test_encrypt_existing_reads_a_page_per_batch_not_a_record_at_a_time(site: Site, key: str) -> None:
    n, batch = 25, 10
    with site.open() as plain:
        fill_plain(plain, n, site.clock)
    with site.open(encryption_keys=[key]) as migrator:
        assert isinstance(migrator, EncryptedStorage)
        calls = _count_calls(migrator.inner, ["_get_token", "_get_session", "_get_kv_entry", "_token_page",
                                              "_session_page", "_kv_page", "_store_tokens", "_store_sessions"])
        summary = migrator.encrypt_existing(batch_size=batch)
        assert (summary["tokens"], summary["sessions"], summary["kv"]) == (n, n, n)
        assert calls["_get_token"] == calls["_get_session"] == 0
        assert calls["_get_kv_entry"] <= 2  # the marker, not the entries
        pages = -(-n // batch)  # 3 pages of 10, 10, 5
        assert calls["_token_page"] == calls["_session_page"] == pages
        assert calls["_kv_page"] == -(-(n + 1) // batch)  # (+ the marker)
        assert calls["_store_tokens"] == calls["_store_sessions"] == pages
        assert_filled(migrator, n)
    assert_no_secret(site.raw())


def test_encrypt_existing_leaves_counters_in_clear(key: str, clock: FakeClock) -> None:
    inner = MemoryStorage(clock=clock)
    inner.incr_kv("hits", 41, ttl=60)
    inner.store_kv("secret", KV_SECRET)
    storage = EncryptedStorage(inner, [key])
    summary = storage.encrypt_existing(batch_size=1)
    assert summary["kv"] == 1 and summary["already_sealed"] == 1  # the counter stays as it is
    assert inner.get_kv("hits") == b"41" and inner.get_kv("secret") != KV_SECRET
    assert storage.incr_kv("hits") == 42  # still a counter the inner store can add to
    assert storage.get_kv("secret") == KV_SECRET


def test_reencrypt_reads_a_page_per_batch(key: str, clock: FakeClock) -> None:
    from authkit.storage.sql import SqlStorage

    inner = SqlStorage("sqlite://", clock=clock)
    old = EncryptedStorage(inner, [key])
    fill_plain(old, 12, clock)
    rotated = EncryptedStorage(inner, [generate_key(), key])
    calls = _count_calls(inner, ["_get_token", "_get_session", "_token_page", "_session_page", "_kv_page"])
    assert rotated.reencrypt(batch_size=5) == 36
    assert calls["_get_token"] == calls["_get_session"] == 0
    assert calls["_token_page"] == calls["_session_page"] == 3
    assert rotated.reencrypt(batch_size=5) == 0


def test_one_write_holds_at_most_250_records_whatever_the_batch_size(key: str, clock: FakeClock) -> None:
    from authkit.storage.sql import SqlStorage

    inner = SqlStorage("sqlite://", clock=clock)
    fill_plain(inner, 600, clock)
    storage = EncryptedStorage(inner, [key])
    calls = _count_calls(inner, ["_store_tokens", "_store_sessions", "_store_kv_entries"])
    summary = storage.encrypt_existing(batch_size=1000)
    assert (summary["tokens"], summary["sessions"], summary["kv"]) == (600, 600, 600)
    assert calls == {"_store_tokens": 3, "_store_sessions": 3, "_store_kv_entries": 3}  # 250 + 250 + 100


@pytest.mark.parametrize("read", ["get_token", "get_token_by_access_token", "get_session", "get_kv"])
def test_a_read_that_a_finishing_migration_overtakes_is_not_taken_for_tampering(
    tmp_path: Path, clock: FakeClock, key: str, read: str
) -> None:
    """A reader fetches a record still in plaintext; before it looks at the store's state, the
    migration seals that record and finishes. The plaintext it read was legitimate when read."""
    site = make_site("sqlite", tmp_path, clock)
    with site.open() as plain:
        fill_plain(plain, 1, clock)
    reader, migrator = site.open(encryption_keys=[key]), site.open(encryption_keys=[key])
    assert isinstance(reader, EncryptedStorage) and isinstance(migrator, EncryptedStorage)
    migrator.begin_encrypt_existing()
    assert reader.get_kv("k0") is not None  # the reader has seen the migration begin
    hook = {"get_token": "_get_token", "get_token_by_access_token": "_get_token_by_access_token",
            "get_session": "_get_session", "get_kv": "_get_kv_entry"}[read]
    inner_read = getattr(reader.inner, hook)

    overtook: list[bool] = []

    def overtaken(*args: Any) -> Any:
        record = inner_read(*args)  # the plaintext record (by access token: a miss in the sealed index)
        if not overtook:
            overtook.append(True)
            migrator.encrypt_existing()  # seals the record just read, and marks the store encrypted
            clock.advance(60)  # the reader's cached view of the state runs out
        return record

    setattr(reader.inner, hook, overtaken)
    try:
        if read == "get_token":
            got: Any = reader.get_token("t0")
        elif read == "get_token_by_access_token":
            got = reader.get_token_by_access_token(f"{ACCESS}0")
        elif read == "get_session":
            got = reader.get_session("s0")
        else:
            got = reader.get_kv("k0")
    finally:
        reader.close()
        migrator.close()
    assert got is not None
