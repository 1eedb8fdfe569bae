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
from collections.abc import Container
from typing import Any

_SCALARS = (str, int, bool, type(None))
_NO_TAGS: frozenset[str] = frozenset()


class _NotPlain(Exception):
    """Raised inside :func:`plain_json_copy` at the first value JSON would change."""


def plain_json_copy(value: Any, tags: Container[str] = _NO_TAGS) -> Any:
    """A deep copy of ``value`` if a JSON encode + decode would give an equal copy, else ``None``.

    ``tags``: the keys of a tagging serializer (Flask's ``TaggedJSONSerializer``),
    which changes a dict whose only key is one of them; such a dict is not plain
    either, so a copy also stands for tagging + encoding + decoding + untagging.

    >>> plain_json_copy({"n": 1, "cart": [1, 2]})
    {'n': 1, 'cart': [1, 2]}
    >>> plain_json_copy({"t": (1, 2)}) is None      # JSON turns the tuple into a list
    True
    >>> plain_json_copy({"x": {" t": [1]}}, tags={" t"}) is None
    True
    """
    try:
        return _copy(value, 0, tags)
    except _NotPlain:
        return None


def _copy(value: Any, depth: int, tags: Container[str]) -> Any:
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
        return [_copy(item, depth + 1, tags) for item in value]
    if kind is dict:
        if len(value) == 1 and next(iter(value)) in tags:
            raise _NotPlain
        copied = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _NotPlain
            copied[key] = _copy(item, depth + 1, tags)
        return copied
    raise _NotPlain
