"""Framework integrations: :mod:`authkit.contrib.flask` and :mod:`authkit.contrib.django`.

This package holds what both share: the code that turns a settings mapping
into a :class:`~authkit.salesforce.SalesforceClient`.
Their maintenance commands (``flask authkit ...``, ``manage.py authkit_...``)
are shells over :mod:`authkit.maintenance`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from authkit.storage.base import AuthStorage

if TYPE_CHECKING:
    from authkit.salesforce.auth import AuthSession
    from authkit.salesforce.client import SalesforceClient

__all__ = [
    "ANONYMOUS_USER_ID",
    "build_salesforce_auth",
    "build_salesforce_client",
]

ANONYMOUS_USER_ID = "anonymous"
"""``SessionData.user_id`` of a session nobody has logged in to yet."""


# -- Salesforce ------------------------------------------------------------


_CLIENT_OPTIONS = ("api_version", "timeout")


def build_salesforce_auth(config: Mapping[str, Any], token_store: AuthStorage | None, *,
                          names: Callable[[str], str] | None = None) -> AuthSession:
    """An :class:`~authkit.salesforce.AuthSession` from a settings mapping.

    ``config`` has ``flow`` (``jwt``, ``refresh_token``, ``client_credentials``,
    ``password``, ``token_exchange`` or ``static``; ``refresh-token`` works too)
    and that flow's keys, e.g.::

        {"flow": "jwt", "client_id": "3MVG9...", "username": "api@acme.com",
         "private_key_file": "/etc/acme/sf.key", "login_url": "https://login.salesforce.com"}

    The keys and their rules are :mod:`authkit.salesforce.settings`' (the same
    for the ``authkit`` command, Flask and Django); ``names`` spells a key as
    the user wrote it, for error messages.  Minting flows keep their token in
    ``token_store`` unless the mapping sets ``token_store`` itself.  The client's
    own keys (``api_version``, ``timeout``) are ignored here.
    """
    from authkit.salesforce.settings import build_auth, plain_name

    return build_auth(config, token_store=token_store, names=names or plain_name)


def build_salesforce_client(config: Mapping[str, Any], token_store: AuthStorage | None, *,
                            names: Callable[[str], str] | None = None) -> SalesforceClient:
    """A :class:`~authkit.salesforce.SalesforceClient` from the same mapping as
    :func:`build_salesforce_auth`, plus the client's ``api_version`` and ``timeout``."""
    from authkit.salesforce.client import SalesforceClient

    client_options = {k: config[k] for k in _CLIENT_OPTIONS if k in config}
    if isinstance(client_options.get("timeout"), list):
        # Settings files and environment parsing give lists; requests wants a tuple.
        client_options["timeout"] = tuple(client_options["timeout"])
    return SalesforceClient(build_salesforce_auth(config, token_store, names=names), **client_options)
