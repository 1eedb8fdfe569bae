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
- turns REST error bodies into :class:`~authkit.errors.ApiError` subclasses
  (see ``_ERROR_CLASSES``) and transport failures into
  :class:`~authkit.errors.SalesforceConnectionError`;
- logs one DEBUG line on ``authkit.salesforce``: method, path (query values
  elided), status and elapsed milliseconds.  Tokens appear in no log line,
  ``repr`` or exception message.

One client is meant to be shared by every thread of a process: it keeps no
per-request state, its connection pool holds ``pool_maxsize`` connections,
and the auth session is single-flight.
"""

from __future__ import annotations

import contextlib
import enum
import io
import logging
import random
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, overload
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from authkit import __version__
from authkit.errors import (
    ApiError,
    DuplicateValueError,
    InsufficientAccessError,
    InvalidFieldError,
    MalformedQueryError,
    RequestLimitError,
    ResourceNotFoundError,
    SalesforceConnectionError,
    SessionExpiredError,
)
from authkit.salesforce import composite as _composite
from authkit.salesforce import events
from authkit.salesforce._oauth import Timeout, _check_timeout
from authkit.salesforce.auth import AuthSession
from authkit.salesforce.budget import RequestBudget
from authkit.salesforce.collections import Collections
from authkit.salesforce.query import QueryResult
from authkit.salesforce.sobject import SObject, http_date
from authkit.salesforce.tooling import Tooling

if TYPE_CHECKING:
    from authkit.salesforce.bulk import Bulk

__all__ = ["SalesforceClient", "SObject", "ApiUsage", "QueryResult", "retrying_adapter", "USER_AGENT"]

logger = logging.getLogger("authkit.salesforce")

#: Salesforce ``errorCode`` -> the exception raised for it.  Codes not listed fall back
#: to ``_STATUS_CLASSES`` by HTTP status, then to :class:`ApiError`.
_ERROR_CLASSES: dict[str, type[ApiError]] = {
    "REQUEST_LIMIT_EXCEEDED": RequestLimitError,
    "NOT_FOUND": ResourceNotFoundError,
    "ENTITY_IS_DELETED": ResourceNotFoundError,
    "DUPLICATE_VALUE": DuplicateValueError,
    "DUPLICATES_DETECTED": DuplicateValueError,
    "MALFORMED_QUERY": MalformedQueryError,
    "MALFORMED_SEARCH": MalformedQueryError,
    "INVALID_QUERY_FILTER_OPERATOR": MalformedQueryError,
    "INVALID_FIELD": InvalidFieldError,
    "INVALID_FIELD_FOR_INSERT_UPDATE": InvalidFieldError,
    "INSUFFICIENT_ACCESS": InsufficientAccessError,
    "INSUFFICIENT_ACCESS_OR_READONLY": InsufficientAccessError,
    "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY": InsufficientAccessError,
}
_STATUS_CLASSES: dict[int, type[ApiError]] = {404: ResourceNotFoundError, 429: RequestLimitError}

_METHODS = frozenset({"GET", "POST", "PATCH", "PUT", "DELETE", "HEAD", "OPTIONS"})
_REQUEST_OPTIONS = frozenset({"params", "data", "json", "files", "headers", "timeout", "stream"})
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_VERSION_RE = re.compile(r"^\d{2,3}\.\d$")
#: Methods safe to send twice: a 500 on them is retried (a POST or PATCH that got a 500 may have been applied).
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
#: Salesforce did not apply a write that failed with these: resending is safe whatever the method.
_RETRY_CODES = frozenset({"UNABLE_TO_LOCK_ROW"})
_MAX_BACKOFF = 30.0
USER_AGENT = f"authkit/{__version__} python-requests/{requests.__version__}"
_NO_STATUSES: frozenset[int] = frozenset()
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class _Default(enum.Enum):
    """Marks an adapter option the caller did not pass (they conflict with ``session=``)."""

    VALUE = 0


_DEFAULT = _Default.VALUE


# -- transient failures: urllib3's Retry, with a ceiling on Retry-After ------------------


class _Retry(Retry):
    """:class:`~urllib3.util.Retry` that gives up, instead of sleeping, when the server
    asks to wait longer than ``max_retry_after`` seconds (the 429/503 reaches the caller
    as an :class:`~authkit.errors.ApiError` at once)."""

    def __init__(self, *args: Any, max_retry_after: float = 60.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_retry_after = max_retry_after

    def new(self, **kw: Any) -> _Retry:
        kw.setdefault("max_retry_after", self.max_retry_after)
        return super().new(**kw)

    def increment(self, method: str | None = None, url: str | None = None, *args: Any, **kwargs: Any) -> _Retry:
        response = kwargs.get("response")
        header = response.headers.get("Retry-After") if response is not None else None
        if header and self.respect_retry_after_header:
            try:
                wait = self.parse_retry_after(header)
            except Exception:  # an unparsable header: urllib3 raises its own error type
                wait = None
            if wait is not None and wait > self.max_retry_after:
                raise MaxRetryError(kwargs.get("_pool"), url or "", None)  # type: ignore[arg-type]
        retry = super().increment(method, url, *args, **kwargs)
        # Reached only when urllib3 will send again (it raised otherwise): report the retry.
        error = kwargs.get("error")
        events.emit(events.TRANSIENT_RETRY, method=method, path=_safe_path(url or ""),
                    status=response.status if response is not None else None,
                    error_code=type(error).__name__ if error is not None else None,
                    attempt=len(retry.history), delay=retry.get_backoff_time(), source="adapter")
        return retry


def retrying_adapter(
    retries: int | None = 3,
    *,
    backoff_factor: float = 0.5,
    max_retry_after: float = 60.0,
    pool_maxsize: int = 32,
) -> HTTPAdapter:
    """The pooled, retrying :class:`~requests.adapters.HTTPAdapter` the client mounts on its
    own session — mount it on yours to get the same behaviour with ``session=``::

        session = requests.Session()
        session.proxies = {"https": "http://proxy:3128"}
        session.mount("https://", retrying_adapter(retries=5))
        sf = SalesforceClient(auth, session=session)

    ``retries`` bounds the attempts after the first (``0``/``None``: no retries);
    the waits are ``backoff_factor * 2**n`` seconds (at most 30), or ``Retry-After``
    when the server sends it and it is at most ``max_retry_after`` seconds.
    """
    if retries is None:
        retries = 0
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ValueError("retries must be an int >= 0 or None")
    for name, value in (("backoff_factor", backoff_factor), ("max_retry_after", max_retry_after)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a number of seconds >= 0")
    if not isinstance(pool_maxsize, int) or isinstance(pool_maxsize, bool) or pool_maxsize < 1:
        raise ValueError("pool_maxsize must be an int >= 1")
    retry = _Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        allowed_methods=Retry.DEFAULT_ALLOWED_METHODS,  # idempotent only; unsent requests retry for all
        status_forcelist=_RETRY_STATUSES,
        backoff_factor=backoff_factor,
        backoff_max=30.0,
        raise_on_status=False,  # the last 5xx/429 comes back as a response -> ApiError
        respect_retry_after_header=True,
        max_retry_after=max_retry_after,
    )
    return HTTPAdapter(pool_connections=4, pool_maxsize=pool_maxsize, max_retries=retry)


# -- API usage ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiUsage:
    """The org's API usage from the last ``Sforce-Limit-Info`` header.

    ``used``/``limit`` are the org's daily API requests (``api-usage=25/15000``);
    ``app_used``/``app_limit``/``app_name`` the connected app's share when the org
    reports it (``per-app-api-usage=17/250(appName=etl)``), else ``None``.
    """

    used: int
    limit: int
    app_used: int | None = None
    app_limit: int | None = None
    app_name: str | None = None

    @property
    def remaining(self) -> int:
        """Daily API requests left for the org."""
        return max(self.limit - self.used, 0)


_USAGE_RE = re.compile(r"(?:^|[\s;,])api-usage=(\d+)/(\d+)")
_APP_USAGE_RE = re.compile(r"per-app-api-usage=(\d+)/(\d+)(?:\(appName=([^)]*)\))?")


def _parse_usage(header: str) -> ApiUsage | None:
    org = _USAGE_RE.search(header)
    if org is None:
        return None
    app = _APP_USAGE_RE.search(header)
    if app is None:
        return ApiUsage(int(org.group(1)), int(org.group(2)))
    return ApiUsage(int(org.group(1)), int(org.group(2)), int(app.group(1)), int(app.group(2)), app.group(3))


# -- the client -------------------------------------------------------------------------------


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
        if not _VERSION_RE.match(version):
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
        self._timeout = timeout
        self._closed = False
        self._limit_info: tuple[str, ApiUsage | None] | None = None
        if budget is not None and not isinstance(budget, RequestBudget):
            raise TypeError("budget must be an authkit.salesforce.RequestBudget")
        self._budget = budget  # every send holds one request of it (see authkit.salesforce.budget)
        # UNABLE_TO_LOCK_ROW and 500 are retried here (urllib3 cannot read an error body):
        # the same bound and backoff as the adapter's retries.
        retries_given = given.get("retries", 3)
        self._retries: int = 0 if retries_given is None else int(retries_given)
        self._backoff: float = float(given.get("backoff_factor", 0.5))
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
        info = self._limit_info
        return info[1] if info is not None else None

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
        self, method: str, path: str, accept: frozenset[int], *, idempotent: bool | None = None, **kwargs: Any
    ) -> requests.Response:
        """:meth:`request`, also returning (not raising) a response whose status is in ``accept``.

        ``idempotent=False`` keeps a GET that has side effects (anonymous Apex) from being resent on a 500.
        """
        if self._closed:
            raise ValueError("SalesforceClient is closed")
        if not isinstance(method, str) or not isinstance(path, str):
            raise TypeError("method and path must be str")
        method = method.upper()
        if method not in _METHODS:
            raise ValueError(f"unsupported HTTP method {method!r}")
        unknown = set(kwargs) - _REQUEST_OPTIONS
        if unknown:
            raise TypeError(f"unexpected request option(s): {', '.join(sorted(unknown))}")
        token = self._auth.access_token()
        url = self._url(path)
        data = _replayable(kwargs.get("data"))
        # A seekable file body is streamed; remember where it starts so a retry re-sends all of it.
        body_start = data.tell() if hasattr(data, "read") else None
        headers = {"User-Agent": USER_AGENT}
        if kwargs.get("headers"):
            headers.update(kwargs["headers"])
        prepared = self._session.prepare_request(requests.Request(
            method, url, params=kwargs.get("params"), data=data, json=kwargs.get("json"),
            files=kwargs.get("files"), headers=headers,
        ))
        settings: dict[str, Any] = dict(
            self._session.merge_environment_settings(prepared.url, {}, kwargs.get("stream"), None, None)
        )
        settings["timeout"] = kwargs.get("timeout", self._timeout)
        settings["allow_redirects"] = False  # never carry the bearer token anywhere else
        safe = _safe_path(prepared.url or url)
        if idempotent is None:
            idempotent = method in _IDEMPOTENT

        attempt = 0
        while True:
            response, token, prepared, url = self._authorized(
                prepared, token, settings, method, safe, path, url, data, body_start, kwargs.get("params"))
            if response.status_code < 300 or response.status_code in accept:
                return response
            error = _api_error(response)
            transient = error.error_code in _RETRY_CODES or (response.status_code == 500 and idempotent)
            if not transient or attempt >= self._retries:
                raise error
            attempt += 1
            delay = min(self._backoff * 2 ** (attempt - 1), _MAX_BACKOFF) * random.uniform(0.5, 1.5)
            events.emit(events.TRANSIENT_RETRY, method=method, path=safe, status=response.status_code,
                        error_code=error.error_code, attempt=attempt, delay=delay, source="client")
            logger.debug("%s %s: %s, retrying in %.2f s", method, safe, error.error_code or response.status_code,
                         delay)
            if delay > 0:
                time.sleep(delay)
            if body_start is not None:
                data.seek(body_start)
            prepared = prepared.copy()
            token = self._auth.access_token()

    def _authorized(
        self, prepared: requests.PreparedRequest, token: str, settings: dict[str, Any], method: str, safe: str,
        path: str, url: str, data: Any, body_start: int | None, params: Any,
    ) -> tuple[requests.Response, str, requests.PreparedRequest, str]:
        """Send once; on a 401 invalidate ``token`` and send once more with a new one.

        Returns the response and the token, request and URL that got it (a retry may change them)."""
        response = self._send(prepared, token, settings, method, safe)
        if response.status_code != 401:
            return response, token, prepared, url
        _discard(response)
        self._auth.invalidate(token)
        fresh = self._auth.access_token()
        if fresh == token:
            raise SessionExpiredError(
                f"{method} {safe}: 401 INVALID_SESSION_ID and the auth session has no new token "
                f"({type(self._auth).__name__} cannot refresh)"
            )
        events.emit(events.UNAUTHORIZED_RETRY, method=method, path=safe)
        if body_start is not None:
            data.seek(body_start)
        retry = prepared.copy()
        new_url = self._url(path)
        if new_url != url:  # the new token belongs to another instance (org migration, My Domain change)
            retry.prepare_url(new_url, params)
        response = self._send(retry, fresh, settings, method, safe)
        if response.status_code == 401:
            _discard(response)
            raise SessionExpiredError(f"{method} {safe}: 401 INVALID_SESSION_ID again with a new token")
        return response, fresh, retry, new_url

    def _send(
        self, prepared: requests.PreparedRequest, token: str, settings: dict[str, Any], method: str, safe: str
    ) -> requests.Response:
        prepared.headers["Authorization"] = f"Bearer {token}"
        started = time.perf_counter()
        try:
            with self._budget.acquire() if self._budget is not None else contextlib.nullcontext():
                response = self._session.send(prepared, **settings)
        except requests.RequestException as exc:
            logger.debug("%s %s -> %s (%.1f ms)", method, safe, type(exc).__name__,
                         (time.perf_counter() - started) * 1000)
            raise SalesforceConnectionError(f"{method} {safe} failed: {type(exc).__name__}") from exc
        finally:
            # The prepared request may outlive this call (response.request, a debugger): drop the token.
            prepared.headers.pop("Authorization", None)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s -> %d (%.1f ms)", method, safe, response.status_code,
                         (time.perf_counter() - started) * 1000)
        header = response.headers.get("Sforce-Limit-Info")
        if header:
            info = self._limit_info
            if info is None or info[0] != header:
                usage = _parse_usage(header)
                self._limit_info = (header, usage)
                if usage is not None:
                    events.emit(events.API_USAGE, used=usage.used, limit=usage.limit, app_used=usage.app_used,
                                app_limit=usage.app_limit, app_name=usage.app_name)
        return response

    def _url(self, path: str) -> str:
        """The full URL for ``path``, or ``ValueError`` if it is not on the instance."""
        instance = self._auth.instance_url.rstrip("/")
        if _URL_RE.match(path):
            if _origin(path) != _origin(instance) or "@" in urlsplit(path).netloc:
                raise ValueError(
                    f"refusing to send the bearer token to {urlsplit(path).scheme}://{urlsplit(path).netloc}: "
                    f"only URLs on the instance {instance} are allowed"
                )
            return path
        if path.startswith("/"):
            return instance + path
        if not path:
            raise ValueError("path must not be empty")
        return instance + self._data_path + path

    def get(self, path: str, params: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """GET ``path``; the parsed JSON body (``None`` when empty)."""
        return _body(self.request("GET", path, params=params, **kwargs))

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        """POST ``json`` (or ``data=``) to ``path``; the parsed JSON body (``None`` when empty)."""
        return _body(self.request("POST", path, json=json, **kwargs))

    def patch(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        """PATCH ``path``; the parsed JSON body (``None`` for 204)."""
        return _body(self.request("PATCH", path, json=json, **kwargs))

    def put(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        """PUT ``path``; the parsed JSON body (``None`` for 204)."""
        return _body(self.request("PUT", path, json=json, **kwargs))

    def delete(self, path: str, **kwargs: Any) -> Any:
        """DELETE ``path``; the parsed JSON body (``None`` for 204)."""
        return _body(self.request("DELETE", path, **kwargs))

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
            _discard(response)
            return None
        return dict(_body(response))

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
                    f"GET {_safe_path(response.url)} failed mid-body: {type(exc).__name__}") from exc
            return written
        finally:
            response.close()

    def apex(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call an Apex REST resource under ``/services/apexrest/``: parsed JSON (or text) back.

        ``sf.apex("POST", "orders/submit", json={...})``; ``kwargs`` as for :meth:`request`.
        """
        if not isinstance(path, str):
            raise TypeError("path must be a str")
        if _URL_RE.match(path) or path.startswith("/services/"):
            raise ValueError("apex() takes the path under /services/apexrest/, e.g. 'orders/submit'")
        return _body(self.request(method, "/services/apexrest/" + path.lstrip("/"), **kwargs))

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


# -- helpers ----------------------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        raise ValueError("invalid port in URL") from None
    return scheme, (parts.hostname or "").lower(), port if port is not None else _DEFAULT_PORTS.get(scheme)


def _safe_path(url: str) -> str:
    """The path with query values elided, for logs and messages (a SOQL filter may hold personal data)."""
    parts = urlsplit(url)
    if not parts.query:
        return parts.path
    names = [pair.partition("=")[0] for pair in parts.query.split("&") if pair]
    return parts.path + "?" + "&".join(f"{name}=..." for name in names)


def _replayable(data: Any) -> Any:
    """``data`` as something that can be sent twice: a one-shot stream is read into memory now.

    Bytes, str, dicts and lists are encoded by requests on each prepare; a seekable
    file is rewound by the caller.  A generator or a pipe cannot be rewound, and
    sending it half on a retry would corrupt the record, so it is buffered.
    """
    if data is None or isinstance(data, (bytes, bytearray, str, Mapping, list, tuple)):
        return data
    if hasattr(data, "read"):
        try:
            seekable = bool(data.seekable()) if hasattr(data, "seekable") else False
            if seekable:
                data.tell()
        except (OSError, ValueError, io.UnsupportedOperation):
            seekable = False
        if seekable:
            return data
        content = data.read()
        return content.encode("utf-8") if isinstance(content, str) else bytes(content)
    if isinstance(data, Iterable):
        chunks = [c.encode("utf-8") if isinstance(c, str) else bytes(c) for c in data]
        return b"".join(chunks)
    raise TypeError(f"data must be bytes, str, a mapping, a file or an iterable of bytes, not {type(data).__name__}")


def _discard(response: requests.Response) -> None:
    """Read and release a response we will not return, so its connection goes back to the pool."""
    try:
        _ = response.content
    except requests.RequestException:
        pass
    response.close()


def _body(response: requests.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text  # an Apex REST resource may answer text


def _api_error(response: requests.Response) -> ApiError:
    """The :class:`ApiError` subclass for a REST error answer (a list or one object of errors)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    item = body[0] if isinstance(body, list) and body and isinstance(body[0], dict) else body
    status = response.status_code
    if isinstance(item, dict) and ("errorCode" in item or "message" in item):
        code = item.get("errorCode")
        message = str(item.get("message") or "")
        fields = [str(f) for f in item.get("fields") or []]
    elif status == 300:  # an upsert matched several records: the body lists their URLs
        code, fields = "MULTIPLE_CHOICES", []
        message = f"more than one record matches: {', '.join(str(u) for u in body or [])}"
    else:
        code, fields = None, []
        message = response.reason or f"HTTP {status}"
    cls = _ERROR_CLASSES.get(code or "") or _STATUS_CLASSES.get(status, ApiError)
    return cls(message, status_code=status, error_code=code, fields=fields, response=response)


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
