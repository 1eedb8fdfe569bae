"""Run a test's worker in several threads at once, and fail the test on what went wrong in them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def run_threads(target: Callable[[int], object], count: int, *, timeout: float = 120.0) -> None:
    """Run ``target(n)`` for each ``n`` in ``range(count)``, each in its own thread, all released at once.

    Waits for every thread (``timeout`` seconds in all; a thread still running then fails the test
    by name) and re-raises the first exception a thread raised, so that pytest shows the real
    assertion. Nothing a thread raises is lost: a failing thread does not stop the others.
    """
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []
    mutex = threading.Lock()

    def run(n: int) -> None:
        try:
            barrier.wait(timeout)
            target(n)
        except BaseException as exc:
            with mutex:
                errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,), name=f"run_threads-{n}", daemon=True) for n in range(count)]
    try:
        for thread in threads:
            thread.start()
    except BaseException:
        barrier.abort()  # release the threads already started: they must not wait for the rest
        raise
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    hung = [thread.name for thread in threads if thread.is_alive()]
    if hung:
        message = f"{len(hung)} of {count} threads still running after {timeout:g}s: {', '.join(hung)}"
        raise AssertionError(message) from (errors[0] if errors else None)
    if errors:
        raise errors[0]
