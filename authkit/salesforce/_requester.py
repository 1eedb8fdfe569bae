"""One request to the instance, start to end, as :mod:`authkit.salesforce.client` describes it: the URL
checked against the instance, the bearer token, one resend with a new token after a ``401``, resends
after ``UNABLE_TO_LOCK_ROW`` (and a ``500`` on an idempotent method) with jittered backoff, the
fleet's request budget, the ``Sforce-Limit-Info`` usage and one DEBUG line per send.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from typing import Any
from urllib.parse import urlsplit

import requests

from authkit import __version__
from authkit.errors import SalesforceConnectionError, SessionExpiredError
from authkit.salesforce import events
from authkit.salesforce._oauth import Timeout
from authkit.salesforce._request_body import replayable
from authkit.salesforce._responses import ApiUsage, api_error, discard, parse_usage
from authkit.salesforce._urls import URL_RE, origin, safe_path
from authkit.salesforce.auth import AuthSession
from authkit.salesforce.budget import RequestBudget

__all__ = ["Requester", "USER_AGENT"]

logger = logging.getLogger("authkit.salesforce")

_METHODS = frozenset({"GET", "POST", "PATCH", "PUT", "DELETE", "HEAD", "OPTIONS"})
_REQUEST_OPTIONS = frozenset({"params", "data", "json", "files", "headers", "timeout", "stream"})
#: Methods safe to send twice: a 500 on them is retried (a POST or PATCH that got a 500 may have been applied).
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
#: Salesforce did not apply a write that failed with these: resending is safe whatever the method.
_RETRY_CODES = frozenset({"UNABLE_TO_LOCK_ROW"})
_MAX_BACKOFF = 30.0
USER_AGENT = f"authkit/{__version__} python-requests/{requests.__version__}"
#: ``json=`` bodies: compact (the same JSON in fewer bytes for both ends to handle), NaN and
#: infinities refused as requests refuses them.  No circular check: it costs as much as the
#: encoding itself, and a circular value still fails, as a RecursionError (see :func:`_json_body`).
_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False)


class Requester:
    """Sends the client's requests (one per :class:`~authkit.salesforce.SalesforceClient`; shared by
    its threads, it keeps no per-request state).

    ``retries``/``backoff`` bound the resends it makes itself (urllib3 cannot read an error body,
    so ``UNABLE_TO_LOCK_ROW`` and ``500`` are retried here, with the adapter's bound and backoff).
    """

    def __init__(self, auth: AuthSession, session: requests.Session, data_path: str, timeout: Timeout,
                 retries: int, backoff: float, budget: RequestBudget | None) -> None:
        self._auth = auth
        self._session = session
        self._data_path = data_path
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._budget = budget  # every send holds one request of it (see authkit.salesforce.budget)
        self._limit_info: tuple[str, ApiUsage | None] | None = None

    @property
    def usage(self) -> ApiUsage | None:
        """The org's API usage from the last response's ``Sforce-Limit-Info``; ``None`` before any."""
        info = self._limit_info
        return info[1] if info is not None else None

    def send(
        self, method: str, path: str, accept: frozenset[int], *, idempotent: bool | None = None,
        environment: dict[tuple[str, Any], dict[str, Any]] | None = None, **kwargs: Any
    ) -> requests.Response:
        """The response (status < 300 or in ``accept``), or the error it raises.

        ``idempotent=False`` keeps a GET that has side effects (anonymous Apex) from being resent on a 500.
        ``environment``: a dict the caller keeps for the requests of one call (``collections``):
        requests' settings from the session and the environment (proxies, CA bundle) are read on
        the first request to an instance and reused from it by the next ones.
        """
        if not isinstance(method, str) or not isinstance(path, str):
            raise TypeError("method and path must be str")
        method = method.upper()
        if method not in _METHODS:
            raise ValueError(f"unsupported HTTP method {method!r}")
        unknown = set(kwargs) - _REQUEST_OPTIONS
        if unknown:
            raise TypeError(f"unexpected request option(s): {', '.join(sorted(unknown))}")
        token = self._auth.access_token()
        url = self.url(path)
        data = replayable(kwargs.get("data"))
        # A seekable file body is streamed; remember where it starts so a retry re-sends all of it.
        body_start = data.tell() if hasattr(data, "read") else None
        headers = {"User-Agent": USER_AGENT}
        if kwargs.get("headers"):
            headers.update(kwargs["headers"])
        files = kwargs.get("files")
        if not data and not files and kwargs.get("json") is not None:  # when requests would encode json=
            data = _json_body(kwargs["json"])
            if not any(name.lower() == "content-type" for name in headers) \
                    and "content-type" not in self._session.headers:
                headers["Content-Type"] = "application/json"
        prepared = self._session.prepare_request(requests.Request(
            method, url, params=kwargs.get("params"), data=data, files=files, headers=headers,
            # The bearer token replaces any Authorization: without an auth of its own, the session
            # would look up ~/.netrc for one on every request, only for it to be overwritten.
            auth=_keep if self._session.auth is None else None,
        ))
        settings = {**self._environment(prepared.url or url, kwargs.get("stream"), environment)}
        settings["timeout"] = kwargs.get("timeout", self._timeout)
        settings["allow_redirects"] = False  # never carry the bearer token anywhere else
        safe = safe_path(prepared.url or url)
        if idempotent is None:
            idempotent = method in _IDEMPOTENT

        attempt = 0
        while True:
            response, token, prepared, url = self._authorized(
                prepared, token, settings, method, safe, path, url, data, body_start, kwargs.get("params"))
            if response.status_code < 300 or response.status_code in accept:
                return response
            error = api_error(response)
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

    def _environment(
        self, url: str, stream: Any, environment: dict[tuple[str, Any], dict[str, Any]] | None
    ) -> dict[str, Any]:
        """requests' send settings for ``url`` (``proxies``, ``verify``, ``cert``, ``stream``) from the
        session and, with ``trust_env``, the environment — two scans of ``os.environ`` each time,
        so a call of many requests keeps them in ``environment`` (keyed by the URL's origin)."""
        if environment is None:
            return dict(self._session.merge_environment_settings(url, {}, stream, None, None))
        key = ("/".join(url.split("/", 3)[:3]), stream)  # "scheme://host:port"
        settings = environment.get(key)
        if settings is None:
            settings = environment[key] = dict(self._session.merge_environment_settings(url, {}, stream, None, None))
        return settings

    def _authorized(
        self, prepared: requests.PreparedRequest, token: str, settings: dict[str, Any], method: str, safe: str,
        path: str, url: str, data: Any, body_start: int | None, params: Any,
    ) -> tuple[requests.Response, str, requests.PreparedRequest, str]:
        """Send once; on a 401 invalidate ``token`` and send once more with a new one.

        Returns the response and the token, request and URL that got it (a retry may change them)."""
        response = self._send(prepared, token, settings, method, safe)
        if response.status_code != 401:
            return response, token, prepared, url
        discard(response)
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
        new_url = self.url(path)
        if new_url != url:  # the new token belongs to another instance (org migration, My Domain change)
            retry.prepare_url(new_url, params)
        response = self._send(retry, fresh, settings, method, safe)
        if response.status_code == 401:
            discard(response)
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
                usage = parse_usage(header)
                self._limit_info = (header, usage)
                if usage is not None:
                    events.emit(events.API_USAGE, used=usage.used, limit=usage.limit, app_used=usage.app_used,
                                app_limit=usage.app_limit, app_name=usage.app_name)
        return response

    def url(self, path: str) -> str:
        """The full URL for ``path``, or ``ValueError`` if it is not on the instance."""
        instance = self._auth.instance_url.rstrip("/")
        if URL_RE.match(path):
            if origin(path) != origin(instance) or "@" in urlsplit(path).netloc:
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


def _json_body(value: Any) -> bytes:
    """``value`` as a JSON request body; ``ValueError``/``TypeError`` for what JSON cannot hold."""
    try:
        return _JSON.encode(value).encode("ascii")  # ensure_ascii (the default): the text is ASCII
    except RecursionError:
        raise ValueError("json= refers to itself or is nested too deeply to send") from None


def _keep(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """An auth that changes nothing (the bearer token is set on each send)."""
    return request
