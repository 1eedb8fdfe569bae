"""``EncryptedStorage``: encryption at rest around any other backend.

Usage::

    from authkit.storage import EncryptedStorage, generate_key, open_storage

    key = generate_key()                       # keep it in a secret manager, not in the code
    storage = EncryptedStorage(open_storage("sqlite:///authkit.db"), [key])
    # or: open_storage("sqlite:///authkit.db", encryption_keys=[key])
    # or: AUTHKIT_ENCRYPTION_KEYS=<key> and open_storage("sqlite:///authkit.db")

What is encrypted (AES-256-GCM): a token's access token, refresh token and
metadata; a session's ``data``, ``ip_address`` and ``user_agent``; every kv
value (with its expiry).  What stays plain, because the store must look it up,
sort or expire by it: ids and kv keys, ``user_id``, every datetime, a token's
``token_type``, ``scopes`` and ``client_id``.

Every ciphertext starts with a version byte and a 4-byte key id, then a random
96-bit nonce.  The associated data binds the ciphertext to its record (kind,
id, user) and to that header, so a ciphertext copied to another record, or
one with a flipped byte, fails with :class:`~authkit.errors.EncryptionError`.

Access tokens are looked up through a *blind index*: the inner store's
``access_token`` column holds ``HMAC-SHA256(index_key, access_token)`` with an
index key derived (HKDF) from the encryption key, and the ciphertext lives in
the inner token's ``metadata`` under :data:`ENVELOPE_FIELD` (standard base64).

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
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from authkit.errors import ConfigurationError, EncryptionError
from authkit.models import AuthToken, SessionData
from authkit.storage._codec import dumps, loads, micros, moment, parse_counter
from authkit.storage.base import DEFAULT_BATCH_SIZE, AuthStorage
from authkit.storage.wrapper import WrappingStorage

__all__ = ["EncryptedStorage", "generate_key", "ENVELOPE_FIELD"]

ENVELOPE_FIELD = "authkit:enc"
"""The inner record's ``metadata``/``data`` key that holds the ciphertext (standard base64)."""

_VERSION = 1
_KEY_ID_SIZE = 4
_NONCE_SIZE = 12
_HEADER_SIZE = 1 + _KEY_ID_SIZE
_MIN_ENVELOPE = _HEADER_SIZE + _NONCE_SIZE + 16  # + the GCM tag
_KV_NO_EXPIRY = b"\x00"
_KV_EXPIRY = b"\x01"


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
    """One key's derived material: its id, the AEAD and the blind-index key."""

    __slots__ = ("_index_mac", "aead", "key_id")

    def __init__(self, material: bytes) -> None:
        # HKDF separates the three uses, so the raw key is never used for two things.
        self.key_id = _hkdf(material, b"authkit key id v1")[:_KEY_ID_SIZE]
        self.aead = AESGCM(_hkdf(material, b"authkit aes-256-gcm v1"))
        # Keyed once; index() copies it, which is cheaper than hmac.digest() setting
        # the key (and looking SHA-256 up in OpenSSL) on every call.
        self._index_mac = hmac.new(_hkdf(material, b"authkit blind index v1"), digestmod=hashlib.sha256)

    def __repr__(self) -> str:
        return f"<key id {self.key_id.hex()}>"

    def index(self, access_token: str) -> str:
        """The blind index: HMAC-SHA256 of the access token under this key's index key, in hex."""
        mac = self._index_mac.copy()
        mac.update(access_token.encode("utf-8"))
        return mac.hexdigest()


def _identity(kind: str, record_id: str, user_id: str = "") -> bytes:
    # Ids never contain NUL (check_id), so NUL separators make the encoding unambiguous.
    return f"authkit\x00{kind}\x00{record_id}\x00{user_id}".encode()


class EncryptedStorage(WrappingStorage):
    """Encrypts secrets before they reach ``inner``; decrypts them on the way out.

    ``keys``: one or more keys, newest first, each urlsafe base64 text of 32
    bytes (:func:`generate_key`) or 32 raw bytes.  The first key encrypts, all
    decrypt.  Bad key material is a :class:`~authkit.errors.ConfigurationError`.

    >>> storage = EncryptedStorage(MemoryStorage(), [generate_key()])
    >>> storage.store_kv("k", b"secret")
    >>> storage.get_kv("k")
    b'secret'

    Locks, cleanup, stats and counts go straight to ``inner``; ``close()``
    closes it.
    """

    def __init__(self, inner: AuthStorage, keys: Sequence[str | bytes]) -> None:
        if isinstance(keys, (str, bytes, bytearray)) or not isinstance(keys, Sequence):
            raise TypeError("keys must be a list of keys (newest first), not a single key")
        if not keys:
            raise ConfigurationError("EncryptedStorage needs at least one encryption key")
        derived = [_Key(_key_bytes(key, i)) for i, key in enumerate(keys)]
        by_id: dict[bytes, _Key] = {}
        for i, key in enumerate(derived):
            if key.key_id in by_id:
                raise ConfigurationError(f"encryption key #{i + 1} repeats an earlier key")
            by_id[key.key_id] = key
        super().__init__(inner)
        self._keys = derived
        self._by_id = by_id
        self._lookup_keys = derived if len(derived) == 1 else [*derived, derived[0]]

    def __repr__(self) -> str:
        return f"EncryptedStorage({self._inner!r}, keys=<{len(self._keys)}>)"

    @property
    def inner(self) -> AuthStorage:
        """The wrapped storage (it holds only ciphertext and blind indexes)."""
        return self._inner

    # -- the envelope -----------------------------------------------------

    def _seal(self, plaintext: bytes, identity: bytes) -> bytes:
        key = self._keys[0]
        header = bytes([_VERSION]) + key.key_id
        nonce = os.urandom(_NONCE_SIZE)
        return header + nonce + key.aead.encrypt(nonce, plaintext, header + identity)

    def _open(self, envelope: bytes, identity: bytes, what: str) -> tuple[bytes, bytes]:
        """The plaintext and the id of the key that decrypted it."""
        if len(envelope) < _MIN_ENVELOPE:
            raise EncryptionError(f"a stored {what} is not an authkit ciphertext (too short)")
        if envelope[0] != _VERSION:
            raise EncryptionError(f"a stored {what} has an unknown ciphertext version {envelope[0]}")
        key_id = envelope[1:_HEADER_SIZE]
        key = self._by_id.get(key_id)
        if key is None:
            raise EncryptionError(
                f"a stored {what} was encrypted with a key that is not configured (key id {key_id.hex()})"
            )
        nonce, body = envelope[_HEADER_SIZE:_HEADER_SIZE + _NONCE_SIZE], envelope[_HEADER_SIZE + _NONCE_SIZE:]
        try:
            plaintext = key.aead.decrypt(nonce, body, envelope[:_HEADER_SIZE] + identity)
        except InvalidTag:
            raise EncryptionError(
                f"cannot decrypt a stored {what}: it was tampered with, moved from another record, "
                "or encrypted with a different key that has the same id"
            ) from None
        return plaintext, key_id

    def _open_field(
        self, holder: dict[str, Any], identity: bytes, what: str
    ) -> tuple[str | None, str | None, dict[str, Any], bytes]:
        """Decrypt what :meth:`_seal_field` put in ``holder[ENVELOPE_FIELD]``, and the key id."""
        text = holder.get(ENVELOPE_FIELD)
        if not isinstance(text, str) or len(holder) != 1:
            raise EncryptionError(f"a stored {what} is not encrypted (was it stored without EncryptedStorage?)")
        try:
            envelope = binascii.a2b_base64(text)
        except (binascii.Error, ValueError):
            raise EncryptionError(f"a stored {what} has a malformed ciphertext") from None
        plaintext, key_id = self._open(envelope, identity, what)
        try:
            first, second, obj = _unpack(plaintext)
        except (ValueError, struct.error):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise EncryptionError(f"a stored {what} decrypted to malformed data") from None
        if not isinstance(obj, dict):
            raise EncryptionError(f"a stored {what} decrypted to malformed data")
        return first, second, obj, key_id

    def _seal_field(
        self, first: str | None, second: str | None, obj: dict[str, Any], identity: bytes
    ) -> dict[str, Any]:
        """Two optional strings and a JSON object, encrypted into a one-key dict for the inner store."""
        envelope = self._seal(_pack(first, second, obj), identity)
        return {ENVELOPE_FIELD: binascii.b2a_base64(envelope, newline=False).decode("ascii")}

    # -- tokens -----------------------------------------------------------

    def _seal_token(self, token: AuthToken) -> AuthToken:
        # A new object whose containers are new too: a hook must not change the
        # records it is given (a wrapper above may still hold them).  Built
        # without __init__, whose datetime checks were done already.
        sealed = object.__new__(AuthToken)
        sealed.__dict__.update(token.__dict__)
        sealed.access_token = self._keys[0].index(token.access_token)
        sealed.refresh_token = None
        sealed.scopes = list(token.scopes)
        sealed.metadata = self._seal_field(
            token.access_token, token.refresh_token, token.metadata, _identity("token", token.token_id, token.user_id)
        )
        return sealed

    def _open_token_with_key(self, sealed: AuthToken) -> tuple[AuthToken, bytes]:
        access, refresh, metadata, key_id = self._open_field(
            sealed.metadata, _identity("token", sealed.token_id, sealed.user_id), "token"
        )
        if access is None:
            raise EncryptionError("a stored token decrypted to malformed data")
        sealed.access_token = access
        sealed.refresh_token = refresh
        sealed.metadata = metadata
        return sealed, key_id

    def _open_token(self, sealed: AuthToken) -> AuthToken:
        return self._open_token_with_key(sealed)[0]

    def _store_tokens(self, tokens: list[AuthToken]) -> None:
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
            sealed = self._inner._get_token_by_access_token(key.index(access_token), now)
            if sealed is None:
                continue
            token = self._open_token(sealed)
            # (A plain comparison: the HMAC index already matched, this only catches a moved index.)
            if token.access_token != access_token:
                # The index was copied from another record: the ciphertext holds a different token.
                raise EncryptionError("a stored token's access-token index does not match its ciphertext")
            return token
        return None

    def _update_token(self, token: AuthToken) -> None:
        self._inner._update_token(self._seal_token(token))

    def _list_user_tokens(self, user_id: str) -> list[AuthToken]:
        return [self._open_token(t) for t in self._inner._list_user_tokens(user_id)]

    # -- sessions ---------------------------------------------------------

    def _seal_session(self, session: SessionData) -> SessionData:
        sealed = object.__new__(SessionData)
        sealed.__dict__.update(session.__dict__)
        sealed.ip_address = None
        sealed.user_agent = None
        sealed.data = self._seal_field(
            session.ip_address, session.user_agent, session.data,
            _identity("session", session.session_id, session.user_id),
        )
        return sealed

    def _open_session_with_key(self, sealed: SessionData) -> tuple[SessionData, bytes]:
        ip, agent, data, key_id = self._open_field(
            sealed.data, _identity("session", sealed.session_id, sealed.user_id), "session"
        )
        sealed.data = data
        sealed.ip_address = ip
        sealed.user_agent = agent
        return sealed, key_id

    def _open_session(self, sealed: SessionData) -> SessionData:
        return self._open_session_with_key(sealed)[0]

    def _store_sessions(self, sessions: list[SessionData]) -> None:
        self._inner._store_sessions([self._seal_session(s) for s in sessions])

    def _get_session(self, session_id: str, now: datetime) -> SessionData | None:
        sealed = self._inner._get_session(session_id, now)
        return None if sealed is None else self._open_session(sealed)

    def _list_user_sessions(self, user_id: str, now: datetime) -> list[SessionData]:
        return [self._open_session(s) for s in self._inner._list_user_sessions(user_id, now)]

    # -- key-value --------------------------------------------------------

    def _seal_kv(self, key: str, value: bytes, expires_at: datetime | None) -> bytes:
        # The expiry travels inside the ciphertext so reencrypt() can keep it: the
        # contract has no way to read a kv entry's expiry back from the inner store.
        if expires_at is None:
            header = _KV_NO_EXPIRY
        else:
            header = _KV_EXPIRY + struct.pack(">q", micros(expires_at))
        return self._seal(header + value, _identity("kv", key))

    def _open_kv(self, key: str, envelope: bytes) -> tuple[bytes, datetime | None, bytes]:
        plaintext, key_id = self._open(envelope, _identity("kv", key), "kv value")
        if plaintext[:1] == _KV_NO_EXPIRY:
            return plaintext[1:], None, key_id
        if plaintext[:1] == _KV_EXPIRY and len(plaintext) >= 9:
            (micros_,) = struct.unpack(">q", plaintext[1:9])
            return plaintext[9:], moment(micros_), key_id
        raise EncryptionError("a stored kv value decrypted to malformed data")

    def _store_kv(self, key: str, value: bytes, expires_at: datetime | None) -> None:
        self._inner._store_kv(key, self._seal_kv(key, value, expires_at), expires_at)

    def _get_kv_entry(self, key: str, now: datetime) -> tuple[bytes, datetime | None] | None:
        entry = self._inner._get_kv_entry(key, now)
        if entry is None:
            return None
        if parse_counter(entry[0]) is not None:
            return entry  # an incr_kv counter, kept in clear (see the module doc)
        value, _, _ = self._open_kv(key, entry[0])
        # The inner store's expiry, not the sealed copy: touch_kv moves only the former.
        return value, entry[1]

    # -- atomic primitives --------------------------------------------------

    def _create_session(self, session: SessionData, now: datetime) -> bool:
        return self._inner._create_session(self._seal_session(session), now)

    def _replace_session(self, session: SessionData, now: datetime) -> bool:
        return self._inner._replace_session(self._seal_session(session), now)

    def _add_kv(self, key: str, value: bytes, expires_at: datetime | None, now: datetime) -> bool:
        return self._inner._add_kv(key, self._seal_kv(key, value, expires_at), expires_at, now)

    # _touch_session, _touch_kv, _incr_kv and the per-user deletes go to the
    # inner store unchanged (WrappingStorage): they move no secret.

    # -- maintenance ------------------------------------------------------

    def reencrypt(self, batch_size: int = DEFAULT_BATCH_SIZE, progress: Callable[[int], None] | None = None) -> int:
        """Rewrite every record not yet under the first key; return how many were rewritten.

        Walks tokens (expired ones too: ``get_token`` still returns them),
        live sessions and live kv entries, ``batch_size`` at a time, writing
        tokens and sessions back with one bulk call per batch and kv entries
        with their original expiry.  ``progress(done)`` is called after every
        batch with the number rewritten so far.  Expired sessions and kv
        entries are skipped: nothing can read them, and ``cleanup_expired``
        deletes them without decrypting.  Once it returns, the old keys can be
        removed from the configuration.

        Run it from one process at a time (the ``authkit reencrypt`` command
        holds a lock).  A record the application rewrites between this
        method's read and write of the same batch is written back as it was
        read, so run it when writes are quiet, or with a small ``batch_size``.
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool):
            raise TypeError("batch_size must be an int")
        if batch_size <= 0:
            raise ValueError("batch_size must be > 0")
        current = self._keys[0].key_id
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
                    token, key_id = self._open_token_with_key(sealed)
                    if key_id != current:
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
                    session, key_id = self._open_session_with_key(sealed_session)
                    if key_id != current:
                        sessions.append(session)
            if sessions:
                self._store_sessions(sessions)
            report(len(sessions))

        for keys in _batches(self._inner.list_kv_keys(), batch_size):
            now = self.now()
            rewritten = 0
            for key in keys:
                entry = self._inner._get_kv_entry(key, now)
                if entry is None or parse_counter(entry[0]) is not None:
                    continue  # gone, or a counter (kept in clear)
                value, _, key_id = self._open_kv(key, entry[0])
                if key_id != current:
                    self._store_kv(key, value, entry[1])
                    rewritten += 1
            report(rewritten)
        return done


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


_U32 = struct.Struct(">I")
_ABSENT = 0xFFFFFFFF  # the length that stands for None


def _pack(first: str | None, second: str | None, obj: dict[str, Any]) -> bytes:
    """``len|first len|second json(obj)``: cheaper than one JSON document for the
    two secret strings, and an empty ``obj`` costs nothing."""
    parts = []
    for text in (first, second):
        if text is None:
            parts.append(_U32.pack(_ABSENT))
        else:
            raw = text.encode("utf-8")
            parts += [_U32.pack(len(raw)), raw]
    if obj:
        parts.append(dumps(obj).encode("utf-8"))
    return b"".join(parts)


def _unpack(plaintext: bytes) -> tuple[str | None, str | None, Any]:
    """The inverse of :func:`_pack`; ``ValueError``/``struct.error`` when malformed."""
    texts: list[str | None] = []
    pos = 0
    for _ in range(2):
        (size,) = _U32.unpack_from(plaintext, pos)
        pos += 4
        if size == _ABSENT:
            texts.append(None)
            continue
        if pos + size > len(plaintext):
            raise ValueError("truncated")
        texts.append(plaintext[pos:pos + size].decode("utf-8"))
        pos += size
    obj = loads(plaintext[pos:].decode("utf-8")) if pos < len(plaintext) else {}
    return texts[0], texts[1], obj
