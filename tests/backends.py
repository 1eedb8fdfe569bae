"""One factory per backend the conformance suite runs on.

A factory takes ``(tmp_path, clock)`` and returns a context manager yielding a
fresh, empty storage under its own table/key prefix, dropping it afterwards.
To make a new backend join the whole suite, add its factory to ``BACKENDS``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from authkit.storage import AuthStorage, MemoryStorage
from tests.clock import FakeClock

Factory = Callable[[Path, FakeClock], AbstractContextManager[AuthStorage]]


@contextmanager
def memory(tmp_path: Path, clock: FakeClock) -> Iterator[AuthStorage]:
    with MemoryStorage(clock=clock) as storage:
        yield storage


@contextmanager
def encrypted_memory(tmp_path: Path, clock: FakeClock) -> Iterator[AuthStorage]:
    from authkit.storage.encrypted import EncryptedStorage, generate_key

    with memory(tmp_path, clock) as inner:
        yield EncryptedStorage(inner, [generate_key()])


@contextmanager
def cached_memory(tmp_path: Path, clock: FakeClock) -> Iterator[AuthStorage]:
    from authkit.storage.cached import CachedStorage

    with memory(tmp_path, clock) as inner:
        yield CachedStorage(inner)


BACKENDS: dict[str, Factory] = {
    "cached-memory": cached_memory,
    "memory": memory,
    "encrypted-memory": encrypted_memory,
}
