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
``scopes`` and ``client_id``.  What is *bound* (associated data: visible but
authenticated, so changing it in the database is an
:class:`~authkit.errors.EncryptionError` on read): the record's kind and id,
and for a token its ``user_id``, ``client_id``, ``token_type``, ``scopes``,
``issued_at`` and ``expires_at``; for a session its ``user_id``,
``created_at`` and ``expires_at``.  A kv value is bound to its key.

Every ciphertext starts with a version byte and a 4-byte key id, then a random
96-bit nonce; the header is bound too.

Access tokens are looked up through a *blind index*: the inner store's
``access_token`` column holds a keyed BLAKE2b-256 of the access token (an index
key derived with HKDF from the encryption key).  The ciphertext of a token
lives in the inner record's ``refresh_token`` field, of a session in its
``user_agent`` field, as :data:`ENVELOPE_PREFIX` + standard base64; the inner
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

import base64
import binascii
import hashlib
import hmac
import json
import json.scanner
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from authkit.errors import ConfigurationError, EncryptionError
from authkit.models import AuthToken, SessionData
from authkit.storage._codec import dumps, parse_counter
from authkit.storage._marker import MARKER_KEY, claim
from authkit.storage.base import DEFAULT_BATCH_SIZE, AuthStorage
from authkit.storage.keys import KeySource, resolve_keys
from authkit.storage.wrapper import WrappingStorage

__all__ = ["EncryptedStorage", "generate_key", "ENVELOPE_PREFIX", "MARKER_KEY"]

ENVELOPE_PREFIX = "authkit:enc:"
"""Starts the inner field (a token's ``refresh_token``, a session's ``user_agent``) that holds a ciphertext."""

_VERSION = 2  # 2: the access-granting fields are bound as associated data
_KEY_ID_SIZE = 4
_NONCE_SIZE = 12
_HEADER_SIZE = 1 + _KEY_ID_SIZE
_MIN_ENVELOPE = _HEADER_SIZE + _NONCE_SIZE + 16  # + the GCM tag
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# One encoder for every call: json.dumps() with options builds a new one each time.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_JSON_DECODE = json.JSONDecoder().decode
_STATE_TTL = timedelta(seconds=5)  # how long a reader trusts the marker state it read

# Marker states.
_ENCRYPTED = "encrypted"
_MIGRATING = "migrating"


def generate_key() -> str:
    """A new random 256-bit key as urlsafe base64 text (44 characters).

    >>> key = generate_key()
    >>> len(key)
    44
    """
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


def _hkdf(material: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)


def _key_bytes(key: object, position: int) -> bytes:
    """32 bytes of key material from text or bytes; never echoes the key."""
    where = f"encryption key #{position + 1}"
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return bytes(key)
    if isinstance(key, (bytes, bytearray)):
        try:
            key = bytes(key).decode("ascii")
        except UnicodeDecodeError:
            raise ConfigurationError(f"{where} is neither 32 raw bytes nor base64 text") from None
    if not isinstance(key, str):
        raise TypeError(f"{where} must be a str or bytes, not {type(key).__name__}")
    text = key.strip()
    text += "=" * (-len(text) % 4)  # padding is optional
    try:
        raw = base64.b64decode(text.encode("ascii"), altchars=b"-_", validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ConfigurationError(f"{where} is not urlsafe base64 text (make one with generate_key())") from None
    if len(raw) != 32:
        raise ConfigurationError(f"{where} decodes to {len(raw)} bytes; AES-256 needs 32 (see generate_key())")
    return raw


class _Key:
    """One key's derived material: its id, the AEAD, the blind-index key and the marker key."""

    __slots__ = ("_index_key", "aead", "header", "key_id", "marker_key")

    def __init__(self, material: bytes) -> None:
        # HKDF separates the uses, so the raw key is never used for two things.
        self.key_id = _hkdf(material, b"authkit key id v1")[:_KEY_ID_SIZE]
        self.header = bytes([_VERSION]) + self.key_id
        # One AESGCM object per key for the storage's life: building one per call
        # (its key schedule) was a measurable share of a write.
        self.aead = AESGCM(_hkdf(material, b"authkit aes-256-gcm v1"))
        # Keyed BLAKE2b is a MAC in one C call: about half the time of HMAC-SHA256.
        self._index_key = _hkdf(material, b"authkit blind index v2")
        self.marker_key = _hkdf(material, b"authkit store marker v1")

    def __repr__(self) -> str:
        return f"<key id {self.key_id.hex()}>"

    def index(self, access_token: str) -> str:
        """The blind index: keyed BLAKE2b-256 of the access token under this key's index key, in hex."""
        return hashlib.blake2b(access_token.encode("utf-8"), key=self._index_key, digest_size=32).hexdigest()

    def sign_marker(self, body: bytes) -> str:
        return hmac.new(self.marker_key, body, hashlib.sha256).hexdigest()


_US = timedelta(microseconds=1)


def _token_ad(token: AuthToken) -> bytes:
    """Version 2 associated data of a token: its identity and every field that grants access.

    ``repr()`` of the free-text fields quotes and escapes them, so no two
    different field sets encode alike (a NUL in a scope cannot shift a field).
    Datetimes as exact microseconds since 1970 (several times cheaper than
    ``isoformat()``, which was most of this function's time).
    """
    expires = token.expires_at
    return (
        f"authkit\x00token\x00{token.token_id}\x00{token.user_id}\x00"
        f"{token.client_id!r}\x00{token.token_type!r}\x00{token.scopes!r}\x00"
        f"{(token.issued_at - _EPOCH) // _US}\x00{'-' if expires is None else (expires - _EPOCH) // _US}"
    ).encode()


def _session_ad(session: SessionData) -> bytes:
    """Version 2 associated data of a session: identity, owner, creation and expiry."""
    expires = session.expires_at
    return (
        f"authkit\x00session\x00{session.session_id}\x00{session.user_id}\x00"
        f"{(session.created_at - _EPOCH) // _US}\x00{'-' if expires is None else (expires - _EPOCH) // _US}"
    ).encode()


def _kv_ad(key: str) -> bytes:
    return f"authkit\x00kv\x00{key}\x00".encode()


def _is_sealed(text: str | None, holder: dict[str, Any]) -> bool:
    """Whether an inner record holds a ciphertext (``text`` its carrier field, ``holder`` its JSON)."""
    return text is not None and text.startswith(ENVELOPE_PREFIX) and not holder


_PREFIX_LEN = len(ENVELOPE_PREFIX)


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
        materials = resolve_keys(keys)
        derived = [_Key(_key_bytes(key, i)) for i, key in enumerate(materials)]
        by_id: dict[bytes, _Key] = {}
        for i, key in enumerate(derived):
            if key.key_id in by_id:
                raise ConfigurationError(f"encryption key #{i + 1} repeats an earlier key")
            by_id[key.key_id] = key
        super().__init__(inner)
        self._keys = derived
        self._by_id = by_id
        self._lookup_keys = derived if len(derived) == 1 else [*derived, derived[0]]
        # The inner storage is ours now: its gate (refusing keyless use of an
        # encrypted store) must not refuse us.
        claim(inner)
        self._mutex = threading.Lock()
        # (state, read at) of the marker; None = not read yet.  An "encrypted"
        # state is final for this object: it never accepts plaintext again.
        self._state: tuple[str | None, datetime] | None = None
        # Whether the marker is known to be there; read (once) before the first
        # write, not here: constructing must not need the server.
        self._marked = False

    def __repr__(self) -> str:
        return f"EncryptedStorage({self._inner!r}, keys=<{len(self._keys)}>)"

    @property
    def inner(self) -> AuthStorage:
        """The wrapped storage (it holds only ciphertext and blind indexes)."""
        return self._inner

    # -- the marker ---------------------------------------------------------

    def _marker_value(self, state: str, cursor: dict[str, Any] | None) -> bytes:
        key = self._keys[0]
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
            key = self._by_id.get(bytes.fromhex(outer["kid"]))
            body = outer["body"]
            if key is None or not hmac.compare_digest(key.sign_marker(body.encode()), outer["mac"]):
                return None, None
            inner = _JSON_DECODE(body)
            state, cursor = inner["state"], inner["cursor"]
        except (ValueError, KeyError, TypeError, AttributeError):
            return None, None
        if state not in (_ENCRYPTED, _MIGRATING):
            return None, None
        return state, cursor if isinstance(cursor, dict) else None

    def _read_marker(self) -> bytes | None:
        entry = self._inner._get_kv_entry(MARKER_KEY, self.now())
        return None if entry is None else entry[0]

    def _read_state(self) -> str | None:
        """The marker's state (``None``: no marker; unverifiable counts as encrypted), cached briefly."""
        now = self.now()
        cached = self._state
        if cached is not None:
            if cached[0] == _ENCRYPTED or now - cached[1] < _STATE_TTL:
                return cached[0]
        raw = self._read_marker()
        state = None if raw is None else (self._parse_marker(raw)[0] or _ENCRYPTED)
        if cached is not None and cached[0] == _ENCRYPTED:
            state = _ENCRYPTED  # once encrypted, always encrypted for this object
        self._state = (state, now)
        return state

    def _write_marker(self, state: str, cursor: dict[str, Any] | None) -> None:
        self._inner._store_kv(MARKER_KEY, self._marker_value(state, cursor), None)
        self._state = (state, self.now())
        self._marked = True

    def _mark(self) -> None:
        """Record, before the first sealed write, that this store is encrypted."""
        with self._mutex:
            if self._marked:
                return
            if self._read_marker() is None:
                # add_kv: a migration marked meanwhile by another process is kept.
                self._inner._add_kv(MARKER_KEY, self._marker_value(_ENCRYPTED, None), None, self.now())
            self._marked = True

    def _legacy_ok(self) -> bool:
        """Whether a plaintext record may be read: only while a verified migration is in progress."""
        return self._read_state() == _MIGRATING

    @staticmethod
    def _check_key(key: str) -> None:
        if key == MARKER_KEY:
            raise ValueError(f"the kv key {MARKER_KEY!r} is reserved for the encryption marker")

    # -- the envelope -----------------------------------------------------

    def _seal(self, plaintext: bytes, ad: bytes) -> bytes:
        key = self._keys[0]
        header = key.header
        nonce = os.urandom(_NONCE_SIZE)
        return header + nonce + key.aead.encrypt(nonce, plaintext, header + ad)

    def _open(self, envelope: bytes, ad: bytes, what: str) -> tuple[bytes, bytes]:
        """The plaintext and the header (version + key id) it was sealed under."""
        if len(envelope) < _MIN_ENVELOPE:
            raise EncryptionError(f"a stored {what} is not an authkit ciphertext (too short)")
        if envelope[0] != _VERSION:
            raise EncryptionError(f"a stored {what} has an unknown ciphertext version {envelope[0]}")
        header = envelope[:_HEADER_SIZE]
        key = self._by_id.get(header[1:])
        if key is None:
            raise EncryptionError(
                f"a stored {what} was encrypted with a key that is not configured (key id {header[1:].hex()})"
            )
        try:
            plaintext = key.aead.decrypt(envelope[_HEADER_SIZE:_HEADER_SIZE + _NONCE_SIZE],
                                         envelope[_HEADER_SIZE + _NONCE_SIZE:], header + ad)
        except InvalidTag:
            raise EncryptionError(
                f"cannot decrypt a stored {what}: it was tampered with (a bound field changed), moved from "
                "another record, or encrypted with a different key that has the same id"
            ) from None
        return plaintext, header

    def _open_text(self, text: str, ad: bytes, what: str) -> tuple[str | None, str | None, dict[str, Any], bytes]:
        """Decrypt what :meth:`_seal_text` made, and the header it was sealed under."""
        try:
            envelope = binascii.a2b_base64(text[_PREFIX_LEN:])
        except (binascii.Error, ValueError):
            raise EncryptionError(f"a stored {what} has a malformed ciphertext") from None
        plaintext, header = self._open(envelope, ad, what)
        try:
            first, second, obj = _unpack(plaintext)
        except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors too
            raise EncryptionError(f"a stored {what} decrypted to malformed data") from None
        if not isinstance(obj, dict):
            raise EncryptionError(f"a stored {what} decrypted to malformed data")
        return first, second, obj, header

    def _seal_text(self, first: str | None, second: str | None, obj: dict[str, Any], ad: bytes) -> str:
        """Two optional strings and a JSON object, encrypted into one text field for the inner store."""
        envelope = self._seal(_pack(first, second, obj), ad)
        return ENVELOPE_PREFIX + binascii.b2a_base64(envelope, newline=False).decode("ascii")

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
        sealed.access_token = self._keys[0].index(token.access_token)
        sealed.refresh_token = self._seal_text(token.access_token, token.refresh_token, token.metadata,
                                               _token_ad(token))
        sealed.scopes = list(token.scopes)
        sealed.metadata = {}
        return sealed

    def _open_token_with_header(self, sealed: AuthToken) -> tuple[AuthToken, bytes | None]:
        """The token and the header it was sealed under (``None``: a legacy plaintext record)."""
        text = sealed.refresh_token
        if not _is_sealed(text, sealed.metadata):
            if self._legacy_ok():
                return sealed, None
            raise self._not_encrypted("token")
        assert text is not None
        access, refresh, metadata, header = self._open_text(text, _token_ad(sealed), "token")
        if access is None:
            raise EncryptionError("a stored token decrypted to malformed data")
        sealed.access_token = access
        sealed.refresh_token = refresh
        sealed.metadata = metadata
        return sealed, header

    def _open_token(self, sealed: AuthToken) -> AuthToken:
        return self._open_token_with_header(sealed)[0]

    def _store_tokens(self, tokens: list[AuthToken]) -> None:
        if not self._marked:
            self._mark()
        self._inner._store_tokens([self._seal_token(t) for t in tokens])

    def _get_token(self, token_id: str) -> AuthToken | None:
        sealed = self._inner._get_token(token_id)
        return None if sealed is None else self._open_token(sealed)

    def _get_token_by_access_token(self, access_token: str, now: datetime) -> AuthToken | None:
        # Newest key first: every write uses it, so live tokens are found in one
        # lookup; records written under an older key (before reencrypt) in a later one.
        # With several keys the newest is tried again last: reencrypt() may have moved
        # the record from an old key to it between our first and our later lookups.
        for key in self._lookup_keys:
            token = self._lookup(key, access_token, now)
            if token is not None:
                return token
        if self._legacy_ok():
            # During a migration a token not sealed yet is indexed by its plain value.
            legacy = self._inner._get_token_by_access_token(access_token, now)
            if legacy is not None and not _is_sealed(legacy.refresh_token, legacy.metadata):
                return legacy
            # Sealing is one way (plain -> sealed): a token the migration sealed between
            # our first lookup and the plain one is under the newest key's index now.
            return self._lookup(self._keys[0], access_token, now)
        return None

    def _lookup(self, key: _Key, access_token: str, now: datetime) -> AuthToken | None:
        sealed = self._inner._get_token_by_access_token(key.index(access_token), now)
        if sealed is None:
            return None
        token = self._open_token(sealed)
        # (A plain comparison: the keyed index already matched, this only catches a moved index.)
        if token.access_token != access_token:
            # The index was copied from another record: the ciphertext holds a different token.
            raise EncryptionError("a stored token's access-token index does not match its ciphertext")
        return token

    def _update_token(self, token: AuthToken) -> None:
        if not self._marked:
            self._mark()
        self._inner._update_token(self._seal_token(token))

    def _list_user_tokens(self, user_id: str) -> list[AuthToken]:
        return [self._open_token(t) for t in self._inner._list_user_tokens(user_id)]

    # -- sessions ---------------------------------------------------------

    def _seal_session(self, session: SessionData) -> SessionData:
        sealed = object.__new__(SessionData)
        sealed.__dict__.update(session.__dict__)
        sealed.ip_address = None
        sealed.user_agent = self._seal_text(session.ip_address, session.user_agent, session.data,
                                            _session_ad(session))
        sealed.data = {}
        return sealed

    def _open_session_with_header(self, sealed: SessionData) -> tuple[SessionData, bytes | None]:
        text = sealed.user_agent
        if not _is_sealed(text, sealed.data):
            if self._legacy_ok():
                return sealed, None
            raise self._not_encrypted("session")
        assert text is not None
        ip, agent, data, header = self._open_text(text, _session_ad(sealed), "session")
        sealed.data = data
        sealed.ip_address = ip
        sealed.user_agent = agent
        return sealed, header

    def _open_session(self, sealed: SessionData) -> SessionData:
        return self._open_session_with_header(sealed)[0]

    def _store_sessions(self, sessions: list[SessionData]) -> None:
        if not self._marked:
            self._mark()
        self._inner._store_sessions([self._seal_session(s) for s in sessions])

    def _get_session(self, session_id: str, now: datetime) -> SessionData | None:
        sealed = self._inner._get_session(session_id, now)
        return None if sealed is None else self._open_session(sealed)

    def _list_user_sessions(self, user_id: str, now: datetime) -> list[SessionData]:
        return [self._open_session(s) for s in self._inner._list_user_sessions(user_id, now)]

    # -- key-value --------------------------------------------------------

    def _seal_kv(self, key: str, value: bytes) -> bytes:
        return self._seal(value, _kv_ad(key))

    def _open_kv(self, key: str, stored: bytes) -> tuple[bytes, bytes | None]:
        """The value and the header it was sealed under (``None``: a legacy plaintext value)."""
        if not _looks_sealed_kv(stored, self._by_id) and self._legacy_ok():
            # Not sealed by any of our keys: during a migration, a plaintext value not moved yet.
            return stored, None
        return self._open(stored, _kv_ad(key), "kv value")

    def _store_kv(self, key: str, value: bytes, expires_at: datetime | None) -> None:
        if key == MARKER_KEY:
            self._check_key(key)
        if not self._marked:
            self._mark()
        self._inner._store_kv(key, self._seal_kv(key, value), expires_at)

    def _get_kv_entry(self, key: str, now: datetime) -> tuple[bytes, datetime | None] | None:
        if key == MARKER_KEY:
            self._check_key(key)
        entry = self._inner._get_kv_entry(key, now)
        if entry is None:
            return None
        if parse_counter(entry[0]) is not None:
            return entry  # an incr_kv counter, kept in clear (see the module doc)
        # The inner store's expiry: touch_kv moves it, and it is not bound (see the module doc).
        return self._open_kv(key, entry[0])[0], entry[1]

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
        # expires_at is bound to the ciphertext, so moving it means a new envelope:
        # read and verify the record, reseal it with the new expiry, and write it
        # back with replace_session, which writes only if the session is still
        # live (a session deleted or expired meanwhile stays gone).  See
        # docs/encryption.md for the one race this leaves (a concurrent full write).
        sealed = self._inner._get_session(session_id, now)
        if sealed is None:
            return False
        session = self._open_session(sealed)
        session.expires_at = expires_at
        session.last_activity = last_activity
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
        live sessions and live kv entries, ``batch_size`` at a time, writing
        tokens and sessions back with one bulk call per batch and kv entries
        with their expiry.  ``progress(done)`` is called after every batch
        with the number rewritten so far.  Expired sessions and kv entries are
        skipped: nothing can read them, and ``cleanup_expired`` deletes them
        without decrypting.  Once it returns, the old keys can be removed from
        the configuration.  Records of an older ciphertext version (whose
        access-granting fields were not bound) are rewritten too.

        Run it from one process at a time (the ``authkit reencrypt`` command
        holds a lock).  A record the application rewrites between this
        method's read and write of the same batch is written back as it was
        read, so run it when writes are quiet, or with a small ``batch_size``.
        """
        _check_batch_size(batch_size)
        current = self._keys[0].header
        done = 0

        def report(count: int) -> None:
            nonlocal done
            done += count
            if progress is not None:
                progress(done)

        for ids in _batches(self._inner.iter_token_ids(batch_size), batch_size):
            tokens = []
            for token_id in ids:
                sealed = self._inner._get_token(token_id)
                if sealed is not None:
                    token, header = self._open_token_with_header(sealed)
                    if header != current:
                        tokens.append(token)
            if tokens:
                self._store_tokens(tokens)
            report(len(tokens))

        for ids in _batches(self._inner.iter_session_ids(batch_size), batch_size):
            now = self.now()
            sessions = []
            for session_id in ids:
                sealed_session = self._inner._get_session(session_id, now)
                if sealed_session is not None:
                    session, header = self._open_session_with_header(sealed_session)
                    if header != current:
                        sessions.append(session)
            if sessions:
                self._store_sessions(sessions)
            report(len(sessions))

        for keys in _batches(self._list_kv_keys("", self.now()), batch_size):
            now = self.now()
            rewritten = 0
            for key in keys:
                entry = self._inner._get_kv_entry(key, now)
                if entry is None or parse_counter(entry[0]) is not None:
                    continue  # gone, or a counter (kept in clear)
                value, header = self._open_kv(key, entry[0])
                if header != current:
                    self._store_kv(key, value, entry[1])
                    rewritten += 1
            report(rewritten)
        self._inner._drop_old_copies()
        return done

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
            if raw is not None and self._parse_marker(raw)[0] == _MIGRATING:
                return
            self._write_marker(_MIGRATING, {"phase": "tokens", "cursor": None})

    def encrypt_existing(
        self, batch_size: int = DEFAULT_BATCH_SIZE, progress: Callable[[int], None] | None = None
    ) -> dict[str, Any]:
        """Seal every plaintext record of the inner store in place; return a summary.

        The store is marked "migrating" first (see :meth:`begin_encrypt_existing`);
        then tokens (expired ones too), sessions and kv entries are read
        ``batch_size`` at a time and the plaintext ones written back sealed,
        tokens and sessions with one bulk write per batch.  After each batch
        the position is saved in the marker, so a run that is interrupted
        (Ctrl-C, a crash, a lost connection) continues where it stopped when
        started again.  Expired sessions and kv entries are deleted first
        (``cleanup_expired``), not sealed: nothing can read them.  At the end
        the store is marked "encrypted": from then on a plaintext record is an
        :class:`~authkit.errors.EncryptionError` again.

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
        _check_batch_size(batch_size)
        with self._mutex:
            raw = self._read_marker()
            state, cursor = (None, None) if raw is None else self._parse_marker(raw)
            resumed = state == _MIGRATING and cursor is not None and cursor != {"phase": "tokens", "cursor": None}
            if state != _MIGRATING or cursor is None:
                cursor = {"phase": "tokens", "cursor": None}
                self._write_marker(_MIGRATING, cursor)
        summary: dict[str, Any] = {"tokens": 0, "sessions": 0, "kv": 0, "already_sealed": 0, "examined": 0,
                                   "resumed": resumed, "longest_write_seconds": 0.0}

        def timed_write(write: Callable[..., None], *args: Any) -> None:
            started = time.perf_counter()
            write(*args)
            summary["longest_write_seconds"] = max(summary["longest_write_seconds"], time.perf_counter() - started)

        def step(examined: int, position: dict[str, Any]) -> None:
            summary["examined"] += examined
            self._write_marker(_MIGRATING, position)
            if progress is not None:
                progress(summary["examined"])

        if cursor["phase"] == "tokens":
            # Deleting what has expired first keeps expired plaintext off the disk for good.
            self._inner.cleanup_expired(batch_size=batch_size)
        inner = self._inner
        phases = ["tokens", "sessions", "kv"]
        for phase in phases[phases.index(cursor.get("phase", "tokens")):]:
            start = cursor.get("cursor") if phase == cursor.get("phase") else None
            if phase == "tokens":
                page: str | None = start
                while True:
                    ids, page = inner._token_id_page(page, batch_size)
                    tokens = []
                    for token_id in ids:
                        record = inner._get_token(token_id)
                        if record is None:
                            continue
                        if _is_sealed(record.refresh_token, record.metadata):
                            summary["already_sealed"] += 1
                        else:
                            tokens.append(self._seal_token(record))
                    if tokens:
                        timed_write(inner._store_tokens, tokens)
                    summary["tokens"] += len(tokens)
                    step(len(ids), {"phase": "tokens" if page else "sessions", "cursor": page})
                    if page is None:
                        break
            elif phase == "sessions":
                page = start
                while True:
                    ids, page = inner._session_id_page(page, batch_size)
                    now = self.now()
                    sessions = []
                    for session_id in ids:
                        session = inner._get_session(session_id, now)
                        if session is None:
                            continue
                        if _is_sealed(session.user_agent, session.data):
                            summary["already_sealed"] += 1
                        else:
                            sessions.append(self._seal_session(session))
                    if sessions:
                        timed_write(inner._store_sessions, sessions)
                    summary["sessions"] += len(sessions)
                    step(len(ids), {"phase": "sessions" if page else "kv", "cursor": page})
                    if page is None:
                        break
            else:
                after = start
                keys = sorted(k for k in inner._list_kv_keys("", self.now()) if k != MARKER_KEY)
                if after is not None:
                    keys = [k for k in keys if k > after]
                for batch in _batches(keys, batch_size):
                    now = self.now()
                    for key in batch:
                        entry = inner._get_kv_entry(key, now)
                        if entry is None:
                            continue
                        value, expires_at = entry
                        if _looks_sealed_kv(value, self._by_id):
                            summary["already_sealed"] += 1
                            continue
                        sealed_value = self._seal_kv(key, value)
                        timed_write(inner._store_kv, key, sealed_value, expires_at)
                        summary["kv"] += 1
                    step(len(batch), {"phase": "kv", "cursor": batch[-1]})
        self._inner.cleanup_expired(batch_size=batch_size)
        with self._mutex:
            self._write_marker(_ENCRYPTED, None)
        self._inner._drop_old_copies()
        return summary


def _looks_sealed_kv(value: bytes, by_id: dict[bytes, _Key]) -> bool:
    """A kv value that starts with our version byte and one of our key ids (a plaintext
    value does so by chance with probability 2**-40)."""
    return value[:1] == b"\x02" and value[1:_HEADER_SIZE] in by_id


def _check_batch_size(batch_size: object) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool):
        raise TypeError("batch_size must be an int")
    if batch_size <= 0:
        raise ValueError("batch_size must be > 0")


def _batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    """Lists of up to ``size`` items from the iterator ``items``."""
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# The C scanner behind json.loads, called directly: it skips loads()' two regular
# expression passes for whitespace, which were most of a small record's decode time.
_SCAN: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def _pack(first: str | None, second: str | None, obj: dict[str, Any]) -> bytes:
    """``[first, second, obj]`` as compact JSON: one C encoder call for the whole record."""
    return dumps([first, second, obj]).encode("utf-8")


def _unpack(plaintext: bytes) -> tuple[str | None, str | None, Any]:
    """The inverse of :func:`_pack`; ``ValueError`` when malformed."""
    text = plaintext.decode("utf-8")
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:  # the scanner's way of saying "no JSON value here"
        raise ValueError("not JSON") from None
    if end != len(text) or not isinstance(value, list) or len(value) != 3:
        raise ValueError("not a packed record")
    first, second, obj = value
    if not (first is None or isinstance(first, str)) or not (second is None or isinstance(second, str)):
        raise ValueError("not a packed record")
    return first, second, obj
