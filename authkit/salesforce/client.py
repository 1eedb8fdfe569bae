"""``SalesforceClient``: the REST API over :mod:`requests`, with a token that takes care of itself.

::

    auth = JwtAuth(client_id, "integration@acme.com", key, token_store=store)
    with SalesforceClient(auth) as sf:
        for account in sf.query("SELECT Id, Name FROM Account"):   # pages fetched lazily
            ...
        new = sf.sobject("Account").create({"Name": "Acme"})
        sf.sobject("Account").update(new["id"], {"Industry": "Energy"})
        sf.collections.create(records)                            # 200 per request, results in order
        sf.get("limits")                                          # /services/data/v62.0/limits
        print(sf.api_usage)                                       # ApiUsage(used=25, limit=15000, ...)

What it does on every request:

- builds the URL: a relative path goes under ``/services/data/vXX.X/``, an
  absolute path (``/services/...``) under the instance URL, and a full URL is
  accepted only when its scheme, host and port are the instance's — anything
  else is a ``ValueError`` before a byte is sent, so the bearer token never
  leaves the instance;
- on a ``401`` calls ``auth.invalidate(token)`` and retries exactly once with
  the new token (not at all if the auth session hands out the same token, as
  :class:`~authkit.salesforce.StaticTokenAuth` does); a second ``401`` is a
  :class:`~authkit.errors.SessionExpiredError`.  The body is re-sent intact: it
  is encoded once, a seekable file is rewound, and a stream that cannot be
  rewound (a generator, a pipe) is read into memory before the first send;
- retries connection failures, ``502``/``503``/``504`` and ``429`` with urllib3's
  :class:`~urllib3.util.Retry` on the session's adapter (bounded attempts,
  exponential backoff, ``Retry-After`` honoured up to ``max_retry_after``):
  requests that never reached the server for every method, the others for
  idempotent methods only (GET, HEAD, PUT, DELETE, OPTIONS) — a POST or PATCH
  is never sent twice;
- resends a request that failed with ``UNABLE_TO_LOCK_ROW`` (any method: the write was not
  applied) or ``500`` (idempotent methods only), with jittered backoff, up to ``retries`` times;
- sends ``User-Agent: authkit/<version> python-requests/<version>`` and reports retries and API
  usage as :mod:`authkit.salesforce.events`;
- sends ``json=`` as compact JSON (what requests would send, without the spaces); NaN, an
  infinity or a value that contains itself is a ``ValueError`` before anything is sent;
- reads the session's and the environment's settings (proxies, CA bundle) as requests does,
  once per call — a ``collections`` call of many requests reads them at its first;
- turns REST error bodies into :class:`~authkit.errors.ApiError` subclasses
  (see ``_ERROR_CLASSES`` in ``_responses.py``) and transport failures into
  :class:`~authkit.errors.SalesforceConnectionError`;
- logs one DEBUG line on ``authkit.salesforce``: method, path (query values
  elided), status and elapsed milliseconds.  Tokens appear in no log line,
  ``repr`` or exception message.

One client is meant to be shared by every thread of a process: it keeps no
per-request state, its connection pool holds ``pool_maxsize`` connections,
and the auth session is single-flight.

Where each part lives in ``authkit/salesforce/``: the request path (401, retries, budget, usage) in
``_requester.py``, urllib3's retries in ``_retry.py``, answers and errors in ``_responses.py``,
the instance URL check in ``_urls.py``, re-sendable bodies in ``_request_body.py``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, overload

import requests

from authkit.errors import SalesforceConnectionError
from authkit.salesforce import composite as _composite
from authkit.salesforce._oauth import Timeout, _check_timeout
from authkit.salesforce._requester import USER_AGENT, Requester
from authkit.salesforce._responses import ApiUsage, body, discard
from authkit.salesforce._retry import retrying_adapter
from authkit.salesforce._urls import URL_RE, safe_path
from authkit.salesforce.auth import AuthSession
from authkit.salesforce.budget import RequestBudget
from authkit.salesforce.collections import Collections
from authkit.salesforce.query import QueryResult
from authkit.salesforce.sobject import SObject, http_date
from authkit.salesforce.tooling import Tooling

if TYPE_CHECKING:
    from authkit.salesforce.bulk import Bulk

__all__ = ["SalesforceClient", "SObject", "ApiUsage", "QueryResult", "retrying_adapter", "USER_AGENT"]

_VERSION_RE = re.compile(r"^\d{2,3}\.\d$")
_NO_STATUSES: frozenset[int] = frozenset()


class _Default(enum.Enum):
    """Marks an adapter option the caller did not pass (they conflict with ``session=``)."""

    VALUE = 0


_DEFAULT = _Default.VALUE


class SalesforceClient:
    """A thread-safe Salesforce REST client.  See the module docstring.

    ``auth`` is any :class:`~authkit.salesforce.AuthSession`; ``api_version``
    like ``"62.0"``; ``timeout`` seconds or ``(connect, read)``.

    ``session=None`` (the default): the client makes its own
    :class:`requests.Session` with :func:`retrying_adapter` (``retries``,
    ``backoff_factor``, ``max_retry_after``, ``pool_maxsize``) and closes it in
    :meth:`close`.  With your own ``session`` (proxies, TLS client certs, CA
    bundle, custom adapters) the client uses it exactly as configured, never
    mounts anything on it and never closes it; passing the adapter options too is
    a ``ValueError`` — mount :func:`retrying_adapter` on your session instead.

    ``budget``: a :class:`~authkit.salesforce.RequestBudget` shared by the fleet; every request
    sent holds one request of it (see :mod:`authkit.salesforce.budget`).
    """

    def __init__(
        self,
        auth: AuthSession,
        api_version: str = "62.0",
        timeout: Timeout = (10, 60),
        session: requests.Session | None = None,
        *,
        retries: int | _Default | None = _DEFAULT,
        backoff_factor: float | _Default = _DEFAULT,
        max_retry_after: float | _Default = _DEFAULT,
        pool_maxsize: int | _Default = _DEFAULT,
        budget: RequestBudget | None = None,
    ) -> None:
        if not isinstance(auth, AuthSession):
            raise TypeError("auth must be an authkit.salesforce.AuthSession")
        if not isinstance(api_version, str):
            raise TypeError("api_version must be a str such as '62.0'")
        version = api_version[1:] if api_version[:1] in ("v", "V") else api_version
        if not _VERSION_RE.fullmatch(version):
            raise ValueError(f"api_version must look like '62.0', got {api_version!r}")
        _check_timeout(timeout)
        options = {"retries": retries, "backoff_factor": backoff_factor, "max_retry_after": max_retry_after,
                   "pool_maxsize": pool_maxsize}
        given: dict[str, Any] = {name: value for name, value in options.items() if value is not _DEFAULT}
        if session is not None:
            if not isinstance(session, requests.Session):
                raise TypeError("session must be a requests.Session")
            if given:
                raise ValueError(
                    f"{', '.join(sorted(given))} configure the client's own session; with session= mount "
                    "authkit.salesforce.client.retrying_adapter(...) on your session instead"
                )
            self._session = session
            self._owns_session = False
        else:
            adapter = retrying_adapter(**given)
            self._session = requests.Session()
            self._session.mount("https://", adapter)
            self._session.mount("http://", adapter)
            self._owns_session = True
        self._auth = auth
        self._api_version = version
        self._data_path = f"/services/data/v{version}/"
        self._closed = False
        if budget is not None and not isinstance(budget, RequestBudget):
            raise TypeError("budget must be an authkit.salesforce.RequestBudget")
        # UNABLE_TO_LOCK_ROW and 500 are retried by the requester (urllib3 cannot read an error body):
        # the same bound and backoff as the adapter's retries.
        retries_given = given.get("retries", 3)
        self._requester = Requester(auth, self._session, self._data_path, timeout,
                                    0 if retries_given is None else int(retries_given),
                                    float(given.get("backoff_factor", 0.5)), budget)
        self.collections = Collections(self)
        """sObject Collections: many records per request (see :mod:`authkit.salesforce.collections`)."""
        self.tooling = Tooling(self)
        """The Tooling API (see :mod:`authkit.salesforce.tooling`)."""

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"SalesforceClient(auth={self._auth!r}, api_version={self._api_version!r}{state})"

    # -- lifecycle ------------------------------------------------------------------

    def __enter__(self) -> SalesforceClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the client's own session (its pooled connections); a session you passed in stays open.

        A closed client refuses requests with ``ValueError``.  Idempotent.
        """
        self._closed = True
        if self._owns_session:
            self._session.close()

    @property
    def auth(self) -> AuthSession:
        return self._auth

    @property
    def api_version(self) -> str:
        """E.g. ``"62.0"``."""
        return self._api_version

    @property
    def session(self) -> requests.Session:
        """The :class:`requests.Session` requests go through."""
        return self._session

    @property
    def api_usage(self) -> ApiUsage | None:
        """The org's API usage from the last response's ``Sforce-Limit-Info``; ``None`` before any."""
        return self._requester.usage

    # -- requests --------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send one request and return the :class:`requests.Response` (status < 300).

        ``kwargs``: ``params``, ``data``, ``json``, ``files``, ``headers``,
        ``timeout``, ``stream`` as in :mod:`requests`.  Raises
        :class:`~authkit.errors.ApiError` (or a subclass) for an error status,
        :class:`~authkit.errors.SessionExpiredError` when no token is accepted,
        :class:`~authkit.errors.SalesforceConnectionError` when the instance
        cannot be reached, and the auth flow's
        :class:`~authkit.errors.AuthenticationError` when no token can be had.
        Redirects are not followed.
        """
        return self._request(method, path, _NO_STATUSES, **kwargs)

    def _request(
        self, method: str, path: str, accept: frozenset[int], *, idempotent: bool | None = None,
        environment: dict[Any, dict[str, Any]] | None = None, **kwargs: Any
    ) -> requests.Response:
        """:meth:`request`, also returning (not raising) a response whose status is in ``accept``.

        ``idempotent=False`` keeps a GET that has side effects (anonymous Apex) from being resent on a 500.
        ``environment``: see :meth:`_series`.
        """
        if self._closed:
            raise ValueError("SalesforceClient is closed")
        return self._requester.send(method, path, accept, idempotent=idempotent, environment=environment, **kwargs)

    def _series(self) -> Callable[..., Any]:
        """``send(method, path, **kwargs)`` -> the parsed body, for one call made of many requests
        (``collections``): requests' settings from the session and the environment (proxies, CA
        bundle), two scans of ``os.environ`` per request otherwise, are read once for the call."""
        environment: dict[Any, dict[str, Any]] = {}

        def send(method: str, path: str, **kwargs: Any) -> Any:
            return body(self._request(method, path, _NO_STATUSES, environment=environment, **kwargs))

        return send

    def _url(self, path: str) -> str:
        """The full URL for ``path``, or ``ValueError`` if it is not on the instance."""
        return self._requester.url(path)

    def get(self, path: str, params: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """GET ``path``; the parsed JSON body (``None`` when empty)."""
        return body(self.request("GET", path, params=params, **kwargs))

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        """POST ``json`` (or ``data=``) to ``path``; the parsed JSON body (``None`` when empty)."""
        return body(self.request("POST", path, json=json, **kwargs))

    def patch(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        """PATCH ``path``; the parsed JSON body (``None`` for 204)."""
        return body(self.request("PATCH", path, json=json, **kwargs))

    def put(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        """PUT ``path``; the parsed JSON body (``None`` for 204)."""
        return body(self.request("PUT", path, json=json, **kwargs))

    def delete(self, path: str, **kwargs: Any) -> Any:
        """DELETE ``path``; the parsed JSON body (``None`` for 204)."""
        return body(self.request("DELETE", path, **kwargs))

    # -- the data API ------------------------------------------------------------------

    def query(self, soql: str, *, include_deleted: bool = False) -> QueryResult:
        """Every record ``soql`` selects, as a :class:`~authkit.salesforce.query.QueryResult`:
        an iterator fetching one page at a time, with ``.total_size``.

        Nothing is sent until the first record (or ``total_size``) is asked for;
        the next page is fetched (``nextRecordsUrl``) only when the current one is
        used up, and only that page is held, so memory stays flat however many
        records match.  ``sf.query("SELECT COUNT() FROM Account").total_size`` is
        the count.  Put user input in with
        :func:`~authkit.salesforce.format_soql`.  ``include_deleted=True`` uses
        the ``queryAll`` resource: deleted records still in the recycle bin and
        archived records are included (``IsDeleted`` tells them apart) — the
        same as :meth:`query_all`.
        """
        if not isinstance(soql, str):
            raise TypeError("soql must be a str")
        if not soql.strip():
            raise ValueError("soql must not be empty")
        return QueryResult(self.get, "queryAll" if include_deleted else "query", soql)

    def query_all(self, soql: str) -> QueryResult:
        """:meth:`query` through ``queryAll``: deleted and archived records included, still lazy.

        (Not "all pages into a list": :meth:`query` already returns every record;
        wrap either in ``list()`` when you do want them all in memory.)
        """
        return self.query(soql, include_deleted=True)

    @property
    def bulk(self) -> Bulk:
        """Bulk API 2.0 (:mod:`authkit.salesforce.bulk`): ``sf.bulk.insert("Account", rows)``, ``.query(soql)``."""
        from authkit.salesforce.bulk import Bulk

        return Bulk(self)

    def sobject(self, name: str) -> SObject:
        """The record operations of one sObject type: ``sf.sobject("Account").create({...})``."""
        return SObject(self, name)

    def describe(self, if_modified_since: datetime | None = None) -> dict[str, Any] | None:
        """The global describe: every sObject type of the org (``{"sobjects": [...], ...}``).

        With ``if_modified_since`` (an aware datetime) Salesforce answers ``304 Not
        Modified`` when no type changed since, and this returns ``None``.
        """
        return self._describe("sobjects", if_modified_since)

    def _describe(self, path: str, if_modified_since: datetime | None) -> dict[str, Any] | None:
        if if_modified_since is None:
            return dict(self.get(path))
        headers = {"If-Modified-Since": http_date(if_modified_since)}
        response = self._request("GET", path, frozenset({304}), headers=headers)
        if response.status_code == 304:
            discard(response)
            return None
        return dict(body(response))

    def search(self, sosl: str) -> list[dict[str, Any]]:
        """The records a SOSL search finds (its ``searchRecords``).

        Put user input in with :func:`~authkit.salesforce.format_sosl`::

            sf.search(format_sosl("FIND {{{}}} IN NAME FIELDS RETURNING Account(Id, Name)", term))
        """
        if not isinstance(sosl, str):
            raise TypeError("sosl must be a str")
        if not sosl.strip():
            raise ValueError("sosl must not be empty")
        return _search_records(self.get("search", params={"q": sosl}))

    def parameterized_search(self, q: str, **options: Any) -> list[dict[str, Any]]:
        """A search without SOSL syntax (``POST parameterizedSearch``): the ``searchRecords``.

        ``q`` is the plain search text (Salesforce escapes it); ``options`` are the
        request body's fields in snake_case: ``sobjects=[{"name": "Account",
        "fields": ["Id", "Name"]}]``, ``fields=["Id"]``, ``overall_limit=100``,
        ``default_limit=10``, ``in_="NAME"`` (``in``), ``offset=``,
        ``spell_correction=``, ``updateable=``, ``data_categories=``,
        ``division=``, ``network_ids=``, ``order_by=``, ``pricebook_id=``,
        ``snippet=``, ``metadata=``.  Values go in Salesforce's own shape.
        """
        if not isinstance(q, str):
            raise TypeError("q must be a str")
        if len(q.strip()) < 2:
            raise ValueError("q must have at least two characters")
        body: dict[str, Any] = {"q": q}
        for name, value in options.items():
            body[_search_option(name)] = value
        return _search_records(self.post("parameterizedSearch", json=body))

    @overload
    def download(self, path: str, file: None = None, *, chunk_size: int = ...) -> bytes: ...

    @overload
    def download(self, path: str, file: IO[bytes], *, chunk_size: int = ...) -> int: ...

    def download(self, path: str, file: IO[bytes] | None = None, *, chunk_size: int = 64 * 1024) -> bytes | int:
        """Stream a binary resource to ``file`` and return the number of bytes written, or
        return the bytes when ``file`` is None::

            with open("log.csv", "wb") as out:
                sf.download(f"sobjects/EventLogFile/{log_id}/LogFile", out)
            data = sf.download(f"sobjects/ContentVersion/{version_id}/VersionData")

        With a file, memory stays at one ``chunk_size`` however large the body.
        """
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
            raise ValueError("chunk_size must be an int >= 1")
        if file is not None and not hasattr(file, "write"):
            raise TypeError("file must be a binary file object (opened with 'wb')")
        response = self.request("GET", path, stream=True)
        try:
            if file is None:
                return response.content
            written = 0
            try:
                for chunk in response.iter_content(chunk_size):
                    file.write(chunk)
                    written += len(chunk)
            except requests.RequestException as exc:
                raise SalesforceConnectionError(
                    f"GET {safe_path(response.url)} failed mid-body: {type(exc).__name__}") from exc
            return written
        finally:
            response.close()

    def apex(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call an Apex REST resource under ``/services/apexrest/``: parsed JSON (or text) back.

        ``sf.apex("POST", "orders/submit", json={...})``; ``kwargs`` as for :meth:`request`.
        """
        if not isinstance(path, str):
            raise TypeError("path must be a str")
        if URL_RE.match(path) or path.startswith("/services/"):
            raise ValueError("apex() takes the path under /services/apexrest/, e.g. 'orders/submit'")
        return body(self.request(method, "/services/apexrest/" + path.lstrip("/"), **kwargs))

    def composite(
        self, requests: Iterable[Mapping[str, Any]], all_or_none: bool = False, collate_subrequests: bool = False
    ) -> list[dict[str, Any]]:
        """Up to 25 subrequests in one round trip; the ``compositeResponse`` list.

        Each subrequest is ``{"method", "url", "referenceId", "body"?}``; a later one
        may use an earlier result as ``@{referenceId.id}``.  ``url`` may be relative
        (``"sobjects/Account"``) like any path here.  Subrequest failures do not
        raise: read each item's ``httpStatusCode``.  ``all_or_none=True`` rolls
        everything back if one fails; ``collate_subrequests=True`` lets Salesforce
        run independent subrequests together.  See :mod:`authkit.salesforce.composite`.
        """
        return _composite.composite(self, requests, all_or_none, collate_subrequests)

    def composite_batch(
        self, requests: Iterable[Mapping[str, Any]], halt_on_error: bool = False
    ) -> list[dict[str, Any]]:
        """Up to 25 independent subrequests (``{"method", "url", "richInput"?}``) in one round trip;
        the ``results`` list (``{"statusCode", "result"}`` each)."""
        return _composite.composite_batch(self, requests, halt_on_error)

    def composite_tree(self, sobject: str, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Create up to 200 records with their children in one all-or-nothing request;
        the ``results`` list (``{"referenceId", "id"}``, or ``{"referenceId", "errors"}`` when it failed)."""
        return _composite.composite_tree(self, sobject, records)

    def composite_graph(self, graphs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Several composite graphs (``{"graphId", "compositeRequest"}``), each all-or-nothing,
        in one request; the ``graphs`` list (``{"graphId", "graphResponse", "isSuccessful"}``)."""
        return _composite.composite_graph(self, graphs)

    def limits(self) -> dict[str, Any]:
        """The org's limits: ``{"DailyApiRequests": {"Max": ..., "Remaining": ...}, ...}``."""
        return dict(self.get("limits"))

    def versions(self) -> list[dict[str, Any]]:
        """The API versions the instance serves: ``[{"version": "62.0", "label": ..., "url": ...}, ...]``."""
        return list(self.get("/services/data/"))


_SEARCH_OPTIONS = {"in_": "in", "network_ids": "netWorkIds"}


def _search_option(name: str) -> str:
    """A parameterizedSearch body field from its snake_case name (``overall_limit`` -> ``overallLimit``)."""
    if name in _SEARCH_OPTIONS:
        return _SEARCH_OPTIONS[name]
    if name == "q":
        raise TypeError("q is the first argument, not an option")
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _search_records(answer: Any) -> list[dict[str, Any]]:
    # API versions before 36.0 answered a bare list.
    records = answer.get("searchRecords", []) if isinstance(answer, dict) else answer or []
    return [dict(r) for r in records]
