"""Fast paths for the session integrations' JSON: skip an encode + decode round when it changes nothing.

A session's data goes through the framework's serializer to become what the
storage keeps (plain JSON values).  For the common session - str keys, plain
str/int/bool/None/finite float values, lists and dicts - that round trip gives
back an equal copy, so a copy made by walking the value does the same work in
a fraction of the time; anything else (tuples, int keys, NaN, subclasses) takes
the serializer's own round trip, so the result is always what it would give.
"""

from __future__ import annotations

import math
from typing import Any

_SCALARS = (str, int, bool, type(None))


class _NotPlain(Exception):
    """Raised inside :func:`plain_json_copy` at the first value JSON would change."""


def plain_json_copy(value: Any) -> Any:
    """A deep copy of ``value`` if a JSON encode + decode would give an equal copy, else ``None``.

    >>> plain_json_copy({"n": 1, "cart": [1, 2]})
    {'n': 1, 'cart': [1, 2]}
    >>> plain_json_copy({"t": (1, 2)}) is None      # JSON turns the tuple into a list
    True
    """
    try:
        return _copy(value, 0)
    except _NotPlain:
        return None


def _copy(value: Any, depth: int) -> Any:
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is float:
        if not math.isfinite(value):
            raise _NotPlain
        return value
    if depth > 100:  # the serializer's round trip decides what happens to very deep values
        raise _NotPlain
    if kind is list:
        return [_copy(item, depth + 1) for item in value]
    if kind is dict:
        copied = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _NotPlain
            copied[key] = _copy(item, depth + 1)
        return copied
    raise _NotPlain
