"""The id a Flask or Django session is stored under: a digest of its cookie value.

The browser's cookie holds a random session id; the storage holds only
``stored_session_id(cookie_value)``, so a copy of the database (a backup, a
replica, a leaked dump) opens no session: a digest cannot be turned back into
a cookie.  Reading a session digests the cookie it came with, one SHA-256 of
at most 255 characters::

    from authkit.contrib.session_ids import stored_session_id

    storage.get_session(stored_session_id(cookie_value))
    # "log out everywhere else": every session of the user except this one
    storage.delete_user_sessions(user_id, keep=stored_session_id(cookie_value))

A plain hash, not a keyed one, is enough: the ids hash 165 (Django) or 256
(Flask) random bits, so there is nothing to guess, and rotating
``SECRET_KEY`` does not log everybody out.  The ``sha256:`` prefix says what a
stored id is (and keeps it apart from the ids of sessions written before
authkit stored digests: those are never found by a cookie again, and
``cleanup_expired`` / ``clearsessions`` delete them when they expire).
"""

from __future__ import annotations

import hashlib

from authkit.storage._codec import check_id

__all__ = ["STORED_ID_PREFIX", "stored_session_id"]

STORED_ID_PREFIX = "sha256:"
"""What every stored Flask/Django session id starts with; 64 hex digits follow."""


def stored_session_id(session_key: str) -> str:
    """``"sha256:" + SHA-256 hex`` of ``session_key`` (the value the cookie holds).

    >>> stored_session_id("abc")
    'sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'

    ``session_key`` must be a valid id (a non-empty ``str`` of at most 255
    characters, no NUL, no lone surrogate), else ``ValueError``/``TypeError``;
    the integrations treat a cookie that is not one as an unknown session.
    """
    check_id(session_key, "session_key")
    return STORED_ID_PREFIX + hashlib.sha256(session_key.encode("utf-8")).hexdigest()


def known_stored_id(session_key: object) -> str | None:
    """:func:`stored_session_id` of ``session_key``, or ``None`` if it is no valid id.

    What the integrations need for a cookie, which can hold anything: an
    invalid one is an unknown session.  One check, not a validity test and then
    the same check again inside the digest.
    """
    try:
        return stored_session_id(session_key)  # type: ignore[arg-type]  # checked there
    except (TypeError, ValueError):
        return None
