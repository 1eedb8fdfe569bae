from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from authkit.storage import AuthStorage
from tests.backends import BACKENDS
from tests.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=sorted(BACKENDS))
def storage(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[AuthStorage]:
    """A fresh, empty storage of every backend in turn, on its own prefix, dropped afterwards."""
    with BACKENDS[request.param](tmp_path, clock) as backend:
        yield backend
