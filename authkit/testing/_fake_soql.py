"""The SOQL and SOSL subsets :class:`~authkit.testing.fake_rest.FakeRestApi` understands.

Parsing only: :func:`parse_soql` and :func:`parse_sosl` turn text into a
:class:`Soql` / :class:`Sosl`, and :meth:`Soql.matches` tests one record.  A
query outside the subset is a :class:`QueryError` whose message Salesforce
would use for ``MALFORMED_QUERY`` / ``MALFORMED_SEARCH``; the REST layer turns
it into the error body.

SOQL: ``SELECT f, ... | COUNT() FROM T [WHERE c [AND|OR c] ...] [ORDER BY f [ASC|DESC]]
[LIMIT n] [OFFSET n]`` with ``= != <> < <= > >= LIKE IN (...) NOT IN (...)``.
String literals read Salesforce's escapes (``\\' \\" \\\\ \\n \\r \\t \\b \\f``, and
``\\% \\_`` as literal wildcards inside ``LIKE``).

SOSL: ``FIND {term} [IN ALL|NAME|EMAIL|PHONE FIELDS] [RETURNING T [(f, ...)], ...] [LIMIT n]``;
the term is matched as a case-insensitive substring of the text fields (``*`` a
wildcard), its reserved characters backslash-escaped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["QueryError", "Soql", "Sosl", "parse_soql", "parse_sosl", "decode_string", "like_regex"]

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_TOKEN_RE = re.compile(r"""\s*(?:('(?:[^'\\]|\\.)*')|(<=|>=|!=|<>|[=<>(),])|([A-Za-z0-9_.:\-+]+))""", re.DOTALL)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\"}

#: ``resolve(field) -> canonical field name or None`` (field names are case-insensitive).
Resolver = Callable[[str], "str | None"]


class _Typed(Protocol):
    """An sObject type that knows its fields' canonical spelling (the fake's ``_SObjectType``)."""

    def field_name(self, name: str) -> str | None: ...


class QueryError(Exception):
    """A query outside the subset (or not valid at all): the message for the error body."""


@dataclass(frozen=True)
class _Text:
    """A quoted string literal, kept raw so ``LIKE`` can tell ``\\%`` from ``%``."""

    raw: str  # between the quotes, escapes not yet decoded


def decode_string(raw: str, *, like: bool = False) -> str:
    """A SOQL string literal's body with its escapes decoded (``like``: ``\\%``/``\\_`` kept escaped)."""
    out = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            nxt = raw[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
            elif nxt in "%_":
                out.append("\\" + nxt if like else nxt)
            else:
                raise QueryError(f"Invalid string literal: unknown escape \\{nxt}")
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def like_regex(raw: str) -> re.Pattern[str]:
    """The regex a ``LIKE`` pattern (raw literal body) stands for: ``%`` any run, ``_`` one character."""
    pattern = decode_string(raw, like=True)
    parts = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "%_":
            parts.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        parts.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


@dataclass
class _Condition:
    field: str
    op: str
    value: Any  # a scalar, a list for IN / NOT IN, a compiled pattern for LIKE


@dataclass
class Soql:
    sobject: str
    fields: list[str]
    count: bool
    conditions: list[_Condition]
    joins: list[str]  # "AND" / "OR" between consecutive conditions, evaluated left to right
    order_by: str | None
    descending: bool
    limit: int | None
    offset: int

    def matches(self, record: dict[str, Any], resolve: Resolver | _Typed) -> bool:
        """Whether ``record`` meets the ``WHERE`` clause; ``resolve`` maps a field name to its
        canonical spelling (a function, or an sObject type with ``field_name``)."""
        if not self.conditions:
            return True
        if not callable(resolve):
            resolve = resolve.field_name
        result = _compare(record, self.conditions[0], resolve)
        for join, cond in zip(self.joins, self.conditions[1:], strict=True):
            hit = _compare(record, cond, resolve)
            result = (result and hit) if join == "AND" else (result or hit)
        return bool(result)


def _malformed(soql: str, why: str) -> QueryError:
    return QueryError(f"\n{soql}\n^\nERROR at Row:1:Column:1\n{why}")


def _tokens(soql: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(soql):
        if soql[pos:].strip() == "":
            break
        match = _TOKEN_RE.match(soql, pos)
        if match is None or match.end() == pos:
            raise _malformed(soql, f"unexpected token: '{soql[pos:].strip()[:20]}'")
        out.append(next(g for g in match.groups() if g is not None))
        pos = match.end()
    return out


def _literal(soql: str, token: str) -> Any:
    if token.startswith("'"):
        return _Text(token[1:-1])
    lowered = token.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    try:
        return int(token)
    except ValueError:
        pass
    try:
        return float(token)
    except ValueError:
        pass
    if re.match(r"^\d{4}-\d{2}-\d{2}", token):  # date / datetime literals compare as text
        return token
    raise _malformed(soql, f"unexpected token: '{token}'")


def _value(soql: str, literal: Any) -> Any:
    try:
        return decode_string(literal.raw) if isinstance(literal, _Text) else literal
    except QueryError as exc:
        raise _malformed(soql, str(exc)) from None


def parse_soql(soql: str) -> Soql:
    """Parse the SOQL subset (see the module docstring); :class:`QueryError` otherwise."""
    if not soql.strip():
        raise _malformed(soql, "unexpected token: <EOF>")
    tokens = _tokens(soql)
    pos = 0

    def peek(word: str) -> bool:
        return pos < len(tokens) and tokens[pos].upper() == word

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise _malformed(soql, "unexpected token: <EOF>")
        pos += 1
        return tokens[pos - 1]

    if not peek("SELECT"):
        raise _malformed(soql, f"unexpected token: '{tokens[0]}'")
    take()
    fields: list[str] = []
    count = False
    while True:
        name = take()
        if name.upper() == "COUNT" and peek("("):
            take()
            if take() != ")":
                raise _malformed(soql, "COUNT() takes no field here")
            count = True
        elif _NAME_RE.match(name):
            fields.append(name)
        elif "." in name and all(_NAME_RE.match(p) for p in name.split(".")):
            raise _malformed(soql, "relationship queries are not supported by FakeSalesforce")
        else:
            raise _malformed(soql, f"unexpected token: '{name}'")
        if peek(","):
            take()
            continue
        break
    if count and fields:
        raise _malformed(soql, "COUNT() cannot be combined with fields")
    if not peek("FROM"):
        raise _malformed(soql, f"unexpected token: '{tokens[pos] if pos < len(tokens) else '<EOF>'}'")
    take()
    sobject = take()
    if not _NAME_RE.match(sobject):
        raise _malformed(soql, f"unexpected token: '{sobject}'")
    conditions: list[_Condition] = []
    joins: list[str] = []
    if peek("WHERE"):
        take()
        while True:
            field_name = take()
            if not _NAME_RE.match(field_name):
                raise _malformed(soql, f"unexpected token: '{field_name}'")
            op = take().upper()
            if op == "NOT" and peek("IN"):
                take()
                op = "NOT IN"
            if op in ("IN", "NOT IN"):
                if take() != "(":
                    raise _malformed(soql, "expecting '('")
                values = [_value(soql, _literal(soql, take()))]
                while peek(","):
                    take()
                    values.append(_value(soql, _literal(soql, take())))
                if take() != ")":
                    raise _malformed(soql, "expecting ')'")
                conditions.append(_Condition(field_name, op, values))
            elif op == "LIKE":
                literal = _literal(soql, take())
                if not isinstance(literal, _Text):
                    raise _malformed(soql, "LIKE takes a string")
                try:
                    conditions.append(_Condition(field_name, op, like_regex(literal.raw)))
                except QueryError as exc:
                    raise _malformed(soql, str(exc)) from None
            elif op in ("=", "!=", "<>", "<", "<=", ">", ">="):
                conditions.append(_Condition(field_name, "!=" if op == "<>" else op,
                                             _value(soql, _literal(soql, take()))))
            else:
                raise _malformed(soql, f"unexpected token: '{op}'")
            if peek("AND") or peek("OR"):
                joins.append(take().upper())
                continue
            break
    order_by: str | None = None
    descending = False
    if peek("ORDER"):
        take()
        if take().upper() != "BY":
            raise _malformed(soql, "expecting BY")
        order_by = take()
        if peek("ASC") or peek("DESC"):
            descending = take().upper() == "DESC"
    limit: int | None = None
    offset = 0
    if peek("LIMIT"):
        take()
        text = take()
        if not text.isdigit():
            raise _malformed(soql, f"unexpected token: '{text}'")
        limit = int(text)
    if peek("OFFSET"):
        take()
        text = take()
        if not text.isdigit():
            raise _malformed(soql, f"unexpected token: '{text}'")
        offset = int(text)
    if pos != len(tokens):
        raise _malformed(soql, f"unexpected token: '{tokens[pos]}'")
    return Soql(sobject, fields, count, conditions, joins, order_by, descending, limit, offset)


def _compare(record: dict[str, Any], cond: _Condition, resolve: Resolver) -> bool:
    name = resolve(cond.field) or cond.field
    value = record.get(name)
    if cond.op == "IN":
        return value in cond.value
    if cond.op == "NOT IN":
        return value not in cond.value
    if cond.op == "=":
        return bool(value == cond.value)
    if cond.op == "!=":
        return bool(value != cond.value)
    if cond.op == "LIKE":
        if value is None:
            return False
        return cond.value.fullmatch(str(value)) is not None
    if value is None or cond.value is None:
        return False
    try:
        if cond.op == "<":
            return bool(value < cond.value)
        if cond.op == "<=":
            return bool(value <= cond.value)
        if cond.op == ">":
            return bool(value > cond.value)
        return bool(value >= cond.value)
    except TypeError:
        return False


# -- SOSL -------------------------------------------------------------------------------------


@dataclass
class Sosl:
    term: re.Pattern[str]  # matches a text field value that contains the search term
    returning: list[tuple[str, list[str]]] = field(default_factory=list)  # (sObject, fields); empty: all types
    limit: int | None = None


_FIND_RE = re.compile(r"^\s*FIND\s*\{((?:[^{}\\]|\\.)*)\}(.*)$", re.IGNORECASE | re.DOTALL)
_SOSL_RESERVED = "?&|!{}[]()^~*:\\\"'+-"


def parse_sosl(sosl: str) -> Sosl:
    """Parse the SOSL subset (see the module docstring); :class:`QueryError` otherwise."""
    match = _FIND_RE.match(sosl)
    if match is None:
        raise QueryError("No search term found. The search term must be enclosed in braces.")
    raw, rest = match.group(1), match.group(2)
    parts = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            if raw[i + 1] not in _SOSL_RESERVED:
                raise QueryError(f"Invalid escape sequence \\{raw[i + 1]} in the search term")
            parts.append(re.escape(raw[i + 1]))
            i += 2
            continue
        if ch == "*":
            parts.append(".*")
        elif ch in _SOSL_RESERVED and ch not in "-+'\"":
            # An unescaped operator (& | ( ) ...) is query syntax the fake does not model.
            raise QueryError(f"unsupported search operator {ch!r} in the search term: escape it with a backslash")
        else:
            parts.append(re.escape(ch))
        i += 1
    term = "".join(parts).strip()
    if len(term.replace(".*", "")) < 2:
        raise QueryError("search term must be longer than one character")
    result = Sosl(re.compile(term, re.IGNORECASE | re.DOTALL))
    rest = rest.strip()
    fields_in = re.match(r"^IN\s+(ALL|NAME|EMAIL|PHONE)\s+FIELDS\b(.*)$", rest, re.IGNORECASE | re.DOTALL)
    if fields_in:
        rest = fields_in.group(2).strip()
    returning = re.match(r"^RETURNING\s+(.*?)(?:\s+LIMIT\s+(\d+))?\s*$", rest, re.IGNORECASE | re.DOTALL)
    if returning:
        for item in _split_returning(returning.group(1)):
            spec = re.match(r"^([A-Za-z][A-Za-z0-9_]*)\s*(?:\(([^()]*)\))?$", item.strip())
            if spec is None:
                raise QueryError(f"unexpected token in RETURNING: '{item.strip()[:20]}'")
            names = [f.strip() for f in (spec.group(2) or "").split(",") if f.strip()]
            for name in names:
                if not _NAME_RE.match(name):
                    raise QueryError(f"unexpected token: '{name}'")
            result.returning.append((spec.group(1), names))
        if returning.group(2):
            result.limit = int(returning.group(2))
    elif rest:
        limit = re.match(r"^LIMIT\s+(\d+)\s*$", rest, re.IGNORECASE)
        if limit is None:
            raise QueryError(f"unexpected token: '{rest[:20]}'")
        result.limit = int(limit.group(1))
    return result


def _split_returning(text: str) -> list[str]:
    items: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    return [item for item in items if item.strip()]
