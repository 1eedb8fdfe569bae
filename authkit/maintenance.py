"""Maintenance of a storage from Python: the cron-safe cleanup and the locks the commands hold.

The commands ``authkit init|stats|cleanup|reencrypt|encrypt|sessions revoke|tokens revoke``,
``flask authkit ...`` and ``manage.py authkit_...`` are thin shells over one
implementation (the private ``authkit._cli_*`` modules, described in ``docs/cli.md``);
what they share with Python code lives here::

    >>> from authkit.maintenance import run_cleanup
    >>> report = run_cleanup(storage, batch_size=500)   # None if another run holds the lock

Every cleanup, whichever runs it (the commands, Flask's and Django's every-N-requests
cleanup, your own code through :func:`run_cleanup`), holds :data:`CLEANUP_LOCK`, so
overlapping runs never work at the same time.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

from authkit.models import CleanupReport
from authkit.storage.base import AuthStorage

__all__ = ["CLEANUP_LOCK", "REENCRYPT_LOCK", "run_cleanup"]

CLEANUP_LOCK = "authkit-cleanup"
"""The lock every cleanup holds (the ``authkit`` command, Flask, Django, the
every-N-requests cleanup), so overlapping runs from any of them never work at
the same time."""

REENCRYPT_LOCK = "authkit-reencrypt"
"""The lock ``reencrypt`` and ``encrypt`` hold: one walk re-sealing the records at a time."""

_log = logging.getLogger("authkit.maintenance")

# A cleanup of millions of rows can take minutes; the lock must outlive it.
# The holder refreshes nothing, so the TTL is the longest a run may take
# before a second run may start; a crashed run frees the lock after it.
CLEANUP_LOCK_TTL = 600.0
REENCRYPT_LOCK_TTL = 3600.0

# The longest wait or lock TTL a caller may ask for: beyond it a value is a typo, not a plan,
# and some backends cannot even represent it (a lock TTL of 1e308 s).
_MAX_SECONDS = 7 * 24 * 3600.0


def run_cleanup(
    storage: AuthStorage,
    *,
    batch_size: int | None = None,
    wait: float = 0.0,
    lock_ttl: float = CLEANUP_LOCK_TTL,
    progress: Callable[[CleanupReport], None] | None = None,
) -> CleanupReport | None:
    """Delete expired tokens, sessions and kv entries under :data:`CLEANUP_LOCK`.

    Returns the :class:`~authkit.models.CleanupReport`, or ``None`` when
    another cleanup held the lock for longer than ``wait`` seconds (the
    default ``0`` gives up at once: the other run is doing the work).
    ``lock_ttl`` is how long a crashed run keeps the lock; make it longer than
    your longest cleanup.
    """
    _check_seconds(wait, "wait", allow_zero=True)
    _check_seconds(lock_ttl, "lock_ttl", allow_zero=False)
    with _exclusive(storage, CLEANUP_LOCK, float(wait), float(lock_ttl)) as held:
        if not held:
            return None
        return storage.cleanup_expired(batch_size=batch_size, progress=progress)


def _check_seconds(value: object, name: str, *, allow_zero: bool) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number of seconds")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero) or value > _MAX_SECONDS:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a number of seconds {bound} and at most {_MAX_SECONDS:g}")


@contextmanager
def _exclusive(storage: AuthStorage, name: str, wait: float, ttl: float) -> Iterator[bool]:
    """Hold lock ``name``; yields False (holding nothing) if another holder kept it for ``wait`` s.

    Only the lock acquisition's ``TimeoutError`` means "skip": one raised by
    the work inside the block is a failure and propagates.
    """
    with ExitStack() as stack:
        try:
            stack.enter_context(storage.lock(name, timeout=wait, ttl=ttl))
        except TimeoutError:
            yield False
            return
        yield True


class _CleanupEveryN:
    """Cleanup every ``n`` requests, for apps without cron (Flask's and Django's opt-in setting).

    :meth:`tick` counts a request; every ``n``-th starts :func:`run_cleanup`
    on a background thread, so no request waits for it, and never a second one
    while one runs in this process (other processes are kept out by the lock).
    A failure is logged, never raised into a request.
    """

    def __init__(self, storage: Callable[[], AuthStorage], n: int) -> None:
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError("the cleanup interval must be a whole number of requests")
        if n <= 0:
            raise ValueError("the cleanup interval must be > 0 requests")
        self._storage = storage
        self._n = n
        self._count = 0
        self._mutex = threading.Lock()
        self._running: threading.Thread | None = None

    def tick(self) -> threading.Thread | None:
        """Count one request; return the cleanup thread if this request started one."""
        with self._mutex:
            self._count += 1
            if self._count < self._n:
                return None
            self._count = 0
            if self._running is not None and self._running.is_alive():
                return None
            thread = threading.Thread(target=self._run, name="authkit-cleanup", daemon=True)
            self._running = thread
        thread.start()
        return thread

    def _run(self) -> None:
        try:
            report = run_cleanup(self._storage())
        except Exception as exc:  # a background job has nobody to raise to
            _log.warning("background cleanup failed: %s: %s", type(exc).__name__, exc)
            return
        if report is None:
            _log.debug("background cleanup skipped: another cleanup is running")
        else:
            _log.info("background cleanup deleted %d expired records", report.total)
