"""The instance's URLs: where the bearer token may go, and what a log line may show of a URL."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["URL_RE", "origin", "safe_path"]

#: A full URL (``scheme://...``) rather than a path.
URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of ``url``, the port filled in for http/https."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        raise ValueError("invalid port in URL") from None
    return scheme, (parts.hostname or "").lower(), port if port is not None else _DEFAULT_PORTS.get(scheme)


def safe_path(url: str) -> str:
    """The path with query values elided, for logs and messages (a SOQL filter may hold personal data)."""
    parts = urlsplit(url)
    if not parts.query:
        return parts.path
    names = [pair.partition("=")[0] for pair in parts.query.split("&") if pair]
    return parts.path + "?" + "&".join(f"{name}=..." for name in names)
