"""The session engine: ``SESSION_ENGINE = "authkit.contrib.django.sessions"``.

Sessions live in the ``AUTHKIT_STORAGE_URL`` storage as
:class:`~authkit.models.SessionData` records, behaving as Django's own
``db`` backend does: ``save(must_create=True)`` on a taken key raises
``CreateError``; saving a session deleted elsewhere (a logout in a concurrent
request) raises ``UpdateError`` instead of bringing it back; an unknown or
expired key loads as an empty session with a fresh key and creates nothing;
``clear_expired()`` (so ``manage.py clearsessions``) deletes expired records.

Session data is kept as JSON in ``SessionData.data``, encoded with
``SESSION_SERIALIZER`` (Django's default JSON serializer; a serializer that
does not produce JSON is refused).  ``user_id`` is the logged-in user's id
(the session key ``_auth_user_id`` that ``django.contrib.auth.login()`` sets,
or the key ``AUTHKIT_SESSION_USER_KEY`` names), else ``"anonymous"``, so
``get_storage().list_user_sessions(str(user.pk))`` lists a user's sessions.

The storage holds a digest of the session key, never the key itself
(:func:`~authkit.contrib.session_ids.stored_session_id`): a copy of the
database opens no session.  Every write is one atomic storage call and there
is no lock: a create is ``create_session`` (``CreateError`` when the key is
taken), a save ``replace_session`` (``UpdateError`` when the session is gone),
a save of unchanged data ``touch_session`` (only the expiry moves), a delete
``delete_session``.  A new key is not checked with ``exists()`` first (the
create itself is the check), so creating a session is one round trip and
saving one is one more.  The ``a*`` methods of Django 5 (``aload``,
``asave``, ``acreate``, ``adelete``, ``aexists``, ``aclear_expired``) run the
same code in a worker thread, as Django's own backends do.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any, cast

from django.conf import settings
from django.contrib.sessions.backends.base import VALID_KEY_CHARS, CreateError, SessionBase, UpdateError
from django.core.exceptions import ImproperlyConfigured
from django.core.signing import JSONSerializer
from django.utils import timezone as dj_timezone
from django.utils.crypto import get_random_string

from authkit.contrib import ANONYMOUS_USER_ID
from authkit.contrib._json import plain_json_copy
from authkit.contrib.django import get_storage
from authkit.contrib.session_ids import known_stored_id
from authkit.maintenance import run_cleanup
from authkit.models import SessionData
from authkit.storage._codec import check_id
from authkit.storage.base import AuthStorage

__all__ = ["SessionStore"]

_logger = logging.getLogger("django.security.SuspiciousSession")
# django.contrib.auth.SESSION_KEY, without importing the auth app.
_AUTH_USER_ID = "_auth_user_id"


def _valid_key(key: object) -> bool:
    """True if the storage accepts ``key`` as an id; anything else is an unknown session."""
    try:
        check_id(key, "session_key")
    except (TypeError, ValueError):
        return False
    return True


class SessionStore(SessionBase):  # type: ignore[misc]  # Django ships no type hints
    """A Django session store on an authkit storage.

    >>> from authkit.contrib.django.sessions import SessionStore
    >>> s = SessionStore()
    >>> s["cart"] = [1, 2]
    >>> s.save()
    >>> SessionStore(s.session_key).get("cart")
    [1, 2]
    """

    _session_key: str | None  # Django's property; annotated only (no value here hides nothing)

    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        # (key, record) as last loaded or written by this object; see save().
        self._loaded: tuple[str | None, SessionData | None] = (None, None)

    @property
    def storage(self) -> AuthStorage:
        """The shared storage (looked up each time, so changed settings take effect)."""
        return get_storage()

    # -- encoding -----------------------------------------------------------

    def _to_json(self, session_dict: dict[str, Any]) -> dict[str, Any]:
        # Round-trip through the configured serializer, so what is stored is
        # exactly what Django's own backends would store and load back
        # (tuples become lists, non-string keys become strings).  Django's
        # JSON serializer changes nothing in plain JSON values: a copy will do.
        if self.serializer is JSONSerializer:
            copied = plain_json_copy(session_dict)
            if copied is not None:
                return cast(dict[str, Any], copied)
        raw = self.serializer().dumps(session_dict)
        try:
            data = json.loads(raw)
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(
                "authkit sessions are stored as JSON: SESSION_SERIALIZER must produce JSON "
                "(e.g. the default django.contrib.sessions.serializers.JSONSerializer)"
            ) from exc
        if not isinstance(data, dict):
            raise ImproperlyConfigured("SESSION_SERIALIZER must serialise a dict to a JSON object")
        return data

    def _from_json(self, data: dict[str, Any]) -> dict[str, Any]:
        if self.serializer is JSONSerializer:
            # The stored JSON is what Django's JSON serializer would load: a copy
            # (never the stored record's own dict, see save()) will do.
            copied = plain_json_copy(data)
            if isinstance(copied, dict):
                return copied
        try:
            decoded = self.serializer().loads(json.dumps(data).encode("latin-1"))
        except Exception:  # what Django's decode() does with unreadable data: an empty session
            _logger.warning("Session data corrupted")
            return {}
        return decoded if isinstance(decoded, dict) else {}

    # -- time ---------------------------------------------------------------

    @staticmethod
    def _local(now: datetime) -> datetime:
        """``now`` (the storage's clock, aware UTC) in the form ``timezone.now()`` has under ``USE_TZ``."""
        if settings.USE_TZ:
            return now
        naive: datetime = dj_timezone.make_naive(now)
        return naive

    @staticmethod
    def _as_utc(value: datetime) -> datetime:
        if dj_timezone.is_naive(value):
            # USE_TZ = False: naive datetimes are local time in TIME_ZONE.
            value = dj_timezone.make_aware(value)
        aware: datetime = value.astimezone(timezone.utc)
        return aware

    # -- SessionBase --------------------------------------------------------

    def load(self) -> dict[str, Any]:
        """The stored session dict; ``{}`` (and no key) if it is unknown or expired."""
        key = self.session_key
        stored_id = known_stored_id(key)
        record = None if stored_id is None else self.storage.get_session(stored_id)
        # Remembered so that save() keeps created_at and, when the data did
        # not change, moves only the expiry instead of rewriting the record.
        self._loaded = (key, record)
        if record is None:
            # Unknown, expired or deleted: a new session with a new key later;
            # nothing is created now (creating on load would be a DoS vector).
            self._session_key = None
            return {}
        return self._from_json(record.data)

    def exists(self, session_key: str | None) -> bool:
        """True if a live session is stored under ``session_key``."""
        stored_id = known_stored_id(session_key)
        return stored_id is not None and self.storage.get_session(stored_id) is not None

    @property
    def stored_session_id(self) -> str | None:
        """The id the storage keeps this session under (a digest of the key), or ``None``.

        >>> get_storage().delete_user_sessions(str(user.pk), keep=request.session.stored_session_id)
        """
        return known_stored_id(self.session_key)

    def _get_new_session_key(self) -> str:
        # No exists() round trip: create_session refuses a taken key, and
        # create() then draws again (Django's own loop, on CreateError).
        key: str = get_random_string(32, VALID_KEY_CHARS)
        return key

    async def _aget_new_session_key(self) -> str:
        return self._get_new_session_key()

    def create(self) -> None:
        """Store a new session under a fresh key (retrying on the rare collision)."""
        while True:
            self._session_key = self._get_new_session_key()
            try:
                # Save at once, so the key is taken before anyone else can have it.
                self.save(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return

    def save(self, must_create: bool = False) -> None:
        """Save the session in one storage call; ``must_create``: only a new record
        (else ``CreateError``), otherwise only an existing live one (else ``UpdateError``)."""
        if self.session_key is None:
            return self.create()
        session_dict = self._get_session(no_load=must_create)
        # Loading may have found the key gone and reset it: like Django's own
        # backends, that is then an update of a session that no longer exists.
        key = self._get_or_create_session_key()
        loaded_key, loaded = self._loaded
        if loaded_key != key or must_create:
            loaded = None
        # The digest of a key loaded or saved by this object is known already.
        stored_id = known_stored_id(key) if loaded is None else loaded.session_id
        if stored_id is None:
            raise CreateError if must_create else UpdateError
        data = self._to_json(session_dict)
        storage = self.storage
        now_utc = storage.now()
        expires_at = self._as_utc(self.get_expiry_date(modification=self._local(now_utc)))
        user = session_dict.get(getattr(settings, "AUTHKIT_SESSION_USER_KEY", _AUTH_USER_ID))
        user_id = str(user) if user is not None and _valid_key(str(user)) else ANONYMOUS_USER_ID
        record = SessionData(
            session_id=stored_id,
            user_id=user_id,
            created_at=loaded.created_at if loaded is not None else now_utc,
            expires_at=expires_at,
            last_activity=now_utc,
            data=data,
        )
        if must_create:
            if not storage.create_session(stored_id, record):
                raise CreateError
        elif loaded is not None and loaded.data == data and loaded.user_id == user_id:
            # SESSION_SAVE_EVERY_REQUEST or a modified flag without a change:
            # only the expiry slides.
            if not storage.touch_session(stored_id, expires_at, last_activity=now_utc):
                raise UpdateError
        elif not storage.replace_session(stored_id, record):
            # Deleted (a logout elsewhere) or expired since it was loaded:
            # never brought back to life.
            raise UpdateError
        self._loaded = (key, record)
        return None

    def delete(self, session_key: str | None = None) -> None:
        """Delete the session ``session_key`` (default: this one); a missing one is no error."""
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        stored_id = known_stored_id(session_key)
        if stored_id is not None:
            self.storage.delete_session(stored_id)

    @classmethod
    def clear_expired(cls) -> None:
        """Delete expired records (``manage.py clearsessions``).

        This is authkit's whole cleanup: expired tokens and kv entries go too,
        as ``authkit cleanup`` would delete them.  It holds the shared cleanup
        lock and does nothing if another cleanup is running.
        """
        run_cleanup(get_storage())
