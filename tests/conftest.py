from __future__ import annotations

import concurrent.futures.thread
import faulthandler
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from authkit.storage import AuthStorage
from tests.backends import BACKENDS
from tests.clock import FakeClock

# org, rest, sf: the fake org the SalesforceClient tests share; opened: the SQL tests' storages;
# site, key: the security-at-rest tests' stores
pytest_plugins = ["tests.salesforce_org", "tests.sql_storages", "tests.at_rest"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=sorted(BACKENDS))
def storage(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[AuthStorage]:
    """A fresh, empty storage of every backend in turn, on its own prefix, dropped afterwards."""
    with BACKENDS[request.param](tmp_path, clock) as backend:
        yield backend



_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


def pytest_unconfigure(config: pytest.Config) -> None:
    """A test that leaves a non-daemon thread blocked would keep the interpreter, and so CI,
    from ever exiting after the summary. Give such threads a moment, then show where they are
    stuck and exit with the run's own status."""
    deadline = time.monotonic() + 30
    for thread in _blocking_threads():
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [thread.name for thread in _blocking_threads()]
    if stuck:
        print(f"\nleft running by a test, so exiting without waiting for them: {stuck}", file=sys.stderr)
        faulthandler.dump_traceback(file=sys.stderr)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(_exit_status[-1] if _exit_status else 1)


def _blocking_threads() -> list[threading.Thread]:
    """Threads the interpreter would wait for at exit, but for idle executor workers (asgiref's,
    asyncio's): ``concurrent.futures`` stops those itself at exit."""
    return [thread for thread in threading.enumerate()
            if thread is not threading.main_thread() and not thread.daemon
            and getattr(thread, "_target", None) is not concurrent.futures.thread._worker]
