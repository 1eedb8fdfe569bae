"""Instructions per read, plain or encrypted SQLite, for callgrind (load does not change them).

Fills a store with the records of ``bench_encrypted`` (200 of each kind), warms it, then
reads ``N`` times inside one ``sorted()`` call, so that callgrind can count that loop alone::

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=builtin_sorted \\
        --callgrind-out-file=/dev/null python -m benchmarks.callgrind_reads enc get_token 500

"Collected" divided by ``N`` is the instructions of one read (both sides pay the same
small loop overhead).  Run it with ``PYTHONHASHSEED=0`` for repeatable counts.
Sides: ``plain``, ``enc``; reads: ``get_token``, ``get_token_by_access_token``,
``get_session``, ``get_kv``.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from authkit.storage import open_storage
from benchmarks.encryption_cost import session as _session
from benchmarks.encryption_cost import token as _token

# A fixed key: the same envelopes' sizes on every run.
KEY = "q2vZ1rjW7Y2cJ1m1bHq5D8m2C4b7kqg0Vx1t7oZ8q1E="
RECORDS = 200


def main(side: str, op: str, n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        keys = {"encryption_keys": [KEY]} if side == "enc" else {}
        storage = open_storage(f"sqlite:///{Path(tmp) / 'reads.db'}", **keys)  # type: ignore[arg-type]
        try:
            tokens = [_token(i) for i in range(RECORDS)]
            storage.store_tokens_bulk(tokens)
            storage.store_sessions_bulk([(f"sess-{i}", _session(i)) for i in range(RECORDS)])
            for i in range(RECORDS):
                storage.store_kv(f"kv-{i}", b"v" * 256, ttl=3600)
            reads: dict[str, Callable[[int], object]] = {
                "get_token": lambda i: storage.get_token(f"tok-{i % RECORDS}"),
                "get_token_by_access_token":
                    lambda i: storage.get_token_by_access_token(tokens[i % RECORDS].access_token),
                "get_session": lambda i: storage.get_session(f"sess-{i % RECORDS}"),
                "get_kv": lambda i: storage.get_kv(f"kv-{i % RECORDS}"),
            }
            read = reads[op]
            for i in range(RECORDS):  # warm, and check every record is found
                assert read(i) is not None
            sorted(map(lambda i: (read(i), 0)[1], range(n)))
        finally:
            storage.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
