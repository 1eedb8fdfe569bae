"""Events you can count: token mints, invalidations, retries and API usage, without any secret.

Each event is one :class:`Event` (a name and a dict of plain fields), logged on
the ``authkit.salesforce.events`` logger (INFO, ``api_usage`` at DEBUG) and
handed to every hook you attach::

    from authkit.salesforce import events

    counts = collections.Counter()
    remove = events.add_hook(lambda event: counts.update([event.name]))
    ...
    remove()                                  # or events.remove_hook(the_same_callable)

    with events.recording() as seen:          # handy in tests: every event inside the block
        sf.query(...)
    assert [e.name for e in seen] == ["unauthorized_retry"]

The events and their fields (never a token, secret, assertion or password):

===================== ==========================================================================
``token_minted``      an auth flow got a new access token: ``flow`` (class name), ``instance_url``
``token_invalidated`` an auth flow dropped a rejected token: ``flow``
``token_revoked``     an auth flow revoked its token (``revoke()``): ``flow``, ``refresh_revoked``
``unauthorized_retry`` a request got a 401 and is re-sent once with a new token: ``method``,
                      ``path`` (query values elided)
``transient_retry``   a request is re-sent after a transient failure: ``method``, ``path``,
                      ``status`` (``None`` for a connection failure), ``error_code``, ``attempt``
                      (1 for the first retry), ``delay`` (seconds), ``source`` (``"client"`` for
                      ``UNABLE_TO_LOCK_ROW``/500, ``"adapter"`` for 429/502/503/504/connection)
``api_usage``         a response reported the org's API usage (``Sforce-Limit-Info``): ``used``,
                      ``limit``, ``app_used``, ``app_limit``, ``app_name``
===================== ==========================================================================

Hooks run synchronously on the thread that caused the event; one that raises
is logged and ignored (an event never breaks a request).  Hooks are global to
the process: attach one per test and remove it afterwards.  Auth flows (and
other code) report their own events with :func:`emit`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Event",
    "Hook",
    "add_hook",
    "remove_hook",
    "emit",
    "recording",
    "TOKEN_MINTED",
    "TOKEN_INVALIDATED",
    "TOKEN_REVOKED",
    "UNAUTHORIZED_RETRY",
    "TRANSIENT_RETRY",
    "API_USAGE",
]

logger = logging.getLogger("authkit.salesforce.events")

TOKEN_MINTED = "token_minted"
TOKEN_INVALIDATED = "token_invalidated"
TOKEN_REVOKED = "token_revoked"
UNAUTHORIZED_RETRY = "unauthorized_retry"
TRANSIENT_RETRY = "transient_retry"
API_USAGE = "api_usage"

NAMES = frozenset({TOKEN_MINTED, TOKEN_INVALIDATED, TOKEN_REVOKED, UNAUTHORIZED_RETRY, TRANSIENT_RETRY, API_USAGE})
# Field names that would smell of a secret: refused outright, so a careless emit cannot leak one.
_FORBIDDEN = ("token", "secret", "password", "assertion", "authorization", "key")
_ALLOWED_TOKENISH = frozenset({"token_id"})


@dataclass(frozen=True)
class Event:
    """One event: ``name`` (see the module docstring) and its ``fields``."""

    name: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


Hook = Callable[[Event], object]

_hooks: tuple[Hook, ...] = ()  # replaced, never mutated: emit reads it without a lock
_hooks_lock = threading.Lock()


def add_hook(hook: Hook) -> Callable[[], None]:
    """Call ``hook(event)`` for every event from now on; returns a function that removes it."""
    global _hooks
    if not callable(hook):
        raise TypeError("hook must be callable")
    with _hooks_lock:
        _hooks = (*_hooks, hook)
    return lambda: remove_hook(hook)


def remove_hook(hook: Hook) -> None:
    """Stop calling ``hook`` (one registration of it; no error if it is not attached)."""
    global _hooks
    with _hooks_lock:
        hooks = list(_hooks)
        if hook in hooks:
            hooks.remove(hook)
        _hooks = tuple(hooks)


def emit(name: str, **fields: Any) -> None:
    """Report an event: log it and hand it to every hook.

    ``name`` is one of the documented names; a field whose name suggests a
    secret (``*token*``, ``*secret*``, ``*password*``, ...) is a ``ValueError``.
    Cheap when nobody listens: nothing is built unless a hook is attached or
    the logger is enabled for the level.
    """
    if name not in NAMES:
        raise ValueError(f"unknown event {name!r}; events are {sorted(NAMES)}")
    hooks = _hooks
    level = logging.DEBUG if name == API_USAGE else logging.INFO
    logging_on = logger.isEnabledFor(level)
    if not hooks and not logging_on:
        return
    for key in fields:
        lowered = key.lower()
        if lowered not in _ALLOWED_TOKENISH and any(word in lowered for word in _FORBIDDEN):
            raise ValueError(f"event field {key!r} looks like a secret; events never carry one")
    event = Event(name, dict(fields))
    if logging_on:
        logger.log(level, "%s %s", name, " ".join(f"{k}={v}" for k, v in fields.items()))
    for hook in hooks:
        try:
            hook(event)
        except Exception:
            logger.exception("an authkit event hook failed on %s", name)


@contextlib.contextmanager
def recording() -> Iterator[list[Event]]:
    """Collect every event emitted inside the block (from any thread) into a list."""
    seen: list[Event] = []
    lock = threading.Lock()

    def hook(event: Event) -> None:
        with lock:
            seen.append(event)

    remove = add_hook(hook)
    try:
        yield seen
    finally:
        remove()
