"""Safe SOQL and SOSL: user input quoted into a query, never spliced into it.

::

    from authkit.salesforce import format_soql, format_sosl

    format_soql("SELECT Id FROM Contact WHERE LastName = {} AND CreatedDate > {since}",
                "O'Brien", since=datetime(2024, 1, 1, tzinfo=timezone.utc))
    # "SELECT Id FROM Contact WHERE LastName = 'O\\'Brien' AND CreatedDate > 2024-01-01T00:00:00Z"

    format_soql("SELECT Id FROM Account WHERE Name LIKE {:like}", "50%_off")   # % and _ match literally
    format_soql("SELECT Id FROM Account WHERE Id IN {}", ["001...", "001..."])  # ('001...', '001...')
    format_sosl("FIND {{{}}} IN NAME FIELDS RETURNING Account(Id)", "Acme & Co")  # FIND {Acme \\& Co} ...

``{}``, ``{0}`` and ``{name}`` placeholders take positional and keyword
values as :meth:`str.format` does (``{{``/``}}`` are literal braces).  What a
value becomes in SOQL:

============================== ==========================================================
``str``                        ``'...'`` with ``\\ ' " \\n \\r \\t \\b \\f`` escaped
``{:like}`` on a ``str``       the same, and ``%`` / ``_`` escaped so they match themselves
``int``, ``float``, ``Decimal`` the number (``nan``/``inf`` are refused)
``bool``                       ``true`` / ``false``
``None``                       ``null``
``datetime`` (aware)           ``2024-01-01T12:00:00Z`` (in UTC; milliseconds kept)
``date``                       ``2024-01-01``
``list``/``tuple``/``set``     ``('a', 'b')`` for ``IN`` (non-empty; each item as above)
============================== ==========================================================

Anything else — a naive datetime, an empty list, nested lists, other control
characters in a string, an unknown format spec, attribute or index lookups in a
placeholder (``{0.x}``, ``{0[1]}``) — is a ``ValueError``/``TypeError``: a value
that cannot be quoted safely is refused, never passed through.
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

__all__ = ["format_soql", "format_sosl", "quote_soql", "escape_sosl"]

# Escapes a SOQL string literal understands (Salesforce "Quoted String Escape Sequences").
_SOQL_ESCAPES = {"\\": "\\\\", "'": "\\'", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b",
                 "\f": "\\f"}
# Inside a LIKE pattern % and _ are wildcards; escaped they match themselves.
_LIKE_ESCAPES = {**_SOQL_ESCAPES, "%": "\\%", "_": "\\_"}
# SOSL reserved characters, each escaped with a backslash inside FIND {...}.
_SOSL_RESERVED = frozenset("?&|!{}[]()^~*:\\\"'+-")


def _quote_str(value: str, table: Mapping[str, str]) -> str:
    out = []
    for ch in value:
        escaped = table.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif ch < " " or ch == "\x7f":
            # SOQL has no escape for other control characters; refusing beats guessing.
            raise ValueError(f"cannot quote control character {ch!r} in a SOQL string")
        else:
            out.append(ch)
    return "'" + "".join(out) + "'"


def quote_soql(value: Any, *, like: bool = False) -> str:
    """``value`` as a SOQL literal (see the module docstring for each type).

    ``like=True`` also escapes ``%`` and ``_`` in a string, for a ``LIKE``
    pattern that should match them literally.
    """
    if like and not isinstance(value, str):
        raise TypeError(f"{{:like}} takes a str, not {type(value).__name__}")
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote_str(value, _LIKE_ESCAPES if like else _SOQL_ESCAPES)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (float, Decimal)):
        if not math.isfinite(value):
            raise ValueError(f"cannot put {value!r} in SOQL: not a finite number")
        text = format(value, "f") if isinstance(value, Decimal) else repr(value)
        if "e" in text or "E" in text:  # SOQL takes no exponent: write the digits out
            text = format(Decimal(repr(value)), "f")
        return text
    if isinstance(value, datetime):  # before date: datetime is a date
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("a naive datetime has no place in SOQL: give it a timezone")
        utc = value.astimezone(timezone.utc)
        text = utc.strftime("%Y-%m-%dT%H:%M:%S")
        if utc.microsecond:
            text += f".{utc.microsecond // 1000:03d}"
        return text + "Z"
    if isinstance(value, date):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else list(value)
        if not items:
            raise ValueError("an empty list cannot be quoted: SOQL has no empty IN ()")
        for item in items:
            if isinstance(item, (list, tuple, set, frozenset)):
                raise ValueError("nested lists cannot be quoted into SOQL")
        return "(" + ", ".join(quote_soql(item) for item in items) + ")"
    raise TypeError(f"cannot quote a {type(value).__name__} into SOQL")


def escape_sosl(term: Any) -> str:
    """``term`` with every SOSL reserved character backslash-escaped, for ``FIND {...}``.

    Takes a ``str`` or a number; anything else is a ``TypeError``.
    """
    if isinstance(term, bool) or not isinstance(term, (str, int, float, Decimal)):
        raise TypeError(f"a SOSL search term must be a str or a number, not {type(term).__name__}")
    text = str(term)
    out = []
    for ch in text:
        if ch in _SOSL_RESERVED:
            out.append("\\" + ch)
        elif ch < " " or ch == "\x7f":
            raise ValueError(f"cannot put control character {ch!r} in a SOSL search term")
        else:
            out.append(ch)
    return "".join(out)


class _Formatter(string.Formatter):
    """:class:`string.Formatter` whose fields are quoted, with no attribute or index lookups."""

    def __init__(self, quote: Any, specs: frozenset[str]) -> None:
        self._quote = quote
        self._specs = specs

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[Any, str]:
        if "." in field_name or "[" in field_name:
            # {0.__class__} would read attributes of a caller's object into the query.
            raise ValueError(f"placeholder {{{field_name}}} may only name an argument")
        found: tuple[Any, str] = super().get_field(field_name, args, kwargs)
        return found

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion is not None:
            raise ValueError(f"conversion !{conversion} is not supported: values are always quoted")
        return value

    def format_field(self, value: Any, format_spec: str) -> str:
        if format_spec not in self._specs:
            raise ValueError(f"unknown format spec {format_spec!r}; use one of {sorted(self._specs)}")
        return str(self._quote(value, format_spec))


def _soql_field(value: Any, spec: str) -> str:
    return quote_soql(value, like=spec == "like")


def _sosl_field(value: Any, spec: str) -> str:
    return escape_sosl(value)


_SOQL = _Formatter(_soql_field, frozenset({"", "like"}))
_SOSL = _Formatter(_sosl_field, frozenset({""}))


def format_soql(template: str, /, *args: Any, **kwargs: Any) -> str:
    """``template`` with each ``{}`` replaced by the quoted literal of its value (see the module docstring)."""
    if not isinstance(template, str):
        raise TypeError("template must be a str")
    return _SOQL.format(template, *args, **kwargs)


def format_sosl(template: str, /, *args: Any, **kwargs: Any) -> str:
    """``template`` with each ``{}`` replaced by its value escaped as a SOSL search term.

    The values go inside ``FIND {...}``; write that search group's own braces
    doubled: ``format_sosl("FIND {{{}}} RETURNING Account(Id)", term)``.  For
    values in a ``WHERE`` clause of a ``RETURNING`` list, build that clause with
    :func:`format_soql`.
    """
    if not isinstance(template, str):
        raise TypeError("template must be a str")
    return _SOSL.format(template, *args, **kwargs)
