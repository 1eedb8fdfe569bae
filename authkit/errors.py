"""The authkit exception tree.

Everything authkit raises on purpose is an :class:`AuthKitError`, except bad
arguments from the caller, which are plain :class:`ValueError` /
:class:`TypeError`.  A driver's own exception never escapes raw: it is the
``__cause__`` of a :class:`StorageError`.

Exception messages never contain tokens, secrets or keys.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthKitError",
    "ConfigurationError",
    "StorageError",
    "StorageUnavailableError",
    "NotFoundError",
    "EncryptionError",
    "SalesforceError",
    "AuthenticationError",
    "SessionExpiredError",
    "ApiError",
    "RequestLimitError",
    "ResourceNotFoundError",
    "DuplicateValueError",
    "MalformedQueryError",
    "InvalidFieldError",
    "InsufficientAccessError",
    "SalesforceConnectionError",
]


class AuthKitError(Exception):
    """Base class of every error authkit raises on purpose."""


class ConfigurationError(AuthKitError):
    """Bad URL, missing driver or extra, bad key material."""


class StorageError(AuthKitError):
    """A storage backend failed; the driver's exception is ``__cause__``."""


class StorageUnavailableError(StorageError):
    """The storage server cannot be reached."""


class NotFoundError(StorageError):
    """``update_token`` of a token that does not exist."""


class EncryptionError(AuthKitError):
    """Wrong key, tampered or unreadable ciphertext."""


class SalesforceError(AuthKitError):
    """Base class of the Salesforce errors."""


class AuthenticationError(SalesforceError):
    """The token endpoint refused to issue a token.

    ``error`` and ``error_description`` are Salesforce's own fields
    (e.g. ``invalid_grant`` / ``expired access/refresh token``).
    """

    def __init__(
        self,
        message: str,
        *,
        error: str | None = None,
        error_description: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.error = error
        self.error_description = error_description
        self.status_code = status_code


class SessionExpiredError(SalesforceError):
    """Still 401 after the single retry, or nothing to retry with."""


class ApiError(SalesforceError):
    """A Salesforce REST API error.

    ``error_code`` is Salesforce's ``errorCode`` (e.g. ``MALFORMED_QUERY``),
    ``fields`` the fields it names, ``response`` the :class:`requests.Response`.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        error_code: str | None = None,
        fields: list[str] | None = None,
        response: Any = None,
    ) -> None:
        super().__init__(f"{status_code} {error_code or 'ERROR'}: {message}")
        self.status_code = status_code
        self.error_code = error_code
        self.message = message
        self.fields = list(fields or [])
        self.response = response


class RequestLimitError(ApiError):
    """``REQUEST_LIMIT_EXCEEDED`` or HTTP 429."""


class ResourceNotFoundError(ApiError):
    """HTTP 404: no such record, sObject or resource."""


class DuplicateValueError(ApiError):
    """``DUPLICATE_VALUE`` / ``DUPLICATES_DETECTED``: a unique field or duplicate rule said no."""


class MalformedQueryError(ApiError):
    """``MALFORMED_QUERY`` and friends: the SOQL/SOSL does not parse."""


class InvalidFieldError(ApiError):
    """``INVALID_FIELD`` / ``INVALID_FIELD_FOR_INSERT_UPDATE``: no such field, or not writable."""


class InsufficientAccessError(ApiError):
    """``INSUFFICIENT_ACCESS*``: the user may not read or change this record."""


class SalesforceConnectionError(SalesforceError):
    """The instance could not be reached, or the connection broke (after any retries).

    The :mod:`requests` exception is ``__cause__``.
    """
