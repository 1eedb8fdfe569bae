"""``QueryResult``: the records of a SOQL query, one page at a time, with Salesforce's ``totalSize``.

::

    result = sf.query("SELECT Id, Name FROM Account WHERE Industry = 'Energy'")
    result.total_size          # fetches the first page (if not yet fetched) and reads totalSize
    for account in result:     # the remaining pages are fetched as you iterate
        ...
    sf.query("SELECT COUNT() FROM Account").total_size    # COUNT() answers no records, only the size
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["QueryResult"]


class QueryResult(Iterator[dict[str, Any]]):
    """An iterator over a query's records that follows ``nextRecordsUrl`` lazily.

    Nothing is sent until the first record (or :attr:`total_size`) is asked
    for; the next page is fetched only when the current one is used up, and
    only that page is held, so memory stays flat however many records match.
    Iterate it once: it is an iterator, not a list.
    """

    def __init__(self, get: Callable[..., Any], resource: str, soql: str) -> None:
        self._get = get
        self._resource = resource
        self._soql = soql
        self._total_size: int | None = None
        self._started = False
        self._records: list[dict[str, Any]] = []  # the current page, reversed: pop() hands out the next
        self._next_url: str | None = None

    def __repr__(self) -> str:
        size = "?" if self._total_size is None else self._total_size
        return f"QueryResult(resource={self._resource!r}, total_size={size})"

    def _take(self, page: Any) -> None:
        if not isinstance(page, dict):
            raise TypeError(f"unexpected query answer: {type(page).__name__}")
        self._total_size = int(page.get("totalSize") or 0)
        records = list(page.get("records") or [])
        records.reverse()
        self._records = records
        self._next_url = page.get("nextRecordsUrl") or None

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self._take(self._get(self._resource, params={"q": self._soql}))

    @property
    def total_size(self) -> int:
        """Salesforce's ``totalSize``: every record the query matches (its ``COUNT()`` for a count query)."""
        self._start()
        assert self._total_size is not None
        return self._total_size

    def __iter__(self) -> QueryResult:
        return self

    def __next__(self) -> dict[str, Any]:
        self._start()
        while not self._records:
            if self._next_url is None:
                raise StopIteration
            url, self._next_url = self._next_url, None
            self._take(self._get(url))
        return self._records.pop()
