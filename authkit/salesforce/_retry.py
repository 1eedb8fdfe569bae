"""Transient failures (connection errors, 429, 502/503/504) retried by urllib3 on the session's
adapter: :func:`retrying_adapter`, and the :class:`~urllib3.util.Retry` under it, which gives up
instead of sleeping when ``Retry-After`` asks for more than ``max_retry_after`` seconds.
"""

from __future__ import annotations

from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from authkit.salesforce import events
from authkit.salesforce._urls import safe_path

__all__ = ["retrying_adapter"]

_RETRY_STATUSES = frozenset({429, 502, 503, 504})


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
        events.emit(events.TRANSIENT_RETRY, method=method, path=safe_path(url or ""),
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
