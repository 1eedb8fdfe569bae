"""Framework integrations: :mod:`authkit.contrib.flask` and :mod:`authkit.contrib.django`.

This package holds what both share: the code that turns a settings mapping
into a :class:`~authkit.salesforce.SalesforceClient`.
Their maintenance commands (``flask authkit ...``, ``manage.py authkit_...``)
are shells over :mod:`authkit.maintenance`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from authkit.errors import ConfigurationError
from authkit.maintenance import CLEANUP_LOCK as CLEANUP_LOCK  # where the framework shells' users look for it
from authkit.maintenance import run_cleanup as run_cleanup
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
