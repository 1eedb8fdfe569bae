"""The sealed record format of :class:`~authkit.storage.encrypted.EncryptedStorage`: keys, envelopes, bindings.

Nothing here touches a storage: it turns keys into a :class:`Keyring` that
seals and opens records, and says what each record binds.

Envelope (every ciphertext)::

    version (1 byte, 4) | key id (4) | nonce (12) | AES-256-GCM ciphertext + tag (16)

A token or session is one envelope, carried in one text field of the inner
record as :data:`ENVELOPE_PREFIX` + hex (base64 past :data:`_HEX_LIMIT`
bytes); a kv value is the raw envelope.  The header (version + key id) is
authenticated along with the record's *associated data*
(:func:`token_ad`, :func:`session_ad`, :func:`kv_ad`): the record's kind,
identity, owner and times.  A token's other bound fields (``client_id``,
``token_type``, ``scopes``) are sealed as copies in its plaintext and compared
with the visible ones on open.  Either way a ciphertext moved to another
record, or a bound field changed in the database, fails to open.

A session's expiry is bound separately, by an *expiry tag* (:meth:`Keyring.expiry_tag`,
a keyed BLAKE2b of the session id and its expiry) kept in the inner record's
``ip_address`` field: ``touch_session`` can then move the expiry and its tag
in one step on the server, without reading and resealing the session.

Version 3 (the previous release) is still read: base64 text, associated data
with every bound field as text, an expiry tag over a text form of the expiry.
Version 4 exists for speed (see docs/encryption.md, "Cost"): hex text decodes
about twice as fast as base64, a datetime's 10-byte canonical form costs a
fraction of formatting its numbers, and comparing three sealed copies costs a
fraction of quoting them into associated data.  Every write is version 4;
``reencrypt`` moves version 3 records to it.

Every key is expanded with HKDF into separate keys for each use (AEAD, blind
index, expiry tag, marker MAC), so the raw key never serves two purposes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import json.scanner
import os
from binascii import a2b_base64, a2b_hex
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from authkit.errors import ConfigurationError, EncryptionError
from authkit.models import AuthToken, SessionData
from authkit.storage._codec import dumps

__all__ = ["ENVELOPE_PREFIX", "Keyring", "generate_key", "is_sealed", "kv_ad", "session_ad", "token_ad"]

ENVELOPE_PREFIX = "authkit:enc:"
"""Starts the inner field (a token's ``refresh_token``, a session's ``user_agent``) that holds a ciphertext."""

# 4: hex text, times in their canonical bytes, a token's free-text bound fields as sealed copies.
# 3: the previous release (read, never written).  Neither 1 nor 2 was released: no reader.
VERSION = 4
_V3 = 3
_KEY_ID_SIZE = 4
_NONCE_SIZE = 12
HEADER_SIZE = 1 + _KEY_ID_SIZE
_MIN_ENVELOPE = HEADER_SIZE + _NONCE_SIZE + 16  # + the GCM tag
_TAG_PREFIX = 2 * _KEY_ID_SIZE  # an expiry tag: the key id, then BLAKE2b-128 of id and expiry, in hex
_PREFIX_LEN = len(ENVELOPE_PREFIX)
_NONCE_END = HEADER_SIZE + _NONCE_SIZE
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_UTC = timezone.utc
# Past this many bytes an envelope is carried as base64, not hex: a third smaller, so an
# 8 MiB session still fits MySQL's default 16 MiB packet.  Below it, hex: half the decoding.
_HEX_LIMIT = 1 << 16
# Hex text starts with the version's first digit, "0"; base64 of version 3 or 4 starts
# with "A" or "B".  So the first character says how to decode, before the version is known.
_HEX_START = "0"
_NO_TIME = b"\xff" * 10  # an absent expiry: no datetime's bytes start with 0xff (the year's high byte is < 40)
# The constant starts of each kind's associated data (after the envelope's header).
_TOKEN_AD = b"authkit\x00token\x00"
_SESSION_AD = b"authkit\x00session\x00"
_KV_AD = b"authkit\x00kv\x00"
# datetime's own method, not the instance's: a subclass may pickle itself differently (see _instant).
_STATE: Callable[[datetime], tuple[Any, tuple[bytes, Any]]] = datetime.__reduce__  # type: ignore[assignment]


def _instant(moment: datetime) -> bytes:
    """The 10 bytes that identify an aware datetime to the microsecond: year, month, day, hour,
    minute, second and microsecond of it in UTC.

    It is the state a datetime is pickled with (nothing is pickled or unpickled
    here: the bytes are only hashed into associated data), so its layout is fixed
    across Python versions and implementations.  One C call: a fraction of the
    cost of formatting the numbers.  The inner stores hand out UTC datetimes;
    any other zone is converted first, so equal instants give equal bytes.
    """
    if moment.tzinfo is not _UTC:
        moment = moment.astimezone(_UTC)
    return _STATE(moment)[1][0]


def _moment(moment: datetime) -> str:
    """Version 3's text form of an aware datetime: the normalised (days, seconds, microseconds) since 1970."""
    delta = moment - _EPOCH
    return f"{delta.days}.{delta.seconds}.{delta.microseconds}"


def generate_key() -> str:
    """A new random 256-bit key as urlsafe base64 text (44 characters).

    >>> key = generate_key()
    >>> len(key)
    44
    """
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


def _hkdf(material: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)


def key_bytes(key: object, position: int) -> bytes:
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


# Version 3's tag message starts "authkit\0session-expiry\0": the two never coincide.
_EXPIRY_DOMAIN = b"authkit\x00session-expiry-v4\x00"


class Key:
    """One key's derived material: its id, the AEAD, and the keys of the blind index, expiry tag and marker."""

    __slots__ = ("_tag", "_tag4", "aead", "header", "index_mac", "key_id", "kv_head", "marker_key", "session_head",
                 "tag_prefix", "token_head")

    def __init__(self, material: bytes) -> None:
        self.key_id = _hkdf(material, b"authkit key id v1")[:_KEY_ID_SIZE]
        self.header = bytes([VERSION]) + self.key_id
        # What a version 4 envelope's authenticated data starts with under this key: its header,
        # then the kind's constant start (see token_ad, session_ad, kv_ad).  Built once here, so
        # a read appends the record's own parts to one prefix instead of joining five.
        self.token_head = self.header + _TOKEN_AD
        self.session_head = self.header + _SESSION_AD
        self.kv_head = self.header + _KV_AD
        # One AESGCM object per key for the storage's life: building one per call
        # (its key schedule) was a measurable share of a write.
        self.aead = AESGCM(_hkdf(material, b"authkit aes-256-gcm v1"))
        # Keyed BLAKE2b is a MAC in one C call: about half the time of HMAC-SHA256.
        # Keyed once here and copied per use: a copy is cheaper than keying again.
        self.index_mac = hashlib.blake2b(key=_hkdf(material, b"authkit blind index v2"), digest_size=32)
        self._tag = hashlib.blake2b(key=_hkdf(material, b"authkit session expiry tag v1"), digest_size=16)
        # The same MAC with version 4's domain already taken in: a tag is the copy, updated once.
        self._tag4 = self._tag.copy()
        self._tag4.update(_EXPIRY_DOMAIN)
        self.tag_prefix = self.key_id.hex()
        self.marker_key = _hkdf(material, b"authkit store marker v1")

    def __repr__(self) -> str:
        return f"<key id {self.key_id.hex()}>"

    def index(self, access_token: str) -> str:
        """The blind index: keyed BLAKE2b-256 of the access token under this key's index key, in hex."""
        mac = self.index_mac.copy()
        mac.update(access_token.encode())
        return mac.hexdigest()

    def expiry_tag(self, session_id: str, expires_at: datetime | None) -> str:
        """This key's id and its MAC of the session's id and expiry, as hex text (40 characters)."""
        if expires_at is None:
            moment = _NO_TIME
        else:  # _instant(), inlined: every session read computes a tag
            if expires_at.tzinfo is not _UTC:
                expires_at = expires_at.astimezone(_UTC)
            moment = _STATE(expires_at)[1][0]
        mac = self._tag4.copy()
        mac.update(moment + session_id.encode())
        return self.tag_prefix + mac.hexdigest()

    def expiry_tag_v3(self, session_id: str, expires_at: datetime | None) -> str:
        """The tag version 3 wrote (over a text form of the expiry), still accepted on read."""
        expires = "-" if expires_at is None else _moment(expires_at)
        mac = self._tag.copy()
        mac.update(f"authkit\x00session-expiry\x00{session_id}\x00{expires}".encode())
        return self.tag_prefix + mac.hexdigest()

    def sign_marker(self, body: bytes) -> str:
        return hmac.new(self.marker_key, body, hashlib.sha256).hexdigest()


class Keyring:
    """The configured keys, newest first: the first seals, every one opens.

    >>> ring = Keyring([bytes(32)])
    >>> envelope = ring.seal(b"secret", b"ad")
    >>> ring.open(envelope, b"ad", "value")[0]
    b'secret'
    """

    def __init__(self, materials: Sequence[object]) -> None:
        keys = [Key(key_bytes(key, i)) for i, key in enumerate(materials)]
        by_id: dict[bytes, Key] = {}
        for i, key in enumerate(keys):
            if key.key_id in by_id:
                raise ConfigurationError(f"encryption key #{i + 1} repeats an earlier key")
            by_id[key.key_id] = key
        self.keys = keys
        self.by_id = by_id
        # The current version's envelopes, by their header: one slice and one lookup find the key
        # and check the version (anything else, version 3 included, goes the longer way).
        self._by_header = {key.header: key for key in keys}
        self._by_tag_prefix = {key.tag_prefix: key for key in keys}
        self.current = keys[0]
        # Newest first: every write uses it, so live tokens are found in one lookup.
        # With several keys the newest is tried again last: reencrypt() may have
        # moved the record from an old key to it between the first and later lookups.
        self.lookup_order = keys if len(keys) == 1 else [*keys, keys[0]]

    def __len__(self) -> int:
        return len(self.keys)

    # -- envelopes ----------------------------------------------------------------

    def seal(self, plaintext: bytes, ad: bytes) -> bytes:
        key = self.current
        header = key.header
        nonce = os.urandom(_NONCE_SIZE)
        return header + nonce + key.aead.encrypt(nonce, plaintext, header + ad)

    def open(self, envelope: bytes, ad: bytes, what: str) -> tuple[bytes, bytes]:
        """The plaintext and the header (version + key id) it was sealed under (version 3 or 4:
        a kv value's associated data is the same in both)."""
        key = self.by_id.get(envelope[1:HEADER_SIZE])
        if key is None or envelope[0] not in _READABLE or len(envelope) < _MIN_ENVELOPE:
            raise self._unreadable(envelope, what)
        header = envelope[:HEADER_SIZE]
        return self._decrypt(key, envelope, header + ad, what), header

    @staticmethod
    def _decrypt(key: Key, envelope: bytes, ad: bytes, what: str) -> bytes:
        try:
            return key.aead.decrypt(envelope[HEADER_SIZE:_NONCE_END], envelope[_NONCE_END:], ad)
        except InvalidTag:
            raise _tampered(what) from None

    @staticmethod
    def _unreadable(envelope: bytes, what: str) -> EncryptionError:
        if len(envelope) < _MIN_ENVELOPE:
            return EncryptionError(f"a stored {what} is not an authkit ciphertext (too short)")
        if envelope[0] not in _READABLE:
            return EncryptionError(f"a stored {what} has an unknown ciphertext version {envelope[0]}")
        return EncryptionError(
            f"a stored {what} was encrypted with a key that is not configured (key id {envelope[1:HEADER_SIZE].hex()})"
        )

    def open_kv(self, name: str, stored: bytes) -> bytes:
        """The value sealed in a kv entry's ``stored`` bytes (any version; :meth:`open` written out
        for version 4, whose associated data is the key's ``kv_head`` and :func:`kv_ad`'s rest)."""
        key = self._by_header.get(stored[:HEADER_SIZE])
        if key is None or len(stored) < _MIN_ENVELOPE:
            return self.open(stored, kv_ad(name), "kv value")[0]
        try:
            return key.aead.decrypt(stored[HEADER_SIZE:_NONCE_END], stored[_NONCE_END:],
                                    key.kv_head + name.encode() + b"\x00")
        except InvalidTag:
            raise _tampered("kv value") from None

    def looks_sealed_kv(self, value: bytes) -> bool:
        """A kv value that starts with a version byte we read and one of our key ids (a
        plaintext value does so by chance with probability about 2**-39)."""
        return value[:1] in _VERSION_BYTES and value[1:HEADER_SIZE] in self.by_id

    # -- tokens and sessions: one envelope in one text field ------------------------

    def seal_token(self, token: AuthToken) -> str:
        """A token's sealed fields (and copies of its free-text bound fields) as carrier text."""
        plaintext = dumps([token.access_token, token.refresh_token, token.metadata,
                           token.client_id, token.token_type, token.scopes])
        return _carrier(self.seal(plaintext.encode("utf-8"), token_ad(token)))

    def open_token(self, sealed: AuthToken, text: str) -> bytes:
        """Put the secrets sealed in ``text`` (its carrier field) back into ``sealed``; return the header.

        Every read of a token comes here, so its steps are written out in one
        frame, not called (each Python call costs several hundred instructions,
        see docs/encryption.md, "Cost"), but for the carrier's decoding
        (:func:`_envelope`, shared with :meth:`open_session`): the associated data
        (:func:`token_ad`, after the key's ``token_head``), the decryption and the
        plaintext's six fields (see :func:`_record`).  The tests read records of each stored version.
        """
        envelope = _envelope(text, "token")
        key = self._by_header.get(envelope[:HEADER_SIZE])
        if key is None or len(envelope) < _MIN_ENVELOPE:
            return self._open_token_v3(sealed, envelope, self.by_id.get(envelope[1:HEADER_SIZE]))
        issued, expires = sealed.issued_at, sealed.expires_at
        if issued.tzinfo is not _UTC:
            issued = issued.astimezone(_UTC)
        if expires is None:
            until = _NO_TIME
        else:
            if expires.tzinfo is not _UTC:
                expires = expires.astimezone(_UTC)
            until = _STATE(expires)[1][0]
        ad = key.token_head + _STATE(issued)[1][0] + until + f"{sealed.token_id}\x00{sealed.user_id}".encode()
        try:
            plaintext = key.aead.decrypt(envelope[HEADER_SIZE:_NONCE_END], envelope[_NONCE_END:], ad)
        except InvalidTag:
            raise _tampered("token") from None
        # The plaintext is authentic: only a holder of the key made it, and our writer
        # (seal_token) makes one JSON array of six values of the right types.  So the fields
        # are unpacked, not type-checked again: a check could only catch a key holder's own
        # odd plaintext, who could as well write any valid record (see _record, which
        # version 3 keeps).  Whatever is not six JSON values is still an EncryptionError.
        try:
            access, refresh, metadata, client_id, token_type, scopes = _SCAN(plaintext.decode(), 0)[0]
        except (ValueError, TypeError, StopIteration):  # not UTF-8, not JSON, not six values
            raise _malformed("token") from None
        if client_id != sealed.client_id or token_type != sealed.token_type or scopes != sealed.scopes:
            raise EncryptionError(
                "cannot verify a stored token: it was tampered with "
                "(a bound field changed: its client id, token type or scopes)"
            )
        sealed.access_token, sealed.refresh_token, sealed.metadata = access, refresh, metadata
        return key.header

    def seal_session(self, session: SessionData) -> str:
        """A session's sealed fields as carrier text."""
        plaintext = dumps([session.ip_address, session.user_agent, session.data])
        return _carrier(self.seal(plaintext.encode("utf-8"), session_ad(session)))

    def open_session(self, sealed: SessionData, text: str) -> bytes:
        """Check ``sealed``'s expiry tag, put the fields sealed in ``text`` (its carrier field) back;
        return the header, or ``b""`` when the tag is not the current format or key's (the record
        is then due for ``reencrypt``).

        Written out in one frame, as :meth:`open_token` is (the associated data is
        :func:`session_ad`'s, after the key's ``session_head``).
        """
        tag, session_id, expires = sealed.ip_address, sealed.session_id, sealed.expires_at
        tag_key = None
        # (compare_digest takes ASCII text only: a tag that is not is no tag of ours.)
        if tag is not None and tag.isascii():
            tag_key = self._by_tag_prefix.get(tag[:_TAG_PREFIX])
            if tag_key is not None:
                # Key.expiry_tag(), written out (its key id is the prefix just matched).
                if expires is None:
                    until = _NO_TIME
                else:
                    if expires.tzinfo is not _UTC:
                        expires = expires.astimezone(_UTC)
                    until = _STATE(expires)[1][0]
                mac = tag_key._tag4.copy()
                mac.update(until + session_id.encode())
                if not hmac.compare_digest(mac.hexdigest(), tag[_TAG_PREFIX:]):
                    tag_key = None
        if tag_key is None:  # a version 3 tag (None), or an EncryptionError
            tag_key = self.check_expiry_tag(tag, session_id, sealed.expires_at)
        envelope = _envelope(text, "session")
        key = self._by_header.get(envelope[:HEADER_SIZE])
        if key is None or len(envelope) < _MIN_ENVELOPE:
            return self._open_session_v3(sealed, envelope, self.by_id.get(envelope[1:HEADER_SIZE]))
        created = sealed.created_at
        if created.tzinfo is not _UTC:
            created = created.astimezone(_UTC)
        ad = key.session_head + _STATE(created)[1][0] + f"{session_id}\x00{sealed.user_id}".encode()
        try:
            plaintext = key.aead.decrypt(envelope[HEADER_SIZE:_NONCE_END], envelope[_NONCE_END:], ad)
        except InvalidTag:
            raise _tampered("session") from None
        try:  # authentic, so unpacked without checking its types again (see open_token)
            ip, agent, data = _SCAN(plaintext.decode(), 0)[0]
        except (ValueError, TypeError, StopIteration):  # not UTF-8, not JSON, not three values
            raise _malformed("session") from None
        sealed.ip_address, sealed.user_agent, sealed.data = ip, agent, data
        return key.header if tag_key is key else b""

    def expiry_tag(self, session_id: str, expires_at: datetime | None) -> str:
        """The current key's expiry tag of a session's id and expiry."""
        return self.current.expiry_tag(session_id, expires_at)

    def check_expiry_tag(self, tag: str | None, session_id: str, expires_at: datetime | None) -> Key | None:
        """The key the tag was made with (``None``: a version 3 tag); ``EncryptionError`` unless
        it matches the session's id and expiry."""
        key = None if tag is None else self._by_tag_prefix.get(tag[:_TAG_PREFIX])
        # (compare_digest takes ASCII text only: anything else is no tag of ours.)
        if key is not None and tag is not None and tag.isascii():
            if hmac.compare_digest(key.expiry_tag(session_id, expires_at), tag):
                return key
            if hmac.compare_digest(key.expiry_tag_v3(session_id, expires_at), tag):
                return None
        raise EncryptionError(
            "cannot verify a stored session's expiry: it was tampered with (changed in the database), "
            "or tagged with a key that is not configured"
        )

    # -- version 3 (read only) ----------------------------------------------------

    def _open_token_v3(self, sealed: AuthToken, envelope: bytes, key: Key | None) -> bytes:
        if key is None or envelope[0] != _V3 or len(envelope) < _MIN_ENVELOPE:
            raise self._unreadable(envelope, "token")
        header = envelope[:HEADER_SIZE]
        access, refresh, metadata = _unpack_v3(self._decrypt(key, envelope, header + _token_ad_v3(sealed), "token"),
                                               "token")
        if access is None:
            raise _malformed("token")
        sealed.access_token, sealed.refresh_token, sealed.metadata = access, refresh, metadata
        return header

    def _open_session_v3(self, sealed: SessionData, envelope: bytes, key: Key | None) -> bytes:
        if key is None or envelope[0] != _V3 or len(envelope) < _MIN_ENVELOPE:
            raise self._unreadable(envelope, "session")
        header = envelope[:HEADER_SIZE]
        ad = header + _session_ad_v3(sealed)
        sealed.ip_address, sealed.user_agent, sealed.data = _unpack_v3(self._decrypt(key, envelope, ad, "session"),
                                                                       "session")
        return header


_READABLE = (_V3, VERSION)
_VERSION_BYTES = (bytes([_V3]), bytes([VERSION]))


def _carrier(envelope: bytes) -> str:
    if len(envelope) <= _HEX_LIMIT:
        return ENVELOPE_PREFIX + envelope.hex()
    return ENVELOPE_PREFIX + binascii.b2a_base64(envelope, newline=False).decode("ascii")


def _envelope(text: str, what: str) -> bytes:
    """The envelope a carrier text holds (hex, or base64: version 3 and large version 4);
    an empty one is left to the caller's version check ("too short")."""
    body = text[_PREFIX_LEN:]
    try:
        return a2b_hex(body) if body[:1] == _HEX_START else a2b_base64(body)
    except (binascii.Error, ValueError):
        raise EncryptionError(f"a stored {what} has a malformed ciphertext") from None


def _tampered(what: str) -> EncryptionError:
    return EncryptionError(
        f"cannot decrypt a stored {what}: it was tampered with (a bound field changed), moved from "
        "another record, or encrypted with a different key that has the same id"
    )


def _malformed(what: str) -> EncryptionError:
    return EncryptionError(f"a stored {what} decrypted to malformed data")


# -- what each record binds ------------------------------------------------------------


def token_ad(token: AuthToken) -> bytes:
    """Associated data of a token: its kind, identity, owner, issue and expiry times.

    The times first (fixed length), then the ids, which cannot hold a NUL: no
    two different field sets encode alike.  ``client_id``, ``token_type`` and
    ``scopes`` are bound as sealed copies (see :meth:`Keyring.open_token`).
    """
    expires = token.expires_at
    return (_TOKEN_AD + _instant(token.issued_at) + (_NO_TIME if expires is None else _instant(expires))
            + f"{token.token_id}\x00{token.user_id}".encode())


def session_ad(session: SessionData) -> bytes:
    """Associated data of a session: kind, creation, identity and owner (its expiry has the expiry tag)."""
    return (_SESSION_AD + _instant(session.created_at)
            + f"{session.session_id}\x00{session.user_id}".encode())


def kv_ad(key: str) -> bytes:
    return _KV_AD + key.encode() + b"\x00"


def _token_ad_v3(token: AuthToken) -> bytes:
    """Version 3's associated data of a token: every bound field, free text quoted by ``repr()``."""
    expires = token.expires_at
    return (
        f"authkit\x00token\x00{token.token_id}\x00{token.user_id}\x00"
        f"{token.client_id!r}\x00{token.token_type!r}\x00{token.scopes!r}\x00"
        f"{_moment(token.issued_at)}\x00{'-' if expires is None else _moment(expires)}"
    ).encode()


def _session_ad_v3(session: SessionData) -> bytes:
    return (
        f"authkit\x00session\x00{session.session_id}\x00{session.user_id}\x00{_moment(session.created_at)}"
    ).encode()


def is_sealed(text: str | None, holder: dict[str, Any]) -> bool:
    """Whether an inner record holds a ciphertext (``text`` its carrier field, ``holder`` its JSON)."""
    return text is not None and text.startswith(ENVELOPE_PREFIX) and not holder


# -- the sealed plaintext ------------------------------------------------------------------

# The C scanner behind json.loads, called directly: it skips loads()' two regular
# expression passes for whitespace, which were most of a small record's decode time.
_SCAN: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def _record(plaintext: bytes, fields: int, what: str) -> list[Any]:
    """The JSON array of ``fields`` values a plaintext holds; ``EncryptionError`` when malformed."""
    try:
        text = plaintext.decode("utf-8")
        value, end = _SCAN(text, 0)
    except (ValueError, StopIteration):  # UnicodeDecodeError and JSONDecodeError are ValueErrors too
        raise _malformed(what) from None
    if end != len(text) or type(value) is not list or len(value) != fields:
        raise _malformed(what)
    return value


def _unpack_v3(plaintext: bytes, what: str) -> tuple[str | None, str | None, dict[str, Any]]:
    """Version 3's ``[first, second, obj]``."""
    first, second, obj = _record(plaintext, 3, what)
    if not (first is None or type(first) is str) or not (second is None or type(second) is str):
        raise _malformed(what)
    if type(obj) is not dict:
        raise _malformed(what)
    return first, second, obj
