"""Salesforce: auth sessions for every OAuth flow, and a REST client.

>>> from authkit.salesforce import JwtAuth
>>> auth = JwtAuth("3MVG9...", "etl@acme.com", "/etc/sf/server.key", token_store=storage)
>>> auth.access_token()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
    from authkit.salesforce.client import SalesforceClient

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

# The client is imported on first use, so the auth flows import without it.
_LAZY = {"SalesforceClient": "authkit.salesforce.client", "RequestBudget": "authkit.salesforce.budget"}
_LAZY.update(dict.fromkeys(("Bulk", "BulkResult", "BulkJobError"), "authkit.salesforce.bulk"))


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'authkit.salesforce' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
