"""The sealed record format of :class:`~authkit.storage.encrypted.EncryptedStorage`: keys, envelopes, bindings.

Nothing here touches a storage: it turns keys into a :class:`Keyring` that
seals and opens bytes, and says what each record binds.

Envelope (every ciphertext)::

    version (1 byte, 3) | key id (4) | nonce (12) | AES-256-GCM ciphertext + tag (16)

The header (version + key id) is authenticated along with the record's
*associated data* (:func:`token_ad`, :func:`session_ad`, :func:`kv_ad`): the
record's identity and the fields that grant access, so a ciphertext moved to
another record, or a bound field changed in the database, fails to open.

A session's expiry is bound separately, by an *expiry tag* (:meth:`Keyring.expiry_tag`,
a keyed BLAKE2b of the session id and its expiry) kept in the inner record's
``ip_address`` field: ``touch_session`` can then move the expiry and its tag
in one step on the server, without reading and resealing the session.

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

# 3: a session's expiry is bound by the expiry tag, not in the envelope (so a touch
# is one step); 2 bound it in the envelope.  Neither 1 nor 2 was released: no reader.
VERSION = 3
_KEY_ID_SIZE = 4
_NONCE_SIZE = 12
HEADER_SIZE = 1 + _KEY_ID_SIZE
_MIN_ENVELOPE = HEADER_SIZE + _NONCE_SIZE + 16  # + the GCM tag
_TAG_PREFIX = 2 * _KEY_ID_SIZE  # an expiry tag: the key id, then BLAKE2b-128 of id and expiry, in hex
_PREFIX_LEN = len(ENVELOPE_PREFIX)
_NONCE_END = HEADER_SIZE + _NONCE_SIZE
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _moment(moment: datetime) -> str:
    """An exact, injective text form of an aware datetime, for associated data.

    The normalised (days, seconds, microseconds) since 1970: about a third of
    the cost of integer microseconds (``timedelta // timedelta`` and a big
    integer's formatting were most of a token's associated data).
    """
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


class Key:
    """One key's derived material: its id, the AEAD, and the keys of the blind index, expiry tag and marker."""

    __slots__ = ("_index", "_tag", "aead", "header", "key_id", "marker_key", "tag_prefix")

    def __init__(self, material: bytes) -> None:
        self.key_id = _hkdf(material, b"authkit key id v1")[:_KEY_ID_SIZE]
        self.header = bytes([VERSION]) + self.key_id
        # One AESGCM object per key for the storage's life: building one per call
        # (its key schedule) was a measurable share of a write.
        self.aead = AESGCM(_hkdf(material, b"authkit aes-256-gcm v1"))
        # Keyed BLAKE2b is a MAC in one C call: about half the time of HMAC-SHA256.
        # Keyed once here and copied per use: a copy is cheaper than keying again.
        self._index = hashlib.blake2b(key=_hkdf(material, b"authkit blind index v2"), digest_size=32)
        self._tag = hashlib.blake2b(key=_hkdf(material, b"authkit session expiry tag v1"), digest_size=16)
        self.tag_prefix = self.key_id.hex()
        self.marker_key = _hkdf(material, b"authkit store marker v1")

    def __repr__(self) -> str:
        return f"<key id {self.key_id.hex()}>"

    def index(self, access_token: str) -> str:
        """The blind index: keyed BLAKE2b-256 of the access token under this key's index key, in hex."""
        mac = self._index.copy()
        mac.update(access_token.encode("utf-8"))
        return mac.hexdigest()

    def expiry_mac(self, session_id: str, expires_at: datetime | None) -> str:
        expires = "-" if expires_at is None else _moment(expires_at)
        mac = self._tag.copy()
        mac.update(f"authkit\x00session-expiry\x00{session_id}\x00{expires}".encode())
        return mac.hexdigest()

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
        self._by_tag_prefix = {key.tag_prefix: key for key in keys}
        self.current = keys[0]
        # Newest first: every write uses it, so live tokens are found in one lookup.
        # With several keys the newest is tried again last: reencrypt() may have
        # moved the record from an old key to it between the first and later lookups.
        self.lookup_order = keys if len(keys) == 1 else [*keys, keys[0]]

    def __len__(self) -> int:
        return len(self.keys)

    def seal(self, plaintext: bytes, ad: bytes) -> bytes:
        key = self.current
        header = key.header
        nonce = os.urandom(_NONCE_SIZE)
        return header + nonce + key.aead.encrypt(nonce, plaintext, header + ad)

    def open(self, envelope: bytes, ad: bytes, what: str) -> tuple[bytes, bytes]:
        """The plaintext and the header (version + key id) it was sealed under."""
        key = self.by_id.get(envelope[1:HEADER_SIZE])
        if key is None or envelope[0] != VERSION or len(envelope) < _MIN_ENVELOPE:
            raise self._unreadable(envelope, what)
        header = envelope[:HEADER_SIZE]
        try:
            plaintext = key.aead.decrypt(envelope[HEADER_SIZE:_NONCE_END], envelope[_NONCE_END:], header + ad)
        except InvalidTag:
            raise EncryptionError(
                f"cannot decrypt a stored {what}: it was tampered with (a bound field changed), moved from "
                "another record, or encrypted with a different key that has the same id"
            ) from None
        return plaintext, header

    @staticmethod
    def _unreadable(envelope: bytes, what: str) -> EncryptionError:
        if len(envelope) < _MIN_ENVELOPE:
            return EncryptionError(f"a stored {what} is not an authkit ciphertext (too short)")
        if envelope[0] != VERSION:
            return EncryptionError(f"a stored {what} has an unknown ciphertext version {envelope[0]}")
        return EncryptionError(
            f"a stored {what} was encrypted with a key that is not configured (key id {envelope[1:HEADER_SIZE].hex()})"
        )

    def seal_text(self, first: str | None, second: str | None, obj: dict[str, Any], ad: bytes) -> str:
        """Two optional strings and a JSON object, encrypted into one text field for the inner store."""
        envelope = self.seal(_pack(first, second, obj), ad)
        return ENVELOPE_PREFIX + binascii.b2a_base64(envelope, newline=False).decode("ascii")

    def open_text(self, text: str, ad: bytes, what: str) -> tuple[str | None, str | None, dict[str, Any], bytes]:
        """Decrypt what :meth:`seal_text` made, and the header it was sealed under."""
        try:
            envelope = binascii.a2b_base64(text[_PREFIX_LEN:])
        except (binascii.Error, ValueError):
            raise EncryptionError(f"a stored {what} has a malformed ciphertext") from None
        plaintext, header = self.open(envelope, ad, what)
        try:
            first, second, obj = _unpack(plaintext)
        except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors too
            raise EncryptionError(f"a stored {what} decrypted to malformed data") from None
        if not isinstance(obj, dict):
            raise EncryptionError(f"a stored {what} decrypted to malformed data")
        return first, second, obj, header

    def expiry_tag(self, session_id: str, expires_at: datetime | None) -> str:
        """The current key's id and its MAC of the session's id and expiry, as hex text."""
        key = self.current
        return key.tag_prefix + key.expiry_mac(session_id, expires_at)

    def check_expiry_tag(self, tag: str | None, session_id: str, expires_at: datetime | None) -> bytes:
        """The key id the tag was made with; ``EncryptionError`` unless it matches the id and expiry."""
        key = None if tag is None else self._by_tag_prefix.get(tag[:_TAG_PREFIX])
        # (compare_digest takes ASCII text only: anything else is no tag of ours.)
        if key is None or tag is None or not tag.isascii() or not hmac.compare_digest(
            key.tag_prefix + key.expiry_mac(session_id, expires_at), tag
        ):
            raise EncryptionError(
                "cannot verify a stored session's expiry: it was tampered with (changed in the database), "
                "or tagged with a key that is not configured"
            )
        return key.key_id

    def looks_sealed_kv(self, value: bytes) -> bool:
        """A kv value that starts with our version byte and one of our key ids (a plaintext
        value does so by chance with probability 2**-40)."""
        return value[:1] == _VERSION_BYTE and value[1:HEADER_SIZE] in self.by_id


_VERSION_BYTE = bytes([VERSION])


# -- what each record binds ------------------------------------------------------------


def token_ad(token: AuthToken) -> bytes:
    """Associated data of a token: its identity and every field that grants access.

    ``repr()`` of the free-text fields quotes and escapes them, so no two
    different field sets encode alike (a NUL in a scope cannot shift a field).
    Datetimes as :func:`_moment` (several times cheaper than ``isoformat()``).
    """
    expires = token.expires_at
    return (
        f"authkit\x00token\x00{token.token_id}\x00{token.user_id}\x00"
        f"{token.client_id!r}\x00{token.token_type!r}\x00{token.scopes!r}\x00"
        f"{_moment(token.issued_at)}\x00{'-' if expires is None else _moment(expires)}"
    ).encode()


def session_ad(session: SessionData) -> bytes:
    """Associated data of a session: identity, owner and creation (its expiry has the expiry tag)."""
    return (
        f"authkit\x00session\x00{session.session_id}\x00{session.user_id}\x00{_moment(session.created_at)}"
    ).encode()


def kv_ad(key: str) -> bytes:
    return f"authkit\x00kv\x00{key}\x00".encode()


def is_sealed(text: str | None, holder: dict[str, Any]) -> bool:
    """Whether an inner record holds a ciphertext (``text`` its carrier field, ``holder`` its JSON)."""
    return text is not None and text.startswith(ENVELOPE_PREFIX) and not holder


# -- the sealed plaintext ------------------------------------------------------------------

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
