"""Where encryption keys come from: a list, the environment, a key file, or a provider.

Usage::

    from pathlib import Path
    from authkit.storage import open_storage

    open_storage(url, encryption_keys=[new_key, old_key])          # a list, newest first
    open_storage(url, encryption_keys=Path("/etc/authkit/keys"))   # a key file (mode 0600)
    open_storage(url, encryption_keys=lambda: vault.read("authkit"))  # a provider (KMS, vault, ...)
    # or AUTHKIT_ENCRYPTION_KEYS="<new>,<old>", or AUTHKIT_ENCRYPTION_KEY_FILE=/etc/authkit/keys

A key file holds one key per line, newest first; blank lines and lines
starting with ``#`` are ignored.  It is refused unless only its owner can
read it (``chmod 600``): a key readable by every local user protects nothing.

Nothing here ever puts key material into a message: errors name the source
(the variable, the file, the line number), never its content.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Union

from authkit.errors import ConfigurationError

__all__ = [
    "ENCRYPTION_KEYS_ENV", "ENCRYPTION_KEY_FILE_ENV", "KeySource",
    "keys_from_environment", "read_key_file", "resolve_keys",
]

ENCRYPTION_KEYS_ENV = "AUTHKIT_ENCRYPTION_KEYS"
ENCRYPTION_KEY_FILE_ENV = "AUTHKIT_ENCRYPTION_KEY_FILE"

KeySource = Union[Sequence[str | bytes], "os.PathLike[str]", Callable[[], Sequence[str | bytes]]]
"""A list of keys (newest first), a key file's path, or a function returning a list."""

_MAX_KEY_FILE = 64 * 1024  # a key file is a few lines; anything bigger is the wrong file


def read_key_file(path: str | os.PathLike[str]) -> list[str]:
    """The keys in the file ``path``, newest first; :class:`ConfigurationError` if unsafe or unreadable.

    Refused when group or others may read or write it (``mode & 0o077``), when
    it is not a regular file, or when it holds no key.
    """
    where = f"key file {os.fspath(path)}"
    try:
        # Opened first, checked on the descriptor: no window between the check and the read.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ConfigurationError(f"cannot open the {where}: {exc.strerror or type(exc).__name__}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigurationError(f"the {where} is not a regular file")
        if info.st_mode & 0o077:
            raise ConfigurationError(
                f"the {where} is readable or writable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"make it readable by its owner only: chmod 600 {os.fspath(path)}"
            )
        if info.st_size > _MAX_KEY_FILE:
            raise ConfigurationError(f"the {where} is {info.st_size} bytes: not a key file")
        raw = b""
        while chunk := os.read(fd, _MAX_KEY_FILE + 1 - len(raw)):
            raw += chunk
            if len(raw) > _MAX_KEY_FILE:
                raise ConfigurationError(f"the {where} is too large: not a key file")
    except OSError as exc:
        raise ConfigurationError(f"cannot read the {where}: {exc.strerror or type(exc).__name__}") from None
    finally:
        os.close(fd)
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigurationError(f"the {where} is not text (keys are base64 lines)") from None
    keys = [line.strip() for line in text.splitlines()]
    keys = [k for k in keys if k and not k.startswith("#")]
    if not keys:
        raise ConfigurationError(f"the {where} holds no key")
    return keys


def _from_provider(provider: Callable[[], object]) -> list[str | bytes]:
    try:
        keys = provider()
    except ConfigurationError:
        raise
    except Exception as exc:  # a KMS client's own error: name it, never its message (it may quote material)
        raise ConfigurationError(f"the encryption key provider failed: {type(exc).__name__}") from None
    if isinstance(keys, (str, bytes, bytearray)) or not isinstance(keys, Sequence):
        raise ConfigurationError("the encryption key provider must return a list of keys (newest first)")
    return list(keys)


def resolve_keys(source: object) -> list[str | bytes]:
    """The key list a :data:`KeySource` stands for; an empty result is a :class:`ConfigurationError`.

    A single ``str`` or ``bytes`` is a ``TypeError`` (is it a key, or a path?).
    """
    keys: list[str | bytes]
    if isinstance(source, (str, bytes, bytearray)):
        raise TypeError("keys must be a list of keys (newest first), a key file Path or a provider, not a single key")
    if isinstance(source, os.PathLike):
        keys = list(read_key_file(source))
    elif callable(source):
        keys = _from_provider(source)
    elif isinstance(source, Sequence):
        keys = list(source)
    else:
        raise TypeError(f"keys must be a list, a key file Path or a provider, not {type(source).__name__}")
    if not keys:
        raise ConfigurationError(
            "an empty encryption key list: give at least one key, or leave encryption_keys out "
            "(an empty list never means 'store plaintext')"
        )
    return keys


def keys_from_environment() -> KeySource | None:
    """The keys ``AUTHKIT_ENCRYPTION_KEYS`` or ``AUTHKIT_ENCRYPTION_KEY_FILE`` name, ``None`` if neither is set.

    A variable that is set but empty is a :class:`ConfigurationError`: an
    unrendered secret in a deployment must not turn encryption off.
    """
    listed = os.environ.get(ENCRYPTION_KEYS_ENV)
    file = os.environ.get(ENCRYPTION_KEY_FILE_ENV)
    if listed is not None and file is not None:
        raise ConfigurationError(f"set {ENCRYPTION_KEYS_ENV} or {ENCRYPTION_KEY_FILE_ENV}, not both")
    if file is not None:
        if not file.strip():
            raise ConfigurationError(f"{ENCRYPTION_KEY_FILE_ENV} is set but empty")
        return Path(file.strip())
    if listed is None:
        return None
    keys = [k.strip() for k in listed.split(",") if k.strip()]
    if not keys:  # set but empty or only commas: never fall back to storing plaintext
        raise ConfigurationError(f"{ENCRYPTION_KEYS_ENV} is set but holds no key")
    return keys
