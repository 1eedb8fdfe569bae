"""format_soql / format_sosl against an injection corpus, and every value round-tripping through the fake org.

The fake's SOQL parser reads string literals as Salesforce does (backslash escapes), so a
quoted value that came back different, or a value that changed the query's shape, fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from authkit.salesforce import SalesforceClient, format_soql, format_sosl
from authkit.salesforce.soql import escape_sosl, quote_soql
from authkit.testing import FakeSalesforce
from authkit.testing.fake_rest import FakeRestApi

INJECTIONS = [
    "O'Brien",
    "' OR Name != '",
    "\\' OR Name != \\'",
    "back\\slash",
    "trailing\\",
    'double "quotes"',
    "new\nline",
    "tab\tand\rreturn",
    "bell\b form\f",
    "unicode ✓ café 日本 🙂",
    "50% off_now",
    "%",
    "_",
    "') OR (Name != '",
    "{} {0} {{}}",
    "'; DELETE FROM Account",
]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("O'Brien", "'O\\'Brien'"),
        ("a\\b", "'a\\\\b'"),
        ('say "hi"', "'say \\\"hi\\\"'"),
        ("l1\nl2\r\tx", "'l1\\nl2\\r\\tx'"),
        ("50%_", "'50%_'"),
        ("café ✓", "'café ✓'"),
        (None, "null"),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (-12, "-12"),
        (1.5, "1.5"),
        (1e-7, "0.0000001"),
        (1e22, "10000000000000000000000"),
        (Decimal("12.50"), "12.50"),
        (date(2024, 2, 29), "2024-02-29"),
        (datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "2024-01-02T03:04:05Z"),
        (datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc), "2024-01-02T03:04:05.678Z"),
        (datetime(2024, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))), "2024-01-02T03:04:05Z"),
        (["a", "b'c"], "('a', 'b\\'c')"),
        ((1, 2, None), "(1, 2, null)"),
        ({"b", "a"}, "('a', 'b')"),
    ],
)
def test_quote_each_type(value: object, expected: str) -> None:
    assert quote_soql(value) == expected
    assert format_soql("X {}", value) == "X " + expected


def test_like_escapes_wildcards() -> None:
    assert format_soql("Name LIKE {:like}", "50%_o'k") == "Name LIKE '50\\%\\_o\\'k'"
    assert format_soql("Name LIKE {}", "50%") == "Name LIKE '50%'"  # plain {} leaves wildcards working
    with pytest.raises(TypeError):
        format_soql("{:like}", 5)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (datetime(2024, 1, 1), ValueError),  # naive
        ([], ValueError),
        ([[1]], ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        (Decimal("NaN"), ValueError),
        ("nul\x00byte", ValueError),
        ("escape\x1b", ValueError),
        (b"bytes", TypeError),
        (object(), TypeError),
        ({"a": 1}, TypeError),
    ],
)
def test_refuses_what_it_cannot_quote(value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        format_soql("SELECT Id FROM Account WHERE Name = {}", value)


def test_placeholders() -> None:
    assert format_soql("{0} {name} {0}", "a", name="b") == "'a' 'b' 'a'"
    assert format_soql("{{literal}} {}", 1) == "{literal} 1"
    for template in ("{0.__class__}", "{0[0]}", "{!r}", "{:>10}", "{:literal}"):
        with pytest.raises(ValueError):
            format_soql(template, "x")
    with pytest.raises(IndexError):
        format_soql("{} {}", "only one")
    with pytest.raises(KeyError):
        format_soql("{missing}")
    with pytest.raises(TypeError):
        format_soql(None)  # type: ignore[arg-type]


def test_sosl_escaping() -> None:
    reserved = "?&|!{}[]()^~*:\\\"'+-"
    assert escape_sosl(reserved) == "".join("\\" + c for c in reserved)
    assert format_sosl("FIND {{{}}} RETURNING Account(Id)", "Acme & Co (UK)") == (
        "FIND {Acme \\& Co \\(UK\\)} RETURNING Account(Id)")
    assert format_sosl("FIND {{{}}}", 42) == "FIND {42}"
    assert escape_sosl("café") == "café"
    for bad in (None, True, b"x", ["a"]):
        with pytest.raises(TypeError):
            escape_sosl(bad)
    with pytest.raises(ValueError):
        escape_sosl("a\nb")
    with pytest.raises(ValueError):
        format_sosl("{:like}", "x")


# -- against the org: what goes in comes back, and nothing else does -------------------------


@pytest.fixture(scope="module")
def org() -> Iterator[FakeSalesforce]:
    with FakeSalesforce() as org:
        yield org


@pytest.fixture
def sf(org: FakeSalesforce) -> Iterator[SalesforceClient]:
    org.rest = FakeRestApi(page_size=3)
    with SalesforceClient(org.jwt_auth(), backoff_factor=0) as client:
        yield client


def test_injection_corpus_round_trips(org: FakeSalesforce, sf: SalesforceClient) -> None:
    assert org.rest is not None
    ids = {name: org.rest.insert("Account", {"Name": name}) for name in INJECTIONS}
    org.rest.insert("Account", {"Name": "bystander"})
    for name in INJECTIONS:
        soql = format_soql("SELECT Id, Name FROM Account WHERE Name = {}", name)
        found = [(r["Id"], r["Name"]) for r in sf.query(soql)]
        assert found == [(ids[name], name)], soql
        # The same value in a LIKE with {:like} matches only itself, wildcards included.
        like = format_soql("SELECT Id FROM Account WHERE Name LIKE {:like}", name)
        assert [r["Id"] for r in sf.query(like)] == [ids[name]], like


def test_like_wildcards_are_literal(org: FakeSalesforce, sf: SalesforceClient) -> None:
    assert org.rest is not None
    org.rest.insert_many("Account", [{"Name": "50% off"}, {"Name": "50 dollars off"}, {"Name": "a_b"},
                                     {"Name": "axb"}])
    assert sf.query(format_soql("SELECT Id FROM Account WHERE Name LIKE {:like}", "50%")).total_size == 0
    starts = format_soql("SELECT Name FROM Account WHERE Name LIKE {}", "50%")  # a caller's own wildcard
    assert sorted(r["Name"] for r in sf.query(starts)) == ["50 dollars off", "50% off"]
    exact = format_soql("SELECT Name FROM Account WHERE Name LIKE {:like}", "a_b")
    assert [r["Name"] for r in sf.query(exact)] == ["a_b"]


def test_in_lists_numbers_bools_none(org: FakeSalesforce, sf: SalesforceClient) -> None:
    assert org.rest is not None
    org.rest.insert_many("Account", [{"Name": "a'1", "NumberOfEmployees": 5},
                                     {"Name": "b\\2", "NumberOfEmployees": 50},
                                     {"Name": "c", "NumberOfEmployees": None}])
    soql = format_soql("SELECT Name FROM Account WHERE Name IN {} ORDER BY Name", ["a'1", "b\\2", "zz"])
    assert [r["Name"] for r in sf.query(soql)] == ["a'1", "b\\2"]
    soql = format_soql("SELECT Name FROM Account WHERE NumberOfEmployees > {}", 10)
    assert [r["Name"] for r in sf.query(soql)] == ["b\\2"]
    soql = format_soql("SELECT Name FROM Account WHERE NumberOfEmployees = {}", None)
    assert [r["Name"] for r in sf.query(soql)] == ["c"]
    soql = format_soql("SELECT Name FROM Account WHERE IsDeleted = {}", False)
    assert sf.query(soql).total_size == 3


def test_query_result_total_size_and_count(org: FakeSalesforce, sf: SalesforceClient) -> None:
    assert org.rest is not None
    org.rest.insert_many("Account", [{"Name": f"n{i}"} for i in range(7)])
    count = sf.query("SELECT COUNT() FROM Account")
    assert list(count) == []
    assert count.total_size == 7
    before = org.rest.handled_requests
    result = sf.query("SELECT Id FROM Account")
    assert org.rest.handled_requests == before  # lazy: nothing sent yet
    assert result.total_size == 7
    assert org.rest.handled_requests == before + 1
    assert len(list(result)) == 7  # pages of 3: 3 requests in all
    assert org.rest.handled_requests == before + 3
    assert result.total_size == 7
    assert "total_size=7" in repr(result)
    assert sf.query_all("SELECT COUNT() FROM Account").total_size == 7


def test_fake_parser_module() -> None:
    from authkit.testing._fake_errors import RestError as _RestError
    from authkit.testing._fake_query import parse_soql_or_error as _parse_soql
    from authkit.testing._fake_soql import QueryError, parse_soql, parse_sosl

    parsed = parse_soql("SELECT Name FROM Account WHERE name LIKE 'a\\_%' AND NumberOfEmployees > 3")
    rest = FakeRestApi()
    account = rest._types["account"]
    # The WHERE clause resolves field names through a function or an sObject type alike.
    assert parsed.matches({"Name": "a_b", "NumberOfEmployees": 4}, account)
    assert parsed.matches({"Name": "a_b", "NumberOfEmployees": 4}, account.field_name)
    assert not parsed.matches({"Name": "axb", "NumberOfEmployees": 4}, account)
    with pytest.raises(QueryError):
        parse_soql("SELECT Name FROM Account WHERE Name = 'bad \\q escape'")
    with pytest.raises(_RestError) as info:
        _parse_soql("SELEC Name FROM Account")
    assert info.value.error_code == "MALFORMED_QUERY"
    sosl = parse_sosl("FIND {a\\-b*} IN NAME FIELDS RETURNING Account(Id, Name), Contact LIMIT 5")
    assert sosl.returning == [("Account", ["Id", "Name"]), ("Contact", [])] and sosl.limit == 5
    assert sosl.term.search("xx A-Bcd")
    for bad in ("FIND x", "FIND {a}", "FIND {a & b}", "FIND {ab} RETURNING 1x"):
        with pytest.raises(QueryError):
            parse_sosl(bad)


def test_random_strings_round_trip_through_the_parser() -> None:
    """Whatever the string, the quoted literal parses back to exactly it, as one token."""
    import random

    from authkit.testing._fake_soql import parse_soql

    rng = random.Random(12)
    alphabet = "ab' \"\\%_\n\r\t\b\f()=,;é✓🙂{}"
    for _ in range(500):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        parsed = parse_soql(format_soql("SELECT Id FROM Account WHERE Name = {} AND Phone != {}", value, value))
        assert [(c.field, c.op, c.value) for c in parsed.conditions] == [("Name", "=", value), ("Phone", "!=", value)]
        like = parse_soql(format_soql("SELECT Id FROM Account WHERE Name LIKE {:like}", value))
        assert like.conditions[0].value.fullmatch(value) is not None
        assert value == "" or like.conditions[0].value.fullmatch(value + "x") is None
