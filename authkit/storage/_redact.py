"""Storage URLs without their secrets, for reprs, messages, logs and command output.

A password can sit in a URL's user-info (``postgresql://app:secret@db/app``)
or in its query (``postgresql://db/app?user=app&password=secret``, which
libpq, psycopg, PyMySQL and redis-py all accept).  Both are masked, and so is
any query parameter whose name says it holds a secret.

>>> redact_url("postgresql://app:s3cret@db/app?password=s3cret&sslmode=require")
'postgresql://app:***@db/app?password=***&sslmode=require'
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlsplit

__all__ = ["redact_url", "url_secrets"]

MASK = "***"
# Query parameters that carry a secret (password=, passwd=, sslpassword=, auth_token=, ...).
_SECRET_NAME = re.compile(r"pass|pwd|secret|token|credential|auth|apikey|api_key", re.IGNORECASE)


def _query_secrets(query: str) -> list[tuple[str, str]]:
    return [(name, value) for name, value in parse_qsl(query, keep_blank_values=True)
            if value and _SECRET_NAME.search(name)]


def url_secrets(url: str) -> list[str]:
    """Every secret value in ``url``, as written and percent-decoded, longest first."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    found: set[str] = set()
    if password:
        found.update({password, unquote(password)})
    for _, value in _query_secrets(parts.query):
        found.update({value, quote(value, safe=""), quote(value)})
    return sorted((s for s in found if s), key=len, reverse=True)


def redact_url(url: str) -> str:
    """``url`` with its password and secret query parameters replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{hostinfo}"
    query = parts.query
    if _query_secrets(query):
        pieces = []
        for piece in query.split("&"):
            name, sep, value = piece.partition("=")
            if sep and value and _SECRET_NAME.search(unquote(name)):
                piece = f"{name}={MASK}"
            pieces.append(piece)
        query = "&".join(pieces)
    if netloc == parts.netloc and query == parts.query:
        return url
    # Rebuilt by hand: urlunsplit() drops the empty host of sqlite:///path.
    text = f"{parts.scheme}://{netloc}{parts.path}"
    if query:
        text += f"?{query}"
    if parts.fragment:
        text += f"#{parts.fragment}"
    return text
