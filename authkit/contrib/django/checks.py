"""Django system checks for authkit's settings: ``manage.py check`` (and ``runserver``,
``migrate``, ...) reports a missing or broken storage URL, a missing driver, a bad
prefix or Salesforce setting, instead of every request failing with a 500.

They run when ``"authkit.contrib.django"`` is in ``INSTALLED_APPS``, and check
without connecting to anything: a check must not need the database up.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register

__all__: list[str] = []

_ENGINE = "authkit.contrib.django.sessions"
# scheme -> (driver module, extra)
_DRIVERS = {
    "postgresql": ("psycopg", "postgres"),
    "postgres": ("psycopg", "postgres"),
    "mysql": ("pymysql", "mysql"),
    "mariadb": ("pymysql", "mysql"),
    "redis": ("redis", "redis"),
    "rediss": ("redis", "redis"),
    "unix": ("redis", "redis"),
}
_SCHEMES = {"memory", "sqlite", *_DRIVERS}


def _error(message: str, hint: str, number: int) -> Error:
    return Error(message, hint=hint, id=f"authkit.E{number:03}")


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Every authkit setting that can be checked without a network."""
    return [*_storage_errors(), *_salesforce_errors(), *_cleanup_errors()]


def _storage_errors() -> list[Error]:
    if getattr(settings, "AUTHKIT_STORAGE", None) is not None:
        return []  # a ready storage (or a factory): the project's own business
    url = getattr(settings, "AUTHKIT_STORAGE_URL", None)
    if not url:
        return [_error("AUTHKIT_STORAGE_URL is not set.",
                       "Set it to the storage's URL, e.g. 'sqlite:///authkit.db' or 'redis://localhost:6379/0'.", 1)]
    if not isinstance(url, str) or "://" not in url:
        return [_error(f"AUTHKIT_STORAGE_URL is not a storage URL: {type(url).__name__}.",
                       "Use a URL such as 'postgresql://app@db/app'.", 2)]
    scheme = url.partition("://")[0].split("+", 1)[0].lower()
    errors = []
    if scheme not in _SCHEMES:
        errors.append(_error(f"AUTHKIT_STORAGE_URL has an unknown scheme {scheme!r}.",
                             f"Use one of: {', '.join(sorted(_SCHEMES))}.", 2))
    elif scheme in _DRIVERS:
        module, extra = _DRIVERS[scheme]
        if importlib.util.find_spec(module) is None:
            errors.append(_error(f"AUTHKIT_STORAGE_URL is a {scheme}:// URL but its driver ({module}) "
                                 "is not installed.", f"pip install 'authkit-sf[{extra}]'", 3))
    options = getattr(settings, "AUTHKIT_STORAGE_OPTIONS", None) or {}
    if not isinstance(options, dict):
        errors.append(_error("AUTHKIT_STORAGE_OPTIONS must be a dict of open_storage options.",
                             "For example {'prefix': 'myapp_'}.", 4))
    elif "prefix" in options and scheme in _SCHEMES:
        problem = _prefix_problem(scheme, options["prefix"])
        if problem:
            errors.append(_error(f"AUTHKIT_STORAGE_OPTIONS['prefix'] is not valid for {scheme}://: {problem}.",
                                 "SQL prefixes are 1-32 letters, digits or underscores, not starting with a digit; "
                                 "Redis prefixes any non-empty text without NUL.", 5))
    return errors


def _prefix_problem(scheme: str, prefix: object) -> str | None:
    if scheme in ("redis", "rediss", "unix"):
        if not isinstance(prefix, str) or not prefix or "\x00" in prefix:
            return "must be a non-empty str without NUL"
        return None
    try:
        if scheme == "memory":
            from authkit.storage.url import _check_memory_options

            _check_memory_options({"prefix": prefix})
        else:
            from authkit.storage.sql import _PREFIX_RE

            if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
                raise ValueError("must be 1-32 letters, digits or underscores, not starting with a digit")
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


def _salesforce_errors() -> list[Error]:
    config = getattr(settings, "AUTHKIT_SALESFORCE", None)
    if config is None:
        return []
    if not isinstance(config, dict):
        return [_error("AUTHKIT_SALESFORCE must be a dict.", "{'flow': 'jwt', 'client_id': ..., ...}", 10)]
    from authkit.contrib import build_salesforce_auth
    from authkit.errors import AuthKitError

    try:
        # Builds the flow, reads its key file, contacts nothing (no token_store, no token request).
        auth = build_salesforce_auth(config, None)
    except (AuthKitError, ValueError, TypeError, OSError) as exc:
        return [_error(f"AUTHKIT_SALESFORCE is not usable: {' '.join(str(exc).split())}",
                       "See the flow's options in the Salesforce auth guide.", 11)]
    close = getattr(auth, "close", None)
    if callable(close):
        close()
    return []


def _cleanup_errors() -> list[Error]:
    every = getattr(settings, "AUTHKIT_CLEANUP_N_REQUESTS", None)
    if every is None:
        return []
    if isinstance(every, bool) or not isinstance(every, int) or every <= 0:
        return [_error("AUTHKIT_CLEANUP_N_REQUESTS must be a whole number of requests > 0 (or None).",
                       "For example 1000: a background cleanup every 1000 requests.", 20)]
    return []


def _register() -> None:
    register(check_settings, Tags.compatibility)


_register()
