"""authkit: auth tokens, sessions and TTL'd data in the store you already run,
and Salesforce sessions that never trip over an expired token.

>>> import authkit
>>> storage = authkit.open_storage("sqlite:///authkit.db")
"""

from __future__ import annotations

from authkit.errors import (
    ApiError,
    AuthenticationError,
    AuthKitError,
    ConfigurationError,
    DuplicateValueError,
    EncryptionError,
    InsufficientAccessError,
    InvalidFieldError,
    MalformedQueryError,
    NotFoundError,
    RequestLimitError,
    ResourceNotFoundError,
    SalesforceConnectionError,
    SalesforceError,
    SessionExpiredError,
    StorageError,
    StorageUnavailableError,
)
from authkit.models import AuthToken, CleanupReport, KvEntry, SessionData
from authkit.storage import AuthStorage, MemoryStorage, open_storage

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "AuthToken",
    "SessionData",
    "KvEntry",
    "CleanupReport",
    "AuthStorage",
    "MemoryStorage",
    "open_storage",
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
