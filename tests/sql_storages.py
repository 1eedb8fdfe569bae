"""SqlStorages for the SQL tests (``test_sql.py``, ``test_faults.py``): each kind's URL, and
the ``opened`` fixture (a plugin of ``conftest.py``) that drops and closes every storage a
test opens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from authkit.errors import StorageError
from authkit.storage.sql import SqlStorage
from tests.services import MYSQL_URL, POSTGRES_URL, require, unique_prefix

SERVERS = {"postgresql": (POSTGRES_URL, "PostgreSQL"), "mysql": (MYSQL_URL, "MariaDB/MySQL")}


def server_url(kind: str) -> str:
    """The shared server of ``kind`` ("postgresql" or "mysql"); skips (or fails, where required) if it is down."""
    url, name = SERVERS[kind]
    return require(url, name)


def url_for(kind: str, tmp_path: Path) -> str:
    """A database of ``kind``: "sqlite-file" (in ``tmp_path``), "sqlite-memory" or a server's."""
    if kind == "sqlite-file":
        return f"sqlite:///{tmp_path / 'authkit.db'}"
    if kind == "sqlite-memory":
        return "sqlite://"
    return server_url(kind)


@pytest.fixture
def opened() -> Iterator[Callable[..., SqlStorage]]:
    """Open SqlStorages, each on its own prefix unless given one; every one opened is dropped
    (where it still can be) and closed afterwards."""
    made: list[SqlStorage] = []

    def open_(url: str, **options: Any) -> SqlStorage:
        options.setdefault("prefix", unique_prefix("q"))
        storage = SqlStorage(url, **options)
        made.append(storage)
        return storage

    yield open_
    for storage in reversed(made):
        try:
            storage.drop_schema()
        except StorageError:
            pass  # cut or stopped on purpose: a twin on a direct connection drops the tables
        storage.close()
