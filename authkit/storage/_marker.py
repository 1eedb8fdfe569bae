"""The encrypted-store marker, and the gate that keeps plain storages out of encrypted stores.

:class:`~authkit.storage.encrypted.EncryptedStorage` records, with its first
write, a reserved kv entry :data:`MARKER_KEY` in the store it wraps (through
the inner storage's own kv hooks, so it works on every backend).  Every
backend installs a *gate* when it is created: the first call of any storage
hook reads that entry once and, if it is there, refuses with
:class:`ConfigurationError` for good — a storage opened without keys never
reads ciphertext out of, or writes plaintext into, an encrypted store.
:meth:`EncryptedStorage.__init__` *claims* its inner storage, which removes
the gate (the wrapper decides itself).  ``open_storage()`` without keys runs
the check at once, so the error comes at open time.

The gate is instance attributes shadowing the hook methods; once the check
passes they are deleted, and calls cost exactly what they cost before.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from authkit.errors import ConfigurationError, StorageUnavailableError

if TYPE_CHECKING:
    from authkit.storage.base import AuthStorage

__all__ = ["MARKER_KEY", "MAINTENANCE_HOOKS", "install_gate", "claim", "check_plain_open", "allow_maintenance"]

MARKER_KEY = "authkit:encrypted-store"
"""The reserved kv key holding an encrypted store's marker (hidden by ``EncryptedStorage``)."""

REFUSAL = (
    "this store is encrypted (it holds an authkit encryption marker): open it with its keys "
    "(encryption_keys=..., AUTHKIT_ENCRYPTION_KEYS or AUTHKIT_ENCRYPTION_KEY_FILE); "
    "a storage without keys would read ciphertext and write plaintext into it"
)

_GATE = "_authkit_gate"

MAINTENANCE_HOOKS = frozenset({
    "_cleanup_batch", "_stats", "_try_lock", "_release_lock", "_count_active_sessions", "_drop_old_copies",
})
"""What a storage without keys may still do on an encrypted store when opened for
maintenance (``authkit cleanup``/``stats``): delete expired records, count, lock.
None of it reads a secret or writes a record, so cron needs no keys."""


@functools.cache
def _hook_names(cls: type[AuthStorage]) -> tuple[str, ...]:
    from authkit.storage.base import AuthStorage

    names = set(AuthStorage.__abstractmethods__)
    # Hooks with a default body (the atomic primitives' fallbacks) are hooks too.
    names.update(
        name for name, value in vars(AuthStorage).items()
        if name.startswith("_") and not name.startswith("__") and callable(value)
        and name not in ("_walk",) and not isinstance(value, (staticmethod, classmethod))
    )
    return tuple(sorted(n for n in names if callable(getattr(cls, n, None))))


class _Gate:
    """The once-only check of one storage instance."""

    def __init__(self, storage: AuthStorage, names: tuple[str, ...]) -> None:
        self._storage = storage
        self._names = names
        self._mutex = threading.Lock()
        self.refused = False
        self.maintenance = False  # allow MAINTENANCE_HOOKS on an encrypted store

    def check(self) -> None:
        """Read the marker once; open the gate, or refuse for good."""
        storage = self._storage
        if self.refused:
            raise ConfigurationError(REFUSAL)
        with self._mutex:
            if _GATE not in storage.__dict__:  # another thread (or a claim) opened it
                return
            # The class's own hook, not the gate shadowing it.
            entry = type(storage)._get_kv_entry(storage, MARKER_KEY, storage.now())
            if entry is not None:
                self.refused = True
                raise ConfigurationError(REFUSAL)
            self.open()

    def open(self) -> None:
        for name in self._names:
            self._storage.__dict__.pop(name, None)
        self._storage.__dict__.pop(_GATE, None)


def _gated(gate: _Gate, name: str) -> Callable[..., Any]:
    def hook(*args: Any, **kwargs: Any) -> Any:
        if gate.maintenance and name in MAINTENANCE_HOOKS:
            original = getattr(type(gate._storage), name)
            if name == "_stats":
                return _stats_without_marker(gate._storage, original(gate._storage, *args, **kwargs))
            return original(gate._storage, *args, **kwargs)
        gate.check()
        return getattr(gate._storage, name)(*args, **kwargs)

    return hook


def _stats_without_marker(storage: AuthStorage, counts: dict[str, int]) -> dict[str, int]:
    if counts.get("kv_live", 0) and type(storage)._get_kv_entry(storage, MARKER_KEY, storage.now()) is not None:
        counts = {**counts, "kv_live": counts["kv_live"] - 1}
    return counts


def install_gate(storage: AuthStorage) -> None:
    """Make ``storage``'s first hook call check for the marker (a backend calls this once)."""
    names = _hook_names(type(storage))
    gate = _Gate(storage, names)
    for name in names:
        storage.__dict__[name] = _gated(gate, name)
    storage.__dict__[_GATE] = gate


def claim(storage: AuthStorage) -> None:
    """Remove the gate of ``storage`` and of every storage it wraps: an ``EncryptedStorage`` owns them."""
    seen: AuthStorage | None = storage
    while seen is not None:
        gate = seen.__dict__.get(_GATE)
        if isinstance(gate, _Gate):
            gate.open()
        nxt = getattr(seen, "_inner", None)
        seen = nxt if nxt is not seen else None


def allow_maintenance(storage: AuthStorage) -> bool:
    """Let ``storage`` (opened without keys) clean up, count and lock on an encrypted store.

    Every other call is still refused there.  Returns whether ``storage``
    holds such a gate (a wrapped or already checked storage does not).
    """
    gate = storage.__dict__.get(_GATE)
    if isinstance(gate, _Gate):
        gate.maintenance = True
        return True
    return False


def check_plain_open(storage: AuthStorage) -> None:
    """Run the gate's check now (``open_storage`` without keys): :class:`ConfigurationError` if encrypted.

    A server that cannot be reached is left for the first call to report, as
    it would be without this check.
    """
    seen: AuthStorage | None = storage
    while seen is not None:
        gate = seen.__dict__.get(_GATE)
        if isinstance(gate, _Gate):
            try:
                gate.check()
            except StorageUnavailableError:
                return
        nxt = getattr(seen, "_inner", None)
        seen = nxt if nxt is not seen else None
