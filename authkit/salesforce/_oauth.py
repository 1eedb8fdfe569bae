"""Salesforce's OAuth token endpoint: one POST, done carefully.

:class:`TokenEndpoint` posts a grant to ``<login host>/services/oauth2/token``
with a timeout, never follows a redirect, turns every refusal into an
:class:`~authkit.errors.AuthenticationError` carrying Salesforce's ``error`` /
``error_description``, verifies the response ``signature`` when the client
secret is known, and retries transient failures with bounded backoff — but
only for grants that may safely be sent twice::

    endpoint = TokenEndpoint("https://login.salesforce.com")
    response = endpoint.request(lambda: {"grant_type": "password", ...}, grant="password")
    response.access_token, response.instance_url

Nothing secret (form fields, tokens) ever reaches a log line or an exception message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from authkit.errors import AuthenticationError

__all__ = ["TokenEndpoint", "TokenResponse", "normalize_url", "trusted_instance_url", "response_signature",
           "check_timeout", "Timeout", "SALESFORCE_DOMAINS"]

logger = logging.getLogger("authkit.salesforce")

Timeout = float | tuple[float, float]
"""A requests timeout: seconds, or ``(connect, read)`` seconds."""

TOKEN_PATH = "/services/oauth2/token"
REVOKE_PATH = "/services/oauth2/revoke"

SALESFORCE_DOMAINS = (
    "salesforce.com",  # login, test, My Domains, Hyperforce instances
    "force.com",  # Lightning, Visualforce, sites
    "cloudforce.com",
    "database.com",
    "salesforce.mil",  # Government Cloud Plus - Defense
    "crmforce.mil",
    "sfcrmproducts.cn",  # Salesforce on Alibaba Cloud
)
"""Domains whose hosts (and subdomains) an ``instance_url`` may name, besides the login host."""
_MAX_BACKOFF = 8.0
_MAX_DESCRIPTION = 300


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_url(url: object, name: str) -> str:
    """``scheme://host[:port]`` without a trailing slash, or ``ValueError``/``TypeError``.

    Only ``https`` is accepted, except ``http`` to a loopback host (a local
    test server such as :class:`~authkit.testing.FakeSalesforce`): a token
    must never cross a network in clear text.
    """
    if not isinstance(url, str):
        raise TypeError(f"{name} must be a str, not {type(url).__name__}")
    parts = urlsplit(url.strip())
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{name} must not contain credentials")
    host = parts.hostname
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError(f"{name} must be an https:// URL such as https://login.salesforce.com, got {url!r}")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ValueError(f"{name} must use https://; http:// is allowed only for loopback test servers")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{name} must be a bare origin such as https://login.salesforce.com, got {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{name} has an invalid port: {url!r}") from None
    netloc = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{netloc}" + (f":{port}" if port is not None else "")


def trusted_instance_url(url: object, login_url: str) -> str:
    """``url`` normalized if a bearer token may be sent there, else ``ValueError``/``TypeError``.

    It must be a bare ``https`` origin (``http`` only on a loopback host),
    without credentials, path or query (see :func:`normalize_url`), on a
    Salesforce domain (:data:`SALESFORCE_DOMAINS`) or ``login_url``'s own
    origin (host and port: a local test org): a token response or a shared
    store that names another host must not redirect the token there.
    """
    origin = normalize_url(url, "instance_url")
    host = (urlsplit(origin).hostname or "").lower().rstrip(".")
    login_host = (urlsplit(login_url).hostname or "").lower().rstrip(".")
    if origin == normalize_url(login_url, "login_url") or any(host.endswith("." + d) for d in SALESFORCE_DOMAINS):
        return origin
    raise ValueError(f"instance_url {origin!r} is neither on a Salesforce domain nor the login host {login_host}")


def response_signature(client_secret: str, identity_url: str, issued_at: str) -> str:
    """Base64 HMAC-SHA256 of ``identity_url + issued_at`` keyed with the client secret."""
    digest = hmac.new(client_secret.encode(), (identity_url + issued_at).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


@dataclass(frozen=True, repr=False)
class TokenResponse:
    """A successful token response.  ``repr()`` masks both tokens."""

    access_token: str
    instance_url: str
    identity_url: str | None = None
    issued_at: str | None = None
    token_type: str = "Bearer"
    scope: str | None = None
    refresh_token: str | None = None
    signature: str | None = None

    def __repr__(self) -> str:
        return (
            f"TokenResponse(access_token='***', instance_url={self.instance_url!r}, "
            f"identity_url={self.identity_url!r}, refresh_token={None if self.refresh_token is None else '***'!r})"
        )


def _retryable_status(status: int) -> bool:
    return status >= 500 or status == 429


def _unsent(exc: requests.RequestException) -> bool:
    """True only when the request certainly never reached the server."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        # A refused or unresolvable connection: urllib3 reports it as NewConnectionError /
        # NameResolutionError inside MaxRetryError, before any byte of the request was sent.
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        from urllib3.exceptions import NewConnectionError

        return isinstance(reason, NewConnectionError)
    return False


class TokenEndpoint:
    """Posts grants to one login host's token endpoint.

    ``retries`` transient failures (connection errors, timeouts, 5xx, 429)
    are retried after ``backoff * 2**n`` seconds (jittered, at most 8 s) when
    the grant allows it; see :meth:`request`.
    """

    def __init__(
        self,
        login_url: str,
        *,
        session: requests.Session | None = None,
        timeout: Timeout = (5.0, 30.0),
        retries: int = 2,
        backoff: float = 0.5,
    ) -> None:
        self.login_url = normalize_url(login_url, "login_url")
        if session is not None and not isinstance(session, requests.Session):
            raise TypeError("session must be a requests.Session")
        check_timeout(timeout)
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ValueError("retries must be an int >= 0")
        if not isinstance(backoff, (int, float)) or isinstance(backoff, bool) or backoff < 0:
            raise ValueError("backoff must be a number of seconds >= 0")
        self.url = self.login_url + TOKEN_PATH
        self.session = session if session is not None else requests.Session()
        self.timeout = timeout
        self.retries = retries
        self.backoff = float(backoff)

    def __repr__(self) -> str:
        return f"TokenEndpoint({self.login_url!r})"

    def request(
        self,
        build_form: Callable[[], dict[str, str]],
        *,
        grant: str,
        idempotent: bool = True,
        client_secret: str | None = None,
    ) -> TokenResponse:
        """POST the form ``build_form()`` returns (called again for each attempt).

        ``idempotent=False`` (the refresh grant, whose token may be spent by a
        rotation) retries only failures that prove the request was never sent.
        ``client_secret`` enables the ``signature`` check.
        """
        attempt = 0
        while True:
            try:
                response = self.session.post(
                    self.url,
                    data=build_form(),
                    headers={"Accept": "application/json"},
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                if attempt < self.retries and (idempotent or _unsent(exc)):
                    attempt = self._pause(attempt, grant, type(exc).__name__)
                    continue
                raise AuthenticationError(
                    f"{grant} token request to {self.login_url} failed: {type(exc).__name__}"
                    + ("" if idempotent or _unsent(exc) else " (not retried: the grant may have been used)")
                ) from exc
            if idempotent and _retryable_status(response.status_code) and attempt < self.retries:
                response.close()
                attempt = self._pause(attempt, grant, f"HTTP {response.status_code}", response)
                continue
            return self._parse(response, grant, client_secret)

    def revoke(self, token: str, *, what: str = "token") -> bool:
        """Revoke ``token`` (an access or refresh token) at ``/services/oauth2/revoke`` (RFC 7009).

        True if Salesforce revoked it, False if it no longer knew it (``400
        invalid_token``: already revoked or expired — the goal is met either
        way).  Any other refusal is an :class:`~authkit.errors.AuthenticationError`.
        Revocation is idempotent, so transient failures are retried.
        """
        url = self.login_url + REVOKE_PATH
        attempt = 0
        while True:
            try:
                response = self.session.post(url, data={"token": token}, headers={"Accept": "application/json"},
                                             timeout=self.timeout, allow_redirects=False)
            except requests.RequestException as exc:
                if attempt < self.retries:
                    attempt = self._pause(attempt, "revoke", type(exc).__name__)
                    continue
                raise AuthenticationError(
                    f"revoking the {what} at {self.login_url} failed: {type(exc).__name__}") from exc
            if _retryable_status(response.status_code) and attempt < self.retries:
                response.close()
                attempt = self._pause(attempt, "revoke", f"HTTP {response.status_code}", response)
                continue
            break
        status = response.status_code
        if status == 200:
            return True
        body = _json(response)
        error = str(body.get("error")) if isinstance(body, dict) and body.get("error") is not None else None
        description = body.get("error_description") if isinstance(body, dict) else None
        description = str(description)[:_MAX_DESCRIPTION] if description is not None else None
        if status == 400 and error == "invalid_token":
            logger.debug("revoke at %s: the %s was already invalid", self.login_url, what)
            return False
        detail = f"{error}: {description}" if error else f"HTTP {status} without an OAuth error body"
        raise AuthenticationError(f"revoking the {what} at {self.login_url} was refused: {detail} (HTTP {status})",
                                  error=error, error_description=description, status_code=status)

    def _pause(self, attempt: int, grant: str, why: str, response: requests.Response | None = None) -> int:
        delay = min(_MAX_BACKOFF, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)
        retry_after = response.headers.get("Retry-After", "") if response is not None else ""
        if retry_after.isdigit():
            delay = min(_MAX_BACKOFF, max(delay, float(retry_after)))
        logger.warning(
            "%s token request to %s failed (%s); retrying in %.2fs (attempt %d of %d)",
            grant, self.login_url, why, delay, attempt + 2, self.retries + 1,
        )
        time.sleep(delay)
        return attempt + 1

    def _parse(self, response: requests.Response, grant: str, client_secret: str | None) -> TokenResponse:
        status = response.status_code
        if 300 <= status < 400:
            raise AuthenticationError(
                f"{grant} token request to {self.login_url} was redirected (HTTP {status}); redirects are "
                "not followed: check login_url (a login host or My Domain, e.g. https://login.salesforce.com)",
                status_code=status,
            )
        body = _json(response)
        if status != 200:
            error = body.get("error") if isinstance(body, dict) else None
            description = body.get("error_description") if isinstance(body, dict) else None
            error = str(error) if error is not None else None
            description = str(description)[:_MAX_DESCRIPTION] if description is not None else None
            detail = f"{error}: {description}" if error else f"HTTP {status} without an OAuth error body"
            raise AuthenticationError(
                f"{grant} token request to {self.login_url} refused: {detail} (HTTP {status})",
                error=error,
                error_description=description,
                status_code=status,
            )
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str) or not body["access_token"]:
            raise AuthenticationError(
                f"{grant} token response from {self.login_url} has no access_token", status_code=status
            )
        try:
            instance_url = trusted_instance_url(body.get("instance_url"), self.login_url)
        except (TypeError, ValueError) as exc:
            raise AuthenticationError(
                f"{grant} token response from {self.login_url} has no usable instance_url: {exc}",
                error="invalid_instance_url", status_code=status,
            ) from None
        result = TokenResponse(
            access_token=body["access_token"],
            instance_url=instance_url,
            identity_url=_opt_str(body.get("id")),
            issued_at=_opt_str(body.get("issued_at")),
            token_type=_opt_str(body.get("token_type")) or "Bearer",
            scope=_opt_str(body.get("scope")),
            refresh_token=_opt_str(body.get("refresh_token")) or None,
            signature=_opt_str(body.get("signature")),
        )
        if client_secret is not None:
            _verify_signature(result, client_secret, grant, self.login_url)
        return result


def _verify_signature(result: TokenResponse, client_secret: str, grant: str, login_url: str) -> None:
    """Check ``signature``.  With the secret known, a response without one is refused too:
    whoever could strip the signature could otherwise alter the rest unnoticed."""
    if result.signature is None:
        raise AuthenticationError(
            f"{grant} token response from {login_url} carries no signature, but the client secret is known "
            "(the response may have been altered; pass no client_secret to a flow whose responses are unsigned)",
            error="invalid_signature", error_description="signature missing", status_code=200,
        )
    if result.identity_url is None or result.issued_at is None:
        raise AuthenticationError(
            f"{grant} token response from {login_url} is signed but lacks id/issued_at", error="invalid_signature"
        )
    expected = response_signature(client_secret, result.identity_url, result.issued_at)
    if not hmac.compare_digest(expected.encode(), result.signature.encode()):
        raise AuthenticationError(
            f"{grant} token response from {login_url} failed signature verification "
            "(wrong client_secret, or the response was altered)",
            error="invalid_signature",
            error_description="signature mismatch",
            status_code=200,
        )


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def check_timeout(timeout: object) -> None:
    values = timeout if isinstance(timeout, tuple) else (timeout,)
    if isinstance(timeout, tuple) and len(timeout) != 2:
        raise ValueError("timeout must be seconds or a (connect, read) pair")
    for value in values:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError("timeout must be seconds or a (connect, read) pair of seconds")
        if not value > 0:
            raise ValueError("timeout must be > 0")


_check_timeout = check_timeout  # the name authkit.salesforce.client imports
