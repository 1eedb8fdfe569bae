"""Files only their owner can read: the SQLite database (and so its ``-wal`` and ``-shm``).

SQLite creates a database file with the process's umask (usually ``0644``:
every local user can read the tokens), and creates ``-wal``/``-shm``/``-journal``
with the database file's own permissions.  So authkit creates the database file
itself, empty and ``0600``, before SQLite opens it; SQLite then fills it in and
gives the files beside it the same mode.  An existing file is left as it is
(its owner may have chosen its mode on purpose).
"""

from __future__ import annotations

import os

__all__ = ["create_private_file"]


def create_private_file(path: str) -> None:
    """Create ``path`` empty with mode ``0600`` unless it exists (or its directory does not)."""
    try:
        # O_EXCL: never touch an existing file; the umask only clears bits, so 0600 stays 0600.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    except FileExistsError:
        return
    except OSError:
        return  # a missing directory, no permission: SQLite reports it in its own words
    os.close(fd)
