"""Failures a test injects into :class:`~authkit.testing.FakeSalesforce`: REST errors, token endpoint
errors (any status and body), and token requests read but never answered.

::

    org.inject_error(503, "SERVER_UNAVAILABLE", count=2)   # the next two REST calls fail
    org.drop_token_connections()                            # the next token request gets no answer
    assert org.pending_injected_errors == 3
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

__all__ = ["FaultInjection", "Injected", "take"]


@dataclass
class Injected:
    """One injected answer, served ``count`` more times (to requests under ``path_prefix``, if set)."""

    status: int
    body: bytes
    headers: dict[str, str]
    count: int
    path_prefix: str | None = None


class FaultInjection:
    """The injected failures of an org (:class:`~authkit.testing.FakeSalesforce` is one), guarded by
    the org's ``_mutex``."""

    _mutex: threading.RLock

    def __init__(self) -> None:
        self._injected: list[Injected] = []
        self._token_injected: list[Injected] = []
        self._drop_token_connections = 0

    def inject_error(
        self,
        status: int,
        error_code: str,
        message: str = "injected error",
        count: int = 1,
        path_prefix: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``count`` REST requests (under ``path_prefix``, if given) with this error."""
        body = json.dumps([{"message": message, "errorCode": error_code, "fields": []}]).encode()
        with self._mutex:
            self._injected.append(Injected(status, body, dict(headers or {}), count, path_prefix))

    def inject_token_error(
        self,
        status: int,
        error: str | None = None,
        error_description: str = "",
        count: int = 1,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> None:
        """Answer the next ``count`` token requests with ``status`` and an OAuth error body.

        With ``error=None`` the body is ``body`` (default empty), e.g. a 503
        from a load balancer or a 302 to a login page.
        """
        if error is not None:
            body = json.dumps({"error": error, "error_description": error_description}).encode()
        with self._mutex:
            self._token_injected.append(Injected(status, body or b"", dict(headers or {}), count))

    def drop_token_connections(self, count: int = 1) -> None:
        """Read the next ``count`` token requests, then close the connection without answering.

        The request has reached the server (a refresh token may be spent), as
        when a proxy times out or a connection resets mid-response.
        """
        with self._mutex:
            self._drop_token_connections += count

    def clear_injected_errors(self) -> int:
        """Forget every error and dropped connection injected but not served yet; return how many.

        For a test that injected more failures than its code consumed (a retry
        it expected did not happen), before the next step of the test.
        """
        with self._mutex:
            pending = self.pending_injected_errors
            self._injected.clear()
            self._token_injected.clear()
            self._drop_token_connections = 0
        return pending

    @property
    def pending_injected_errors(self) -> int:
        """How many injected errors and dropped connections are still to be served."""
        with self._mutex:
            return (sum(i.count for i in self._injected) + sum(i.count for i in self._token_injected)
                    + self._drop_token_connections)


def take(queue: list[Injected], path: str) -> Injected | None:
    """Consume one use of the first injected answer that applies to ``path`` (caller holds the lock)."""
    for item in queue:
        if item.path_prefix is None or path.startswith(item.path_prefix):
            item.count -= 1
            if item.count <= 0:
                queue.remove(item)
            return item
    return None
