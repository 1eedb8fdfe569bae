"""MemoryStorage.get_kv against a plain dict lookup under a lock."""

from __future__ import annotations

import threading

from authkit.storage import MemoryStorage
from benchmarks.harness import Table, best_rate


def run(quick: bool) -> None:
    n = 20_000 if quick else 200_000
    storage = MemoryStorage()
    plain: dict[str, bytes] = {}
    mutex = threading.Lock()
    keys = [f"key{i}" for i in range(1000)]
    for key in keys:
        storage.store_kv(key, b"value")
        plain[key] = b"value"

    def raw_get(i: int) -> object:
        with mutex:
            return plain.get(keys[i % 1000])

    table = Table("MemoryStorage")
    table.rate("get_kv", best_rate(lambda i: storage.get_kv(keys[i % 1000]), n), best_rate(raw_get, n),
               "baseline: dict under a lock")
    table.print()
