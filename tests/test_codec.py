"""The shared codec's JSON fast paths give what the standard library gives, values and errors."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from authkit.models import as_utc
from authkit.storage._codec import dumps, dumps_checked, loads

VALUES: list[Any] = [
    [1, "u", 1764540000123456, None, 0, "127.0.0.1", "Werkzeug/3.1.3", {"user": "u", "n": 0}],
    {"ü": "日本", "nested": [{"a": [1.5, -2, True, False, None]}], "": ""},
    ["lone \ud800 surrogate", {"k\udfff": 1}],  # falls back to ASCII escapes, as dumps does
    'quote " backslash \\ control \x01 \n',
    [],
    {},
    1.0e300,
]


@pytest.mark.parametrize("value", VALUES)
def test_dumps_checked_writes_what_dumps_writes(value: Any) -> None:
    assert dumps_checked(value) == dumps(value)
    assert loads(dumps_checked(value)) == json.loads(dumps(value))


def test_dumps_checked_refuses_a_non_json_value_as_json_does() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps_checked([object()])


@pytest.mark.parametrize("text", [
    '[1,"a",{"b":null}]', ' [1] ', '[1]\n', '\t{"a": 1}', '"x"', '1', 'NaN', '[1e400]',
])
def test_loads_gives_what_json_loads_gives(text: str) -> None:
    got, expected = loads(text), json.loads(text)
    assert got == expected or (got != got and expected != expected)  # NaN is not equal to itself


@pytest.mark.parametrize("text", ["", " ", "[1,", "[1] x", "{'a': 1}", "[1]]", "nul"])
def test_loads_refuses_what_json_loads_refuses(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as got:
        loads(text)
    assert (got.value.msg, got.value.pos) == (expected.value.msg, expected.value.pos)


def test_as_utc_keeps_a_utc_datetime_and_converts_others() -> None:
    now = datetime.now(timezone.utc)
    assert as_utc(now, "t") is now
    east = now.astimezone(timezone(timedelta(hours=2)))
    converted = as_utc(east, "t")
    assert converted == now and converted.tzinfo is timezone.utc
    with pytest.raises(ValueError, match="naive"):
        as_utc(now.replace(tzinfo=None), "t")
