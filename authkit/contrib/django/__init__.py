"""Django integration: a session engine on any :class:`~authkit.storage.AuthStorage`,
``manage.py authkit_cleanup``, and one shared :class:`~authkit.salesforce.SalesforceClient`.

Settings::

    INSTALLED_APPS = [..., "authkit.contrib.django"]          # for manage.py authkit_cleanup
    SESSION_ENGINE = "authkit.contrib.django.sessions"
    AUTHKIT_STORAGE_URL = "postgresql://app@db/app"
    AUTHKIT_STORAGE_OPTIONS = {"prefix": "myapp_"}             # optional open_storage options
    AUTHKIT_CLEANUP_N_REQUESTS = 1000                          # optional: cleanup without cron
    AUTHKIT_SALESFORCE = {                                     # optional: the shared client
        "flow": "jwt",
        "client_id": "3MVG9...",
        "username": "api@acme.com",
        "private_key_file": BASE_DIR / "salesforce.key",
    }

In a view::

    from authkit.contrib.django import salesforce_client

    def accounts(request):
        records = salesforce_client().query_all("SELECT Id, Name FROM Account")
        return JsonResponse({"accounts": records})

The storage and the client are built on first use, once per process, and
shared by every thread; the client's token is shared through the storage by
every process (gunicorn workers, Celery, cron) too.  Changing an
``AUTHKIT_STORAGE*`` or ``AUTHKIT_SALESFORCE`` setting (``override_settings``
in tests) closes them, and the next use builds them again from the new settings.
"""

from __future__ import annotations

import atexit
import threading
from typing import TYPE_CHECKING, Any

from authkit.contrib import build_salesforce_client
from authkit.errors import ConfigurationError
from authkit.maintenance import _CleanupEveryN
from authkit.storage.base import AuthStorage
from authkit.storage.url import open_storage

if TYPE_CHECKING:
    from authkit.salesforce.client import SalesforceClient

__all__ = ["get_storage", "salesforce_client", "reset"]

_mutex = threading.Lock()
_storage: AuthStorage | None = None
_owned = False  # whether reset() closes _storage (not when the settings gave a ready one)
_client: SalesforceClient | None = None
_cleanup: _CleanupEveryN | None = None  # AUTHKIT_CLEANUP_N_REQUESTS


def _setting(name: str, default: Any = None) -> Any:
    from django.conf import settings

    return getattr(settings, name, default)


def get_storage() -> AuthStorage:
    """The process's storage, opened from the settings on first use.

    ``AUTHKIT_STORAGE_URL`` (with ``AUTHKIT_STORAGE_OPTIONS``) names it; or
    ``AUTHKIT_STORAGE`` gives a ready :class:`AuthStorage` (or the dotted path
    of a zero-argument callable returning one), for storages a URL cannot
    describe, such as ``CachedStorage(EncryptedStorage(...))``.  A storage
    given that way is the caller's: :func:`reset` does not close it.
    """
    global _storage, _owned
    storage = _storage
    if storage is not None:
        return storage
    with _mutex:
        if _storage is None:
            _storage, _owned = _open_from_settings()
        return _storage


def _open_from_settings() -> tuple[AuthStorage, bool]:
    given = _setting("AUTHKIT_STORAGE")
    if given is not None:
        if isinstance(given, str):
            from django.utils.module_loading import import_string

            given = import_string(given)()
        elif callable(given) and not isinstance(given, AuthStorage):
            given = given()
        if not isinstance(given, AuthStorage):
            raise ConfigurationError("AUTHKIT_STORAGE must be an AuthStorage or a callable returning one")
        return given, False
    url = _setting("AUTHKIT_STORAGE_URL")
    if not url:
        raise ConfigurationError("set AUTHKIT_STORAGE_URL in the Django settings, e.g. 'sqlite:///authkit.db'")
    options = _setting("AUTHKIT_STORAGE_OPTIONS") or {}
    if not isinstance(options, dict):
        raise ConfigurationError("AUTHKIT_STORAGE_OPTIONS must be a dict of open_storage options")
    return open_storage(str(url), **options), True


def salesforce_client() -> SalesforceClient:
    """The process's shared :class:`SalesforceClient`, built on first use from ``AUTHKIT_SALESFORCE``.

    ``AUTHKIT_SALESFORCE`` is a dict: ``flow`` (``jwt``, ``refresh_token``,
    ``client_credentials``, ``password``, ``static``) and the flow's options,
    plus the client's ``api_version`` / ``timeout``; or ``{"auth": ...}`` with a
    ready ``AuthSession`` or a callable returning one.  Minting flows keep their
    token in the ``AUTHKIT_STORAGE_URL`` storage, so all processes share it.
    Thread-safe: every request thread gets the same client.
    """
    global _client
    client = _client
    if client is not None:
        return client
    config = _setting("AUTHKIT_SALESFORCE")
    if not config:
        raise ConfigurationError("set AUTHKIT_SALESFORCE in the Django settings, e.g. {'flow': 'jwt', ...}")
    if not isinstance(config, dict):
        raise ConfigurationError("AUTHKIT_SALESFORCE must be a dict")
    storage = get_storage()
    with _mutex:
        if _client is None:
            _client = build_salesforce_client(config, storage, names=_django_setting_name)
        return _client


def _django_setting_name(key: str) -> str:
    return f"AUTHKIT_SALESFORCE[{key!r}]"


def _request_finished(**kwargs: Any) -> None:
    """``AUTHKIT_CLEANUP_N_REQUESTS = N``: every N requests, a cleanup on a background thread.

    For projects without cron.  The thread runs :func:`authkit.maintenance.run_cleanup`
    (under the cleanup lock, so processes and cron never overlap); no request waits for it.
    """
    global _cleanup
    every = _setting("AUTHKIT_CLEANUP_N_REQUESTS")
    if every is None:
        return
    cleanup = _cleanup
    if cleanup is None:
        with _mutex:
            if _cleanup is None:
                try:
                    _cleanup = _CleanupEveryN(get_storage, every)
                except (TypeError, ValueError) as exc:
                    raise ConfigurationError(f"AUTHKIT_CLEANUP_N_REQUESTS: {exc}") from exc
            cleanup = _cleanup
    cleanup.tick()


def reset() -> None:
    """Close the client and the storage (if it was opened from a URL); the next
    use builds them from the settings again.  Runs at interpreter exit."""
    global _storage, _client, _owned, _cleanup
    with _mutex:
        storage, owned, client = _storage, _owned, _client
        _storage, _client, _owned, _cleanup = None, None, False, None
    if client is not None:
        client.close()
    if storage is not None and owned:
        storage.close()


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith(("AUTHKIT_STORAGE", "AUTHKIT_SALESFORCE", "AUTHKIT_CLEANUP")):
        reset()


def _connect() -> None:
    try:
        from django.core.signals import request_finished
        from django.test.signals import setting_changed
    except ImportError:  # pragma: no cover - Django is an optional extra
        return
    setting_changed.connect(_on_setting_changed, dispatch_uid="authkit.contrib.django.reset")
    request_finished.connect(_request_finished, dispatch_uid="authkit.contrib.django.cleanup")


_connect()
atexit.register(reset)
