"""Microseconds of CPU per SQLite operation, plain and encrypted, for the installed authkit.

``python -m benchmarks.encryption_cost [label]``

Uses only the public API that every release has had (``open_storage`` with
``encryption_keys``, ``store_token``/``get_token``, ``store_session``/``get_session``),
so the same file runs against an older checkout too: copy it there, or run it with
that checkout's interpreter and this file's path.  Running it under two versions
shows whether a ratio moved because encryption got dearer or because the plain
operation it is divided by got cheaper (docs/encryption.md, "The ratio and the
plain read").

Each operation runs in 15 rounds of 2,000 calls, plain and encrypted alternating,
timed in this process's CPU time (which other jobs on the machine do not
inflate); the medians are printed, with their difference and ratio.  The records
(:func:`token`, :func:`session`) are those of ``bench_encrypted`` and ``callgrind_reads``,
defined here so that this file needs nothing else from the tree it runs in.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from authkit.models import AuthToken, SessionData, utcnow
from authkit.storage import AuthStorage, open_storage

_KEY = "q2vZ1rjW7Y2cJ1m1bHq5D8m2C4b7kqg0Vx1t7oZ8q1E="  # a fixed key: the same envelope sizes every run
_RECORDS = 200
_ROUNDS = 15
_CALLS = 2000


def token(i: int, version: int = 0) -> AuthToken:
    """Token ``i`` of the encryption benchmarks; ``version`` changes its access token (a rewrite)."""
    return AuthToken(
        token_id=f"tok-{i}",
        user_id=f"user-{i % 50}",
        access_token=f"00D000000000001!AQ0AQ{i:08d}.access-token-body-of-realistic-length-xxxxxxxxxxxxxx{version:02d}",
        refresh_token=f"5Aep861refresh{i:08d}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        scopes=["api", "refresh_token"],
        expires_at=utcnow() + timedelta(hours=2),
        client_id="3MVG9client",
        metadata={"instance_url": "https://acme.my.salesforce.com", "id": f"https://login/id/{i}"},
    )


def session(i: int, version: int = 0) -> SessionData:
    """Session ``i`` of the encryption benchmarks; ``version`` changes its data (a rewrite)."""
    return SessionData(
        session_id="",
        user_id=f"user-{i % 50}",
        expires_at=utcnow() + timedelta(hours=2),
        ip_address="203.0.113.7",
        user_agent="Mozilla/5.0",
        data={"cart": [i, i + version], "csrf": "x" * 32, "user": {"name": "Ada", "roles": ["admin"]}},
    )


_OPS: dict[str, Callable[[AuthStorage, int], object]] = {
    "get_token": lambda s, i: s.get_token(f"tok-{i % _RECORDS}"),
    "get_session": lambda s, i: s.get_session(f"sess-{i % _RECORDS}"),
    "store_token": lambda s, i: s.store_token(token(i % _RECORDS)),
    "store_session": lambda s, i: s.store_session(f"sess-{i % _RECORDS}", session(i % _RECORDS)),
}


def _microseconds(storage: AuthStorage, op: Callable[[AuthStorage, int], object]) -> float:
    start = time.process_time()
    for i in range(_CALLS):
        op(storage, i)
    return (time.process_time() - start) / _CALLS * 1e6


def main(label: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        plain = open_storage(f"sqlite:///{Path(tmp) / 'plain.db'}")
        encrypted = open_storage(f"sqlite:///{Path(tmp) / 'encrypted.db'}", encryption_keys=[_KEY])
        try:
            for storage in (plain, encrypted):
                for i in range(_RECORDS):
                    storage.store_token(token(i))
                    storage.store_session(f"sess-{i}", session(i))
            print(f"{'':8s} {'operation':14s} {'plain':>9s} {'encrypted':>11s} {'added':>9s} {'ratio':>6s}")
            for name, op in _OPS.items():
                times: dict[str, list[float]] = {"plain": [], "encrypted": []}
                for _ in range(_ROUNDS):
                    times["plain"].append(_microseconds(plain, op))
                    times["encrypted"].append(_microseconds(encrypted, op))
                p, e = statistics.median(times["plain"]), statistics.median(times["encrypted"])
                print(f"{label:8s} {name:14s} {p:7.1f}us {e:9.1f}us {e - p:+7.1f}us {e / p:5.2f}x")
        finally:
            plain.close()
            encrypted.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
