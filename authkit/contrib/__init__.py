"""Framework integrations: :mod:`authkit.contrib.flask` and :mod:`authkit.contrib.django`.

This package holds what both share: the cron-safe cleanup they run from their
commands (``flask authkit cleanup``, ``manage.py authkit_cleanup``) and the
code that turns a settings mapping into a :class:`~authkit.salesforce.SalesforceClient`.

>>> from authkit.contrib import run_cleanup
>>> report = run_cleanup(storage, batch_size=500)      # None if another run holds the lock
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from authkit.errors import ConfigurationError
from authkit.models import CleanupReport
from authkit.storage.base import DEFAULT_BATCH_SIZE, AuthStorage

if TYPE_CHECKING:
    from authkit.salesforce.auth import AuthSession
    from authkit.salesforce.client import SalesforceClient

__all__ = [
    "CLEANUP_LOCK",
    "ANONYMOUS_USER_ID",
    "run_cleanup",
    "format_report",
    "format_failure",
    "build_salesforce_auth",
    "build_salesforce_client",
]

CLEANUP_LOCK = "authkit-cleanup"
"""The lock every cleanup holds (the ``authkit`` command, Flask, Django), so
overlapping cron runs from any of them never work at the same time.
The same name as ``authkit.cli.CLEANUP_LOCK``."""

ANONYMOUS_USER_ID = "anonymous"
"""``SessionData.user_id`` of a session nobody has logged in to yet."""

# A cleanup of millions of rows can take minutes; the lock must outlive it.
# The holder refreshes nothing, so the TTL is the longest a run may take
# before a second run may start; a crashed run frees the lock after it.
# The authkit command's default, so every cleanup behaves alike.
_CLEANUP_LOCK_TTL = 600.0


def run_cleanup(
    storage: AuthStorage,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    wait: float = 0.0,
    progress: Callable[[CleanupReport], None] | None = None,
) -> CleanupReport | None:
    """Delete expired tokens, sessions and kv entries under :data:`CLEANUP_LOCK`.

    Returns the :class:`~authkit.models.CleanupReport`, or ``None`` when
    another cleanup held the lock for longer than ``wait`` seconds (the
    default ``0`` gives up at once: the other run is doing the work).
    """
    if not isinstance(wait, (int, float)) or isinstance(wait, bool):
        raise TypeError("wait must be a number of seconds")
    if not math.isfinite(wait) or wait < 0:
        raise ValueError("wait must be a finite number of seconds >= 0")
    with ExitStack() as stack:
        try:
            stack.enter_context(storage.lock(CLEANUP_LOCK, timeout=float(wait), ttl=_CLEANUP_LOCK_TTL))
        except TimeoutError:
            # Only failing to get the lock means "skip"; an error from the
            # work itself propagates.
            return None
        return storage.cleanup_expired(batch_size=batch_size, progress=progress)
    raise AssertionError("unreachable")  # ExitStack does not swallow exceptions


def format_report(report: CleanupReport | None, *, seconds: float | None = None, as_json: bool = False) -> str:
    """The one summary line a cleanup command prints, worded as ``authkit cleanup`` words it.

    >>> format_report(CleanupReport(tokens=1, sessions=2, kv=0), seconds=0.25)
    'cleanup: deleted 3 expired records (tokens 1, sessions 2, kv 0) in 0.25 s'
    >>> format_report(None)
    'skipped: another cleanup is running'
    """
    if report is None:
        if as_json:
            return json.dumps({"status": "skipped", "reason": "another cleanup is running"}, sort_keys=True)
        return "skipped: another cleanup is running"
    if as_json:
        data: dict[str, Any] = {"status": "ok", "tokens": report.tokens, "sessions": report.sessions,
                                "kv": report.kv, "total": report.total}
        if seconds is not None:
            data["seconds"] = round(seconds, 3)
        return json.dumps(data, sort_keys=True)
    took = "" if seconds is None else f" in {seconds:.2f} s"
    return (
        f"cleanup: deleted {report.total} expired records "
        f"(tokens {report.tokens}, sessions {report.sessions}, kv {report.kv}){took}"
    )


def format_failure(exc: BaseException, storage_url: str | None = None) -> str:
    """``cleanup failed: <Error>: <message>`` on one line, with the storage URL's password masked.

    authkit's messages hold no secrets on purpose; a driver's quoted message
    might echo a DSN, so the password is masked as written and percent-decoded.
    """
    text = " ".join(f"cleanup failed: {type(exc).__name__}: {exc}".split())
    if storage_url:
        try:
            password = urlsplit(storage_url).password
        except ValueError:
            password = None
        for secret in {password, unquote(password) if password else None}:
            if secret and len(secret) >= 4:  # shorter would mask ordinary words
                text = text.replace(secret, "***")
    return text


# -- Salesforce ------------------------------------------------------------

_FLOWS = {
    "jwt": "JwtAuth",
    "refresh_token": "RefreshTokenAuth",
    "client_credentials": "ClientCredentialsAuth",
    "password": "PasswordAuth",
    "static": "StaticTokenAuth",
}
# Flows that mint tokens and so share them through a store; a static token has nothing to share.
_STORE_FLOWS = {"jwt", "refresh_token", "client_credentials", "password"}
_CLIENT_OPTIONS = {"api_version", "timeout"}


def build_salesforce_auth(config: Mapping[str, Any], token_store: AuthStorage | None) -> AuthSession:
    """An :class:`~authkit.salesforce.AuthSession` from a settings mapping.

    ``config`` has ``flow`` (``jwt``, ``refresh_token``, ``client_credentials``,
    ``password`` or ``static``) and that flow's own keyword arguments, e.g.::

        {"flow": "jwt", "client_id": "3MVG9...", "username": "api@acme.com",
         "private_key_file": "/etc/acme/sf.key", "login_url": "https://login.salesforce.com"}

    ``private_key_file`` is the path of the JWT flow's PEM key;
    ``token_timeout`` the token endpoint's timeout (``timeout`` is the REST
    client's).  ``auth`` instead of
    ``flow`` may be a ready ``AuthSession`` or a zero-argument callable
    returning one.  Minting flows keep their token in ``token_store`` (unless
    the mapping sets ``token_store`` itself, ``None`` for no sharing), so every
    worker of the app shares one token.  Keys used by the client itself
    (``api_version``, ``timeout``) are ignored here.
    """
    from authkit.salesforce import auth as flows

    options = {k: v for k, v in config.items() if k not in _CLIENT_OPTIONS}
    if "auth" in options:
        ready = options.pop("auth")
        if options:
            raise ConfigurationError(f"Salesforce settings give 'auth' and also {', '.join(sorted(options))}")
        given = ready() if callable(ready) and not isinstance(ready, flows.AuthSession) else ready
        if not isinstance(given, flows.AuthSession):
            raise ConfigurationError("Salesforce setting 'auth' must be an AuthSession or a callable returning one")
        return given
    flow = options.pop("flow", None)
    if flow is None:
        raise ConfigurationError(
            "no Salesforce settings: give 'flow' (jwt, refresh_token, client_credentials, password, static) "
            "and its options, or 'auth'"
        )
    if not isinstance(flow, str) or flow.lower().replace("-", "_") not in _FLOWS:
        raise ConfigurationError(f"unknown Salesforce flow {flow!r}; expected one of {', '.join(sorted(_FLOWS))}")
    flow = flow.lower().replace("-", "_")
    key_file = options.pop("private_key_file", None)
    if key_file is not None:
        if "private_key" in options:
            raise ConfigurationError("give the Salesforce private_key or private_key_file, not both")
        # JwtAuth reads a key given as a path (and says so if it cannot).
        options["private_key"] = Path(key_file)
    if "token_timeout" in options:
        # ``timeout`` is the REST client's; the token endpoint's has its own name here.
        options["timeout"] = options.pop("token_timeout")
    if flow in _STORE_FLOWS and "token_store" not in options:
        options["token_store"] = token_store
    cls = getattr(flows, _FLOWS[flow])
    try:
        session: AuthSession = cls(**options)
    except TypeError as exc:
        # A misspelt option: say which setting is wrong without echoing values.
        raise ConfigurationError(f"bad Salesforce settings for the {flow} flow: {exc}") from exc
    return session


def build_salesforce_client(config: Mapping[str, Any], token_store: AuthStorage | None) -> SalesforceClient:
    """A :class:`~authkit.salesforce.SalesforceClient` from the same mapping as
    :func:`build_salesforce_auth`, plus the client's ``api_version`` and ``timeout``."""
    from authkit.salesforce.client import SalesforceClient

    client_options = {k: config[k] for k in _CLIENT_OPTIONS if k in config}
    if isinstance(client_options.get("timeout"), list):
        # Settings files and environment parsing give lists; requests wants a tuple.
        client_options["timeout"] = tuple(client_options["timeout"])
    return SalesforceClient(build_salesforce_auth(config, token_store), **client_options)
