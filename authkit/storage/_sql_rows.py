"""Rows in, objects out: how ``SqlStorage`` turns models into statement parameters and back.

The encoding rules are the codec's (``_codec``: microsecond integers for
times, compact JSON, SHA-256 digests); this module only maps them to the
columns of ``_sql_schema``::

    cursor.execute(statements.upsert_session, session_params(session))
    session = session_from_row(cursor.fetchone())
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from authkit.models import AuthToken, SessionData
from authkit.storage._codec import digest, dumps, loads, micros, moment, optional_micros, optional_moment

__all__ = ["sealed_holder", "session_from_row", "session_params", "text", "token_from_row", "token_rows"]


def text(value: str | bytes) -> str:
    # MySQL returns VARBINARY ids as bytes; the others return str.
    return value.decode() if isinstance(value, bytes) else value


def _token_params(token: AuthToken, access_digest: bytes | None) -> dict[str, Any]:
    return {
        "token_id": token.token_id,
        "user_id": token.user_id,
        "access_token": token.access_token,
        "refresh_token": token.refresh_token,
        "token_type": token.token_type,
        "scopes": dumps(token.scopes),
        "issued_at": micros(token.issued_at),
        "expires_at": optional_micros(token.expires_at),
        "client_id": token.client_id,
        "metadata": dumps(token.metadata),
        "access_digest": access_digest,
    }


def token_rows(tokens: list[AuthToken]) -> list[dict[str, Any]]:
    """The parameters of each token's row, with the digest of its access token.

    Two tokens of one batch with the same access token: the later one owns it
    (as if stored one after the other), the earlier keeps its row, unfindable.
    """
    if len(tokens) == 1:  # the common case, without the bookkeeping
        return [_token_params(tokens[0], digest(tokens[0].access_token))]
    owner: dict[bytes, int] = {}
    digests = []
    for i, token in enumerate(tokens):
        token_digest = digest(token.access_token)
        owner[token_digest] = i
        digests.append(token_digest)
    return [
        _token_params(t, d if owner[d] == i else None)
        for i, (t, d) in enumerate(zip(tokens, digests, strict=True))
    ]


def token_from_row(row: Sequence[Any], decode: Callable[[str], Any] = loads) -> AuthToken:
    """The token of a row; ``decode`` reads its metadata (:func:`sealed_holder` for a sealed record)."""
    # Built without __init__: the row was validated when stored and the datetimes
    # are made aware UTC here, so re-checking them would only cost time per read.
    token: AuthToken = object.__new__(AuthToken)
    token.__dict__.update(
        token_id=text(row[0]),
        user_id=text(row[1]),
        access_token=row[2],
        refresh_token=row[3],
        token_type=row[4],
        scopes=loads(row[5]),
        issued_at=moment(row[6]),
        expires_at=optional_moment(row[7]),
        client_id=row[8],
        metadata=decode(row[9]),
    )
    return token


def session_params(session: SessionData) -> dict[str, Any]:
    return {
        "session_id": session.session_id,
        "user_id": session.user_id,
        "created_at": micros(session.created_at),
        "expires_at": optional_micros(session.expires_at),
        "last_activity": micros(session.last_activity),
        "ip_address": session.ip_address,
        "user_agent": session.user_agent,
        "data": dumps(session.data),
    }


def session_from_row(row: Sequence[Any], decode: Callable[[str], Any] = loads) -> SessionData:
    """The session of a row; ``decode`` reads its data, as for :func:`token_from_row`."""
    session: SessionData = object.__new__(SessionData)  # see token_from_row
    session.__dict__.update(
        session_id=text(row[0]),
        user_id=text(row[1]),
        created_at=moment(row[2]),
        expires_at=optional_moment(row[3]),
        last_activity=moment(row[4]),
        ip_address=row[5],
        user_agent=row[6],
        data=decode(row[7]),
    )
    return session


def sealed_holder(text: str) -> Any:
    """The metadata or data of a record ``EncryptedStorage`` sealed: always ``{}`` (the secrets are
    in the ciphertext), so not run through the JSON decoder (about 1,500 instructions of a read)."""
    return {} if text == "{}" else loads(text)
