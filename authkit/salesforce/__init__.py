"""Salesforce: auth sessions for every OAuth flow, and a REST client.

>>> from authkit.salesforce import JwtAuth
>>> auth = JwtAuth("3MVG9...", "etl@acme.com", "/etc/sf/server.key", token_store=storage)
>>> auth.access_token()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from authkit.errors import ApiError, SessionExpiredError
from authkit.salesforce.auth import (
    AuthSession,
    ClientCredentialsAuth,
    FlowOptions,
    JwtAuth,
    PasswordAuth,
    RefreshTokenAuth,
    StaticTokenAuth,
    TokenExchangeAuth,
    WebServerFlow,
)

if TYPE_CHECKING:
    from authkit.salesforce.budget import RequestBudget
    from authkit.salesforce.bulk import Bulk, BulkJobError, BulkResult
    from authkit.salesforce.client import ApiUsage, SalesforceClient, SObject, retrying_adapter

__all__ = [
    "AuthSession",
    "StaticTokenAuth",
    "JwtAuth",
    "RefreshTokenAuth",
    "ClientCredentialsAuth",
    "PasswordAuth",
    "TokenExchangeAuth",
    "WebServerFlow",
    "FlowOptions",
    "SalesforceClient",
    "RequestBudget",
    "Bulk",
    "BulkResult",
    "BulkJobError",
]

# What the client's errors, results and transport are, importable from here (error messages
# and the docs name them as authkit.salesforce.X).
__all__ += ["ApiError", "SessionExpiredError", "SObject", "ApiUsage", "retrying_adapter"]

# The client is imported on first use, so the auth flows import without it.
_LAZY = {"SalesforceClient": "authkit.salesforce.client", "RequestBudget": "authkit.salesforce.budget"}
_LAZY.update(dict.fromkeys(("Bulk", "BulkResult", "BulkJobError"), "authkit.salesforce.bulk"))
_LAZY.update(dict.fromkeys(("SObject", "ApiUsage", "retrying_adapter"), "authkit.salesforce.client"))


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'authkit.salesforce' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
