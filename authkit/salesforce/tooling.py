"""The Tooling API (``sf.tooling``): the client's surface under ``/services/data/vXX.X/tooling/``.

::

    for cls in sf.tooling.query("SELECT Id, Name FROM ApexClass"):
        ...
    sf.tooling.sobject("ApexClass").describe()
    result = sf.tooling.execute_anonymous("System.debug('hello');")
    if not result["success"]:
        print(result["compileProblem"] or result["exceptionMessage"])

Same token handling, retries and errors as the client itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from authkit.salesforce.query import QueryResult
from authkit.salesforce.sobject import SObject

if TYPE_CHECKING:
    from authkit.salesforce.client import SalesforceClient

__all__ = ["Tooling"]


class Tooling:
    """The Tooling API of one client.  Relative paths go under ``tooling/``; absolute ones are
    taken as they are (as on the client)."""

    def __init__(self, client: SalesforceClient) -> None:
        self._client = client

    def __repr__(self) -> str:
        return "Tooling()"

    @staticmethod
    def _path(path: str) -> str:
        if not isinstance(path, str):
            raise TypeError("path must be a str")
        return path if path.startswith("/") or "://" in path else "tooling/" + path

    def get(self, path: str, params: Any = None, **kwargs: Any) -> Any:
        return self._client.get(self._path(path), params=params, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self._client.post(self._path(path), json=json, **kwargs)

    def patch(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self._client.patch(self._path(path), json=json, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self._client.delete(self._path(path), **kwargs)

    def query(self, soql: str, *, include_deleted: bool = False) -> QueryResult:
        """A Tooling SOQL query, paged lazily like :meth:`SalesforceClient.query`."""
        if not isinstance(soql, str):
            raise TypeError("soql must be a str")
        if not soql.strip():
            raise ValueError("soql must not be empty")
        return QueryResult(self._client.get, "tooling/queryAll" if include_deleted else "tooling/query", soql)

    def query_all(self, soql: str) -> QueryResult:
        """:meth:`query` through ``tooling/queryAll`` (deleted records included).

        The Tooling API guide lists only ``query``; the live check (``pytest -m live``) tells
        whether an org serves ``queryAll`` — prefer :meth:`query` unless you need deleted rows.
        """
        return self.query(soql, include_deleted=True)

    def sobject(self, name: str) -> SObject:
        """Record operations on a Tooling type (``ApexClass``, ``TraceFlag``, ...)."""
        return SObject(self._client, name, base="tooling/sobjects")

    def describe(self) -> dict[str, Any]:
        """The Tooling API's global describe: every Tooling type."""
        return dict(self._client.get("tooling/sobjects"))

    def execute_anonymous(self, apex: str) -> dict[str, Any]:
        """Run anonymous Apex: Salesforce's result ``{"compiled", "success", "compileProblem",
        "exceptionMessage", "exceptionStackTrace", "line", "column"}``.

        A compile error or an uncaught exception does not raise: read ``success``.
        """
        if not isinstance(apex, str):
            raise TypeError("apex must be a str")
        if not apex.strip():
            raise ValueError("apex must not be empty")
        # A GET, but not idempotent: the Apex may write, so a 500 is not resent.
        response = self._client._request("GET", "tooling/executeAnonymous/", frozenset(), idempotent=False,
                                         params={"anonymousBody": apex})
        return dict(response.json())
