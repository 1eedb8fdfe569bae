"""The bulk rewrites of an encrypted store: sealing a plaintext store in place, and moving to a new key.

:meth:`EncryptedStorage.encrypt_existing` and :meth:`EncryptedStorage.reencrypt`
(their docstrings are the user's documentation) call these.  Both walk the
inner store a page at a time with the whole-record page hooks
(``_token_page``, ``_session_page``, ``_kv_page``: keyset pagination, one
statement per page on SQL, an id page and one ``MGET`` on Redis) and write
each page back with one bulk call per kind (``_store_tokens``,
``_store_sessions``, ``_store_kv_entries``), so a page costs a few round
trips, not one per record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from authkit.storage._codec import check_batch_size, parse_counter
from authkit.storage._marker import MARKER_KEY
from authkit.storage._seal import is_sealed

if TYPE_CHECKING:
    from authkit.storage.encrypted import EncryptedStorage

__all__ = ["encrypt_existing", "reencrypt"]

_START = {"phase": "tokens", "cursor": None}
# One bulk write (one transaction on SQL, one script on Redis, which blocks the whole
# server while it runs) holds at most this many records, or this many bytes of kv values,
# whatever the batch size: what other writers wait for stays short.
_WRITE_RECORDS = 250
_WRITE_BYTES = 4 << 20
Entry = tuple[str, bytes, datetime | None]
T = TypeVar("T")


def _runs(records: list[T]) -> Iterator[list[T]]:
    """``records`` in runs of at most :data:`_WRITE_RECORDS`, one bulk write each."""
    for start in range(0, len(records), _WRITE_RECORDS):
        yield records[start:start + _WRITE_RECORDS]


def _by_size(entries: list[Entry]) -> Iterator[list[Entry]]:
    """``entries`` in runs of at most :data:`_WRITE_RECORDS` entries and :data:`_WRITE_BYTES`
    of values (at least one entry each), one bulk write each."""
    run: list[Entry] = []
    size = 0
    for entry in entries:
        if run and (size + len(entry[1]) > _WRITE_BYTES or len(run) == _WRITE_RECORDS):
            yield run
            run, size = [], 0
        run.append(entry)
        size += len(entry[1])
    if run:
        yield run


def reencrypt(storage: EncryptedStorage, batch_size: int, progress: Callable[[int], None] | None) -> int:
    """See :meth:`EncryptedStorage.reencrypt`."""
    check_batch_size(batch_size)
    inner = storage.inner
    current = storage._ring.current.header
    done = 0

    def report(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done)

    def open_entry(entry: Entry, legacy: bool) -> tuple[Entry | None, bytes | None]:
        key, stored, expires_at = entry
        if key == MARKER_KEY or parse_counter(stored) is not None:
            return None, current  # the marker, or a counter (kept in clear): nothing to move
        value, header = storage._open_kv(key, stored, legacy)
        return (key, value, expires_at), header

    # Per kind: read a page, open a record (with its header), cut the stale ones into writes, write.
    kinds: list[tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any], Callable[..., Any]]] = [
        (lambda c: inner._token_page(c, batch_size), storage._open_token_with_header, _runs,
         storage._store_tokens),
        (lambda c: inner._session_page(c, batch_size, storage.now()), storage._open_session_with_header, _runs,
         storage._store_sessions),
        (lambda c: inner._kv_page(c, batch_size, storage.now()), open_entry, _by_size, storage._store_kv_entries),
    ]
    for read, open_record, writes, write in kinds:
        cursor: str | None = None
        while True:
            legacy = storage._legacy_ok()  # asked before the read (see _legacy_ok)
            records, cursor = read(cursor)
            stale = [record for record, header in (open_record(r, legacy) for r in records) if header != current]
            for chunk in writes(stale):
                write(chunk)
            report(len(stale))
            if cursor is None:
                break
    inner._drop_old_copies()
    return done


def encrypt_existing(
    storage: EncryptedStorage, batch_size: int, progress: Callable[[int], None] | None
) -> dict[str, Any]:
    """See :meth:`EncryptedStorage.encrypt_existing`."""
    from authkit.storage.encrypted import ENCRYPTED, MIGRATING

    check_batch_size(batch_size)
    with storage._mutex:
        raw = storage._read_marker()
        state, position = (None, None) if raw is None else storage._parse_marker(raw)
        resumed = state == MIGRATING and position is not None and position != _START
        if state != MIGRATING or position is None:
            position = dict(_START)
            storage._write_marker(MIGRATING, position)
    summary: dict[str, Any] = {"tokens": 0, "sessions": 0, "kv": 0, "already_sealed": 0, "examined": 0,
                               "resumed": resumed, "longest_write_seconds": 0.0}

    def timed_write(write: Callable[..., None], *args: Any) -> None:
        started = time.perf_counter()
        write(*args)
        summary["longest_write_seconds"] = max(summary["longest_write_seconds"], time.perf_counter() - started)

    phases = ["tokens", "sessions", "kv"]

    def step(examined: int, phase: str, cursor: str | None) -> None:
        # The position saved is where the next run starts: this phase after
        # ``cursor``, or the start of the next phase once this one is done.
        summary["examined"] += examined
        if cursor is None and phase != "kv":
            phase = phases[phases.index(phase) + 1]
        storage._write_marker(MIGRATING, {"phase": phase, "cursor": cursor})
        if progress is not None:
            progress(summary["examined"])

    inner = storage.inner
    if position["phase"] == "tokens" and position.get("cursor") is None:
        # Deleting what has expired first keeps expired plaintext off the disk for good.
        inner.cleanup_expired(batch_size=batch_size)
    phase_now = position.get("phase", "tokens")
    for phase in phases[phases.index(phase_now if phase_now in phases else "tokens"):]:
        cursor: str | None = position.get("cursor") if phase == phase_now else None
        while True:
            if phase == "tokens":
                tokens, cursor = inner._token_page(cursor, batch_size)
                plain = [t for t in tokens if not is_sealed(t.refresh_token, t.metadata)]
                if plain:
                    for run in _runs([storage._seal_token(t) for t in plain]):
                        timed_write(inner._store_tokens, run)
                examined, sealed_now = len(tokens), len(plain)
            elif phase == "sessions":
                sessions, cursor = inner._session_page(cursor, batch_size, storage.now())
                plain_sessions = [s for s in sessions if not is_sealed(s.user_agent, s.data)]
                if plain_sessions:
                    for session_run in _runs([storage._seal_session(s) for s in plain_sessions]):
                        timed_write(inner._store_sessions, session_run)
                examined, sealed_now = len(sessions), len(plain_sessions)
            else:
                entries, cursor = inner._kv_page(cursor, batch_size, storage.now())
                entries = [e for e in entries if e[0] != MARKER_KEY]
                # Sealed already, or an incr_kv counter (kept in clear, see encrypted.py): left alone.
                plain_kv = [(key, storage._seal_kv(key, value), expires_at) for key, value, expires_at in entries
                            if not storage._ring.looks_sealed_kv(value) and parse_counter(value) is None]
                for chunk in _by_size(plain_kv):
                    timed_write(inner._store_kv_entries, chunk)
                examined, sealed_now = len(entries), len(plain_kv)
            summary[phase] += sealed_now
            summary["already_sealed"] += examined - sealed_now
            step(examined, phase, cursor)
            if cursor is None:
                break
    inner.cleanup_expired(batch_size=batch_size)
    with storage._mutex:
        storage._write_marker(ENCRYPTED, None)
    inner._drop_old_copies()
    return summary
