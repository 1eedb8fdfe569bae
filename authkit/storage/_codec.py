"""The encoding rules every backend shares, in one place.

What lives here, and why once:

* **Times** are integer microseconds since 1970-01-01 UTC (:func:`micros`,
  :func:`moment`): exact to the microsecond, the whole 1970..9999 range, the
  same number in SQL columns, Redis scores and ciphertext headers.
* **Liveness** (:func:`live`): an entry is live while ``expires_at`` is
  ``None`` or later than the storage clock's *now*; at ``expires_at`` it is
  expired.  Every backend and wrapper decides it with this one function.
* **Ids, keys and stored text** (:func:`check_id`, :func:`check_text`): a
  ``str`` that UTF-8 can encode.  A lone surrogate is a valid ``str`` but no
  database can store it as text, so it is a ``ValueError`` on every backend
  (not a driver's ``UnicodeEncodeError`` on some and a silent success on others).
  JSON values may hold lone surrogates: :func:`dumps` escapes them.
* **JSON** (:func:`check_json` from :mod:`authkit.models`, :func:`dumps`,
  :func:`loads`): compact, UTF-8, no ``NaN``, string keys, bounded depth, no
  cycles — checked before anything is written, so a bad value never leaves
  half a record behind.
* **Durations** (:func:`ttl_seconds`, :func:`expires_after`): a ``ttl`` that
  would reach past year 9999 (``10**30``, ``timedelta.max``) is a
  ``ValueError``, never Python's ``OverflowError``.
* **Counters** (:func:`parse_counter`, :func:`format_counter`): ``incr_kv``
  values are signed 64-bit integers stored as canonical ASCII decimal
  (``b"-12"``; no ``+``, spaces or leading zeros) — the form Redis's own
  ``INCRBY`` accepts, so a value means the same on every backend.
* **Digests** (:func:`digest`): SHA-256 of an access token, the lookup key
  the raw token never replaces.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
import json.scanner
import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from authkit.models import MAX_JSON_DEPTH, check_json

__all__ = [
    "EPOCH",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_BATCH_SIZE",
    "MAX_ID_LENGTH",
    "MAX_JSON_DEPTH",
    "check_batch_size",
    "check_id",
    "check_int64",
    "check_json",
    "check_text",
    "counter_bounds",
    "counter_overflow",
    "digest",
    "dumps",
    "dumps_checked",
    "expires_after",
    "format_counter",
    "live",
    "loads",
    "micros",
    "moment",
    "optional_micros",
    "optional_moment",
    "parse_counter",
    "ttl_seconds",
]

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
MAX_ID_LENGTH = 255
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# Past this a batch is not a batch: drivers overflow on the LIMIT parameter.
MAX_BATCH_SIZE = 1_000_000
_MAX_MOMENT = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)
_COUNTER_RE = re.compile(rb"0|-?[1-9][0-9]{0,18}")


# -- times ----------------------------------------------------------------------


def micros(moment_: datetime) -> int:
    """Microseconds since 1970 (exact: integers, not floats)."""
    return (moment_ - EPOCH) // _MICROSECOND


def optional_micros(moment_: datetime | None) -> int | None:
    return None if moment_ is None else (moment_ - EPOCH) // _MICROSECOND


def moment(value: int) -> datetime:
    return EPOCH + _MICROSECOND * value  # a multiplication: cheaper than timedelta(microseconds=...)


def optional_moment(value: int | None) -> datetime | None:
    return None if value is None else EPOCH + _MICROSECOND * value


def live(expires_at: datetime | None, now: datetime) -> bool:
    """True while the entry has not expired: no expiry, or an expiry after ``now``."""
    return expires_at is None or expires_at > now


# -- ids and text -----------------------------------------------------------------


def check_text(value: str, name: str) -> str:
    """``value`` if UTF-8 can encode it, else ``ValueError`` (a lone surrogate)."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{name} holds a lone surrogate, which cannot be stored as text") from None
    return value


def check_id(value: object, name: str = "id") -> str:
    """Return ``value`` if it is a valid id or key, else raise ``TypeError``/``ValueError``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"{name} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}")
    if "\x00" in value:
        raise ValueError(f"{name} must not contain a NUL character")
    return value if value.isascii() else check_text(value, name)  # ASCII (most ids) encodes


# -- JSON ---------------------------------------------------------------------------

# Built once: json.dumps() with arguments builds a new encoder per call.
_encode_utf8 = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_encode_ascii = json.JSONEncoder(separators=(",", ":")).encode
_decode = json.JSONDecoder().decode
# The C scanner behind JSONDecoder.decode, called directly (see loads).
_SCAN: Any = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
# The C encoder behind JSONEncoder.encode, built once and without a cycle check
# (``markers=None``): JSONEncoder.encode builds a new one, with a new cycle-check
# dict, on every call, which is most of the time a small record's encoding takes.
# Only for values check_json has passed (no cycles, bounded depth): see dumps_checked.
_C_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)
_encode_checked: Any = None if _C_ENCODER is None else _C_ENCODER(
    None, json.JSONEncoder().default, json.encoder.encode_basestring, None, ":", ",", False, False, True
)


def loads(text: str) -> Any:
    """``json.loads(text)``: the C scanner alone for text with no surrounding whitespace
    (what :func:`dumps` writes), which skips ``decode()``'s two regular-expression passes;
    anything else (whitespace, malformed text) goes through ``decode()`` itself, so the
    value and the errors are always the same."""
    try:
        value, end = _SCAN(text, 0)
    except (StopIteration, ValueError):
        return _decode(text)
    if end != len(text):
        return _decode(text)
    return value


def dumps(value: Any) -> str:
    """Compact JSON kept as UTF-8 (8 MiB of text stays 8 MiB, not 6x as ``\\u`` escapes).

    A lone surrogate cannot be encoded as UTF-8, so a value holding one falls
    back to ASCII escapes, which round-trip it.
    """
    text = _encode_utf8(value)
    return text if text.isascii() else _utf8_or_ascii(text, value)


def dumps_checked(value: Any) -> str:
    """:func:`dumps` of a value whose JSON parts :func:`check_json` has passed (or that a
    stored record gave back): no cycle can occur, so the encoder built once serves."""
    if _encode_checked is None:  # no C accelerator: the general path
        return dumps(value)
    text = "".join(_encode_checked(value, 0))
    return text if text.isascii() else _utf8_or_ascii(text, value)


def _utf8_or_ascii(text: str, value: Any) -> str:
    try:
        text.encode()
    except UnicodeEncodeError:
        return _encode_ascii(value)
    return text


# -- durations ------------------------------------------------------------------------


def ttl_seconds(ttl: object) -> float | None:
    """``ttl`` (seconds or a ``timedelta``) as positive finite seconds; ``None`` stays ``None``."""
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
        try:
            seconds = float(ttl)
        except OverflowError:  # an int beyond any float
            raise ValueError("ttl is too large") from None
    else:
        raise TypeError(f"ttl must be seconds (int/float), a timedelta or None, not {type(ttl).__name__}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("ttl must be a positive, finite duration")
    return seconds


def expires_after(now: datetime, ttl: object) -> datetime | None:
    """The expiry ``ttl`` from ``now``; ``None`` for no ``ttl``; ``ValueError`` past year 9999."""
    seconds = ttl_seconds(ttl)
    if seconds is None:
        return None
    try:
        expires_at = now + timedelta(seconds=seconds)
    except OverflowError:
        expires_at = None
    if expires_at is None or expires_at > _MAX_MOMENT:
        raise ValueError("ttl reaches past the year 9999")
    return expires_at


def check_batch_size(batch_size: object) -> int:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool):
        raise TypeError("batch_size must be an int")
    if batch_size <= 0 or batch_size > MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE:,}")
    return batch_size


# -- counters ---------------------------------------------------------------------------


def check_int64(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{name} is outside the signed 64-bit range")
    return value


def parse_counter(value: bytes) -> int | None:
    """The counter ``value`` holds, or ``None`` if it is not canonical signed 64-bit decimal."""
    if not _COUNTER_RE.fullmatch(value):
        return None
    number = int(value)
    return number if INT64_MIN <= number <= INT64_MAX else None


def format_counter(number: int) -> bytes:
    return str(number).encode("ascii")


def counter_bounds(amount: int) -> tuple[int, int]:
    """The range a counter must be in for ``+ amount`` to stay signed 64-bit.

    Computed here so a SQL statement compares with two parameters instead of
    doing arithmetic that could itself overflow.
    """
    if amount >= 0:
        return INT64_MIN, INT64_MAX - amount
    return INT64_MIN - amount, INT64_MAX


def counter_overflow(key: str, amount: int) -> ValueError:
    return ValueError(
        f"kv entry {key!r} does not hold an integer counter, or adding {amount} would leave the signed 64-bit range"
    )


# -- digests ----------------------------------------------------------------------------


def digest(access_token: str) -> bytes:
    """SHA-256 of the access token (raw 32 bytes)."""
    return hashlib.sha256(access_token.encode("utf-8")).digest()
