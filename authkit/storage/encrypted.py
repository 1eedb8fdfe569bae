"""``EncryptedStorage``: encryption at rest around any other backend.

Usage::

    from authkit.storage import EncryptedStorage, generate_key, open_storage

    key = generate_key()                       # keep it in a secret manager, not in the code
    storage = EncryptedStorage(open_storage("sqlite:///authkit.db"), [key])
    # or: open_storage("sqlite:///authkit.db", encryption_keys=[key])
    # or: AUTHKIT_ENCRYPTION_KEYS=<key> and open_storage("sqlite:///authkit.db")
    # keys may also come from a key file (a Path) or a provider (a function): see authkit.storage.keys

What is sealed (AES-256-GCM): a token's access token, refresh token and
metadata; a session's ``data``, ``ip_address`` and ``user_agent``; every kv
value.  What stays visible, because the store must look it up, sort or expire
by it: ids and kv keys, ``user_id``, every datetime, a token's ``token_type``,
``scopes`` and ``client_id``.  What is *bound* (visible but authenticated, as
associated data or as a sealed copy compared on read, so changing it in the database is an
:class:`~authkit.errors.EncryptionError` on read): the record's kind and id,
and for a token its ``user_id``, ``client_id``, ``token_type``, ``scopes``,
``issued_at`` and ``expires_at``; for a session its ``user_id`` and
``created_at`` (in the ciphertext) and its ``expires_at`` (by an *expiry tag*,
a MAC of the session id and expiry kept in the inner record's ``ip_address``,
so ``touch_session`` moves expiry and tag in one step on the server, without
reading the session).  A kv value is bound to its key; its expiry is not
bound (it is the inner store's own TTL, which ``touch_kv`` moves).

The format (envelope, keys, bindings) is :mod:`authkit.storage._seal`; the bulk
rewrites (``encrypt_existing``, ``reencrypt``) are
:mod:`authkit.storage._encrypted_migration`.

Access tokens are looked up through a *blind index*: the inner store's
``access_token`` column holds a keyed BLAKE2b-256 of the access token (an index
key derived with HKDF from the encryption key).  The ciphertext of a token
lives in the inner record's ``refresh_token`` field, of a session in its
``user_agent`` field, as :data:`ENVELOPE_PREFIX` + hex (base64 when large); the inner
``metadata``/``data`` is ``{}`` (no JSON document around the ciphertext to
encode and decode on every call).

The store knows it is encrypted: the first write records a marker (the
reserved kv key ``authkit:encrypted-store``); a storage opened on it without
keys refuses to work (:class:`~authkit.errors.ConfigurationError`).
:meth:`EncryptedStorage.encrypt_existing` moves a plaintext store to sealed
records in place, resumably, while readers keep working.

Counters (``incr_kv``) are the one exception to "every kv value is
sealed": the inner store must add to them in one atomic step, which it
cannot do to a ciphertext, so a counter is kept in the inner store as plain
ASCII decimal (``b"42"``) and read back as it is.  A sealed value never looks
like one (it starts with a version byte), so a value stored with ``store_kv``
or ``add_kv`` stays sealed, and ``incr_kv`` on it is a ``ValueError`` like
on any value that is not a counter.  Keep secrets out of counters: their
value is readable, and not authenticated, in the inner store.

Key rotation: put the new key first.  The first key encrypts (and indexes)
every write; every key decrypts, and a lookup tries each key's blind index,
newest first.  :meth:`EncryptedStorage.reencrypt` moves every record to the
first key, after which the old keys can be removed.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from authkit.errors import EncryptionError
from authkit.models import AuthToken, SessionData
from authkit.storage import _encrypted_migration as migration
from authkit.storage._codec import parse_counter
from authkit.storage._marker import MARKER_KEY, claim
from authkit.storage._seal import ENVELOPE_PREFIX, VERSION, Key, Keyring, generate_key, is_sealed, kv_ad
from authkit.storage.base import DEFAULT_BATCH_SIZE, AuthStorage
from authkit.storage.keys import KeySource, resolve_keys
from authkit.storage.wrapper import WrappingStorage

__all__ = ["EncryptedStorage", "generate_key", "ENVELOPE_PREFIX", "MARKER_KEY"]

# One encoder for every call: json.dumps() with options builds a new one each time.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_JSON_DECODE = json.JSONDecoder().decode
_SEALED = bytes([VERSION])  # what a sealed kv value of the current format starts with
_STATE_TTL = timedelta(seconds=5)  # how long a reader trusts the marker state it read

# Marker states.
ENCRYPTED = "encrypted"
MIGRATING = "migrating"


def _moved_index() -> EncryptionError:
    # The index was copied from another record: the ciphertext holds a different token.
    return EncryptionError("a stored token's access-token index does not match its ciphertext")


class EncryptedStorage(WrappingStorage):
    """Encrypts secrets before they reach ``inner``; decrypts them on the way out.

    ``keys``: one or more keys, newest first, each urlsafe base64 text of 32
    bytes (:func:`generate_key`) or 32 raw bytes; or a key file's path (a
    :class:`pathlib.Path`, see :func:`authkit.storage.keys.read_key_file`); or
    a function returning such a list (a KMS or secret-manager seam, called
    once, here).  The first key encrypts, all decrypt.  Bad key material or an
    empty list is a :class:`~authkit.errors.ConfigurationError`.

    >>> storage = EncryptedStorage(MemoryStorage(), [generate_key()])
    >>> storage.store_kv("k", b"secret")
    >>> storage.get_kv("k")
    b'secret'

    Locks, cleanup, stats and counts go straight to ``inner``; ``close()``
    closes it.
    """

    def __init__(self, inner: AuthStorage, keys: KeySource) -> None:
        ring = Keyring(resolve_keys(keys))
        super().__init__(inner)
        self._ring = ring
        # The inner storage is ours now: its gate (refusing keyless use of an
        # encrypted store) must not refuse us.
        claim(inner)
        self._mutex = threading.Lock()
        # (state, read at) of the marker; None = not read yet.  An "encrypted"
        # state is final for this object: it never accepts plaintext again.
        self._state: tuple[str | None, datetime] | None = None
        # Whether that state is "encrypted": what every read asks first, in one attribute.
        self._sealed_only = False
        # Whether the marker is known to be there; read (once) before the first
        # write, not here: constructing must not need the server.
        self._marked = False

    def __repr__(self) -> str:
        return f"EncryptedStorage({self._inner!r}, keys=<{len(self._ring)}>)"

    @property
    def inner(self) -> AuthStorage:
        """The wrapped storage (it holds only ciphertext and blind indexes)."""
        return self._inner

    # -- the marker ---------------------------------------------------------

    def _marker_value(self, state: str, cursor: dict[str, Any] | None) -> bytes:
        key = self._ring.current
        body = _JSON.encode({"state": state, "cursor": cursor})
        return _JSON.encode({
            "authkit": "encrypted-store", "v": 1, "body": body,
            "kid": key.key_id.hex(), "mac": key.sign_marker(body.encode()),
        }).encode()

    def _parse_marker(self, raw: bytes) -> tuple[str | None, dict[str, Any] | None]:
        """The marker's (state, cursor); state ``None`` if its MAC does not verify under our keys.

        Only a verified marker can open the plaintext window of a migration: a
        forged "migrating" marker would otherwise let a database writer plant
        plaintext sessions.
        """
        try:
            outer = _JSON_DECODE(raw.decode("utf-8"))
            key: Key | None = self._ring.by_id.get(bytes.fromhex(outer["kid"]))
            body = outer["body"]
            if key is None or not hmac.compare_digest(key.sign_marker(body.encode()), outer["mac"]):
                return None, None
            inner = _JSON_DECODE(body)
            state, cursor = inner["state"], inner["cursor"]
        except (ValueError, KeyError, TypeError, AttributeError):
            return None, None
        if state not in (ENCRYPTED, MIGRATING):
            return None, None
        return state, cursor if isinstance(cursor, dict) else None

    def _read_marker(self) -> bytes | None:
        entry = self._inner._get_kv_entry(MARKER_KEY, self.now())
        return None if entry is None else entry[0]

    def _read_state(self) -> str | None:
        """The marker's state (``None``: no marker; unverifiable counts as encrypted), cached briefly."""
        cached = self._state
        if cached is not None and cached[0] == ENCRYPTED:
            return ENCRYPTED  # the common case, so before the clock
        now = self.now()
        if cached is not None and now - cached[1] < _STATE_TTL:
            return cached[0]
        raw = self._read_marker()
        state = None if raw is None else (self._parse_marker(raw)[0] or ENCRYPTED)
        if cached is not None and cached[0] == ENCRYPTED:
            state = ENCRYPTED  # once encrypted, always encrypted for this object
        self._set_state(state, now)
        return state

    def _set_state(self, state: str | None, now: datetime) -> None:
        self._state = (state, now)
        self._sealed_only = state == ENCRYPTED

    def _write_marker(self, state: str, cursor: dict[str, Any] | None) -> None:
        self._inner._store_kv(MARKER_KEY, self._marker_value(state, cursor), None)
        self._set_state(state, self.now())
        self._marked = True

    def _mark(self) -> None:
        """Record, before the first sealed write, that this store is encrypted."""
        with self._mutex:
            if self._marked:
                return
            if self._read_marker() is None:
                # add_kv: a migration marked meanwhile by another process is kept.
                self._inner._add_kv(MARKER_KEY, self._marker_value(ENCRYPTED, None), None, self.now())
            self._marked = True

    def _legacy_ok(self) -> bool:
        """Whether a plaintext record may be read: only while a verified migration is in progress.

        A read asks *before* it reads its record and passes the answer on: asked after, a
        migration that sealed the record and finished in between would make a plaintext
        record read a moment before look like one written into an encrypted store.

        The single-record reads ask ``not self._sealed_only and self._legacy_ok()``:
        the common case (an encrypted store) without a call."""
        if self._sealed_only:
            return False
        return self._read_state() == MIGRATING

    @staticmethod
    def _check_key(key: str) -> None:
        if key == MARKER_KEY:
            raise ValueError(f"the kv key {MARKER_KEY!r} is reserved for the encryption marker")

    def _not_encrypted(self, what: str) -> EncryptionError:
        return EncryptionError(
            f"a stored {what} is not encrypted (was it stored without EncryptedStorage? "
            "a plaintext store is moved with `authkit encrypt`)"
        )

    # -- tokens -----------------------------------------------------------

    def _seal_token(self, token: AuthToken) -> AuthToken:
        # A new object whose containers are new too: a hook must not change the
        # records it is given (a wrapper above may still hold them).  Built
        # without __init__, whose datetime checks were done already.
        sealed = object.__new__(AuthToken)
        sealed.__dict__.update(token.__dict__)
        sealed.access_token = self._ring.current.index(token.access_token)
        sealed.refresh_token = self._ring.seal_token(token)
        sealed.scopes = list(token.scopes)
        sealed.metadata = {}
        return sealed

    def _open_token(self, sealed: AuthToken, legacy: bool) -> bytes | None:
        """Open ``sealed`` in place; return the header it was sealed under (``None``: a legacy
        plaintext record, accepted when ``legacy``, the ``_legacy_ok()`` of before the record was read)."""
        text = sealed.refresh_token
        if text is not None and is_sealed(text, sealed.metadata):
            return self._ring.open_token(sealed, text)
        if legacy:
            return None
        raise self._not_encrypted("token")

    def _open_token_with_header(self, sealed: AuthToken, legacy: bool) -> tuple[AuthToken, bytes | None]:
        """The token and the header it was sealed under (see :meth:`_open_token`)."""
        return sealed, self._open_token(sealed, legacy)

    def _store_tokens(self, tokens: list[AuthToken]) -> None:
        if not self._marked:
            self._mark()
        self._inner._store_tokens([self._seal_token(t) for t in tokens])

    def _get_token(self, token_id: str) -> AuthToken | None:
        legacy = not self._sealed_only and self._legacy_ok()
        sealed = self._inner._get_sealed_token(token_id)
        if sealed is not None:
            # _open_token(), written out: one call less on every read.
            text = sealed.refresh_token
            if text is not None and text.startswith(ENVELOPE_PREFIX) and not sealed.metadata:
                self._ring.open_token(sealed, text)
            elif not legacy:
                raise self._not_encrypted("token")
        return sealed

    def _get_token_by_access_token(self, access_token: str, now: datetime) -> AuthToken | None:
        # Newest key first; records written under an older key (before
        # reencrypt) are found in a later lookup (see Keyring.lookup_order).
        legacy = not self._sealed_only and self._legacy_ok()
        for key in self._ring.lookup_order:
            index = key.index_mac.copy()  # key.index(), written out: one call less on every lookup
            index.update(access_token.encode())
            sealed = self._inner._get_sealed_token_by_access_token(index.hexdigest(), now)
            if sealed is not None:
                # _found(), written out: one call less on every lookup.
                text = sealed.refresh_token
                if text is None or not text.startswith(ENVELOPE_PREFIX) or sealed.metadata:
                    raise self._not_encrypted("token")  # found by a keyed index: sealed, never plaintext
                self._ring.open_token(sealed, text)
                if sealed.access_token != access_token:
                    raise _moved_index()
                return sealed
        if legacy:
            # During a migration a token not sealed yet is indexed by its plain value.
            plain = self._inner._get_token_by_access_token(access_token, now)
            if plain is not None and not is_sealed(plain.refresh_token, plain.metadata):
                return plain
            # Sealing is one way (plain -> sealed): a token the migration sealed between
            # our first lookup and the plain one is under the newest key's index now.
            return self._lookup(self._ring.current, access_token, now)
        return None

    def _lookup(self, key: Key, access_token: str, now: datetime) -> AuthToken | None:
        sealed = self._inner._get_token_by_access_token(key.index(access_token), now)
        return None if sealed is None else self._found(sealed, access_token)

    def _found(self, sealed: AuthToken, access_token: str) -> AuthToken:
        """``sealed``, found by ``access_token``'s keyed index, opened."""
        self._open_token(sealed, False)  # found by a keyed index: sealed, never plaintext
        # (A plain comparison: the keyed index already matched, this only catches a moved index.)
        if sealed.access_token != access_token:
            raise _moved_index()
        return sealed

    def _update_token(self, token: AuthToken) -> None:
        if not self._marked:
            self._mark()
        self._inner._update_token(self._seal_token(token))

    def _list_user_tokens(self, user_id: str) -> list[AuthToken]:
        legacy = self._legacy_ok()
        tokens = self._inner._list_user_tokens(user_id)
        for token in tokens:
            self._open_token(token, legacy)
        return tokens

    # -- sessions ---------------------------------------------------------

    def _seal_session(self, session: SessionData) -> SessionData:
        sealed = object.__new__(SessionData)
        sealed.__dict__.update(session.__dict__)
        sealed.ip_address = self._ring.expiry_tag(session.session_id, session.expires_at)
        sealed.user_agent = self._ring.seal_session(session)
        sealed.data = {}
        return sealed

    def _open_session(self, sealed: SessionData, legacy: bool) -> bytes | None:
        """Open ``sealed`` in place; return the header it was sealed under (``None``: a legacy
        plaintext record; ``b""`` when its expiry tag was made with another key or format than its
        ciphertext)."""
        text = sealed.user_agent
        if text is not None and is_sealed(text, sealed.data):
            return self._ring.open_session(sealed, text)
        if legacy:
            return None
        raise self._not_encrypted("session")

    def _open_session_with_header(self, sealed: SessionData, legacy: bool) -> tuple[SessionData, bytes | None]:
        """The session and the header it was sealed under (see :meth:`_open_session`)."""
        return sealed, self._open_session(sealed, legacy)

    def _store_sessions(self, sessions: list[SessionData]) -> None:
        if not self._marked:
            self._mark()
        self._inner._store_sessions([self._seal_session(s) for s in sessions])

    def _get_session(self, session_id: str, now: datetime) -> SessionData | None:
        legacy = not self._sealed_only and self._legacy_ok()
        sealed = self._inner._get_sealed_session(session_id, now)
        if sealed is not None:
            # _open_session(), written out: one call less on every read.
            text = sealed.user_agent
            if text is not None and text.startswith(ENVELOPE_PREFIX) and not sealed.data:
                self._ring.open_session(sealed, text)
            elif not legacy:
                raise self._not_encrypted("session")
        return sealed

    def _list_user_sessions(self, user_id: str, now: datetime) -> list[SessionData]:
        legacy = self._legacy_ok()
        sessions = self._inner._list_user_sessions(user_id, now)
        for session in sessions:
            self._open_session(session, legacy)
        return sessions

    # -- key-value --------------------------------------------------------

    def _seal_kv(self, key: str, value: bytes) -> bytes:
        return self._ring.seal(value, kv_ad(key))

    def _open_kv(self, key: str, stored: bytes, legacy: bool) -> tuple[bytes, bytes | None]:
        """The value and the header it was sealed under (``None``: a legacy plaintext value,
        accepted when ``legacy``, the ``_legacy_ok()`` of before the value was read)."""
        if legacy and not self._ring.looks_sealed_kv(stored):
            # Not sealed by any of our keys: during a migration, a plaintext value not moved yet.
            return stored, None
        return self._ring.open(stored, kv_ad(key), "kv value")

    def _store_kv(self, key: str, value: bytes, expires_at: datetime | None) -> None:
        if key == MARKER_KEY:
            self._check_key(key)
        if not self._marked:
            self._mark()
        self._inner._store_kv(key, self._seal_kv(key, value), expires_at)

    def _store_kv_entries(self, entries: list[tuple[str, bytes, datetime | None]]) -> None:
        if any(key == MARKER_KEY for key, _, _ in entries):
            self._check_key(MARKER_KEY)
        if not self._marked:
            self._mark()
        self._inner._store_kv_entries([(key, self._seal_kv(key, value), e) for key, value, e in entries])

    def _get_kv_entry(self, key: str, now: datetime) -> tuple[bytes, datetime | None] | None:
        if key == MARKER_KEY:
            self._check_key(key)
        legacy = not self._sealed_only and self._legacy_ok()
        entry = self._inner._get_kv_entry(key, now)
        if entry is None:
            return None
        stored = entry[0]
        # The inner store's expiry: touch_kv moves it, and it is not bound (see the module doc).
        if stored[:1] == _SEALED and not legacy:  # the common case; no counter starts with this byte
            return self._ring.open_kv(key, stored), entry[1]
        return self._open_kv_value(key, stored, legacy), entry[1]

    def _open_kv_value(self, key: str, stored: bytes, legacy: bool) -> bytes:
        if parse_counter(stored) is not None:
            return stored  # an incr_kv counter, kept in clear (see the module doc)
        return self._open_kv(key, stored, legacy)[0]

    def _delete_kv(self, key: str) -> None:
        self._check_key(key)
        self._inner._delete_kv(key)

    def _list_kv_keys(self, prefix: str, now: datetime) -> list[str]:
        keys = self._inner._list_kv_keys(prefix, now)
        if MARKER_KEY.startswith(prefix):
            keys = [k for k in keys if k != MARKER_KEY]
        return keys

    def _stats(self, now: datetime) -> dict[str, int]:
        counts = self._inner._stats(now)
        if self._read_marker() is not None and counts.get("kv_live", 0) > 0:
            counts = dict(counts)
            counts["kv_live"] -= 1  # the marker is the store's, not the application's
        return counts

    # Whole-record pages: the inner store's (one statement on SQL), decrypted.

    def _token_page(self, cursor: str | None, limit: int) -> tuple[list[AuthToken], str | None]:
        legacy = self._legacy_ok()
        tokens, cursor = self._inner._token_page(cursor, limit)
        for token in tokens:
            self._open_token(token, legacy)
        return tokens, cursor

    def _session_page(self, cursor: str | None, limit: int, now: datetime) -> tuple[list[SessionData], str | None]:
        legacy = self._legacy_ok()
        sessions, cursor = self._inner._session_page(cursor, limit, now)
        for session in sessions:
            self._open_session(session, legacy)
        return sessions, cursor

    def _kv_page(
        self, after: str | None, limit: int, now: datetime
    ) -> tuple[list[tuple[str, bytes, datetime | None]], str | None]:
        legacy = self._legacy_ok()
        entries, after = self._inner._kv_page(after, limit, now)
        return [(k, self._open_kv_value(k, v, legacy), e) for k, v, e in entries if k != MARKER_KEY], after

    def _get_kv_entries(self, keys: list[str], now: datetime) -> list[tuple[bytes, datetime | None] | None]:
        return [self._get_kv_entry(k, now) for k in keys]

    # -- atomic primitives --------------------------------------------------

    def _create_session(self, session: SessionData, now: datetime) -> bool:
        if not self._marked:
            self._mark()
        return self._inner._create_session(self._seal_session(session), now)

    def _replace_session(self, session: SessionData, now: datetime) -> bool:
        if not self._marked:
            self._mark()
        return self._inner._replace_session(self._seal_session(session), now)

    def _touch_session(
        self, session_id: str, expires_at: datetime | None, last_activity: datetime, now: datetime
    ) -> bool:
        # The expiry is bound by the expiry tag in the inner record's ip_address, not
        # by the ciphertext: moving both is one step on the server, and a concurrent
        # full write is never overwritten with what this touch read (it reads nothing).
        if self._legacy_ok():
            # During a migration the session may still be plaintext, with its own
            # ip_address where the tag would go: seal it (read, reseal, replace).
            plain = self._inner._get_session(session_id, now)
            if plain is None:
                return False
            if not is_sealed(plain.user_agent, plain.data):
                plain.expires_at, plain.last_activity = expires_at, last_activity
                return self._replace_session(plain, now)
        return self._inner._touch_session_ip(
            session_id, expires_at, last_activity, self._ring.expiry_tag(session_id, expires_at), now
        )

    def _touch_session_ip(
        self, session_id: str, expires_at: datetime | None, last_activity: datetime, ip_address: str | None,
        now: datetime,
    ) -> bool:
        # Only a wrapper around this one calls it.  The ip address is sealed inside the
        # ciphertext, so setting it needs a new envelope: read, reseal, replace.
        session = self._get_session(session_id, now)
        if session is None:
            return False
        session.expires_at, session.last_activity, session.ip_address = expires_at, last_activity, ip_address
        return self._replace_session(session, now)

    def _add_kv(self, key: str, value: bytes, expires_at: datetime | None, now: datetime) -> bool:
        if key == MARKER_KEY:
            self._check_key(key)
        if not self._marked:
            self._mark()
        return self._inner._add_kv(key, self._seal_kv(key, value), expires_at, now)

    def _incr_kv(self, key: str, amount: int, expires_at: datetime | None, now: datetime) -> int:
        if key == MARKER_KEY:
            self._check_key(key)
        if not self._marked:
            self._mark()
        return self._inner._incr_kv(key, amount, expires_at, now)

    def _touch_kv(self, key: str, expires_at: datetime | None, now: datetime) -> bool:
        # A kv entry's expiry is not bound (it is the inner store's own TTL): one step on the server.
        if key == MARKER_KEY:
            self._check_key(key)
        return self._inner._touch_kv(key, expires_at, now)

    # _delete_user_sessions and _delete_user_tokens go to the inner store
    # unchanged (WrappingStorage): they move no secret.

    # -- maintenance ------------------------------------------------------

    def reencrypt(self, batch_size: int = DEFAULT_BATCH_SIZE, progress: Callable[[int], None] | None = None) -> int:
        """Rewrite every record not yet under the first key (and format); return how many were rewritten.

        Walks tokens (expired ones too: ``get_token`` still returns them),
        live sessions and live kv entries, ``batch_size`` at a time (one read
        per page on SQL, two round trips on Redis), writing them back with
        one bulk call per batch and kind (kv entries with their expiry).
        ``progress(done)`` is called after every batch with the
        number rewritten so far.  Expired sessions and kv entries are skipped:
        nothing can read them, and ``cleanup_expired`` deletes them without
        decrypting.  Once it returns, the old keys can be removed from the
        configuration.

        Run it from one process at a time (the ``authkit reencrypt`` command
        holds a lock).  A record the application rewrites between this
        method's read and write of the same batch is written back as it was
        read, so run it when writes are quiet, or with a small ``batch_size``.
        """
        return migration.reencrypt(self, batch_size, progress)

    def begin_encrypt_existing(self) -> None:
        """Mark a migration from plaintext as in progress, without moving anything yet.

        From now on, readers configured with keys accept the plaintext records
        still in the store (and seal everything they write), and storages
        opened without keys are refused.  Use it to roll keys out to every
        application instance before :meth:`encrypt_existing` (which marks the
        store itself if this was not called).
        """
        with self._mutex:
            raw = self._read_marker()
            if raw is not None and self._parse_marker(raw)[0] == MIGRATING:
                return
            self._write_marker(MIGRATING, {"phase": "tokens", "cursor": None})

    def encrypt_existing(
        self, batch_size: int = DEFAULT_BATCH_SIZE, progress: Callable[[int], None] | None = None
    ) -> dict[str, Any]:
        """Seal every plaintext record of the inner store in place; return a summary.

        The store is marked "migrating" first (see :meth:`begin_encrypt_existing`);
        then tokens (expired ones too), sessions and kv entries are read a
        page of ``batch_size`` at a time (keyset pagination: one statement
        per page on SQL, two round trips on Redis) and the plaintext ones
        written back sealed, one bulk write per batch and kind (kv entries
        with their expiry).  After each batch the position is saved in the marker, so a
        run that is interrupted (Ctrl-C, a crash, a lost connection) continues
        where it stopped when started again.  Expired sessions and kv entries
        are deleted first (``cleanup_expired``), not sealed: nothing can read
        them.  At the end the store is marked "encrypted": from then on a
        plaintext record is an :class:`~authkit.errors.EncryptionError` again.

        ``progress(done)`` is called after every batch with the number of
        records examined so far.  The summary has ``tokens``, ``sessions``,
        ``kv`` (records sealed), ``already_sealed``, ``examined``, ``resumed``
        (whether an earlier run's position was used) and
        ``longest_write_seconds`` (the longest single write, i.e. the longest
        write transaction).

        Run it from one process at a time (``authkit encrypt`` holds a lock).
        A record the application rewrites between this method's read and write
        of the same batch is written back as it was read: run it when writes
        are quiet, or with a small ``batch_size``.
        """
        return migration.encrypt_existing(self, batch_size, progress)
