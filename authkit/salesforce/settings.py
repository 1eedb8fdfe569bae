"""One reader of Salesforce settings, for the ``authkit`` command, Flask and Django.

Each integration collects its settings into a flat mapping with the same keys
and the same flow names, and says how its users spell a key (``names``), so
every error names the setting to fix in the user's own words::

    auth = build_auth({"flow": "jwt", "client_id": "3MVG9...", "username": "etl@acme.com",
                       "private_key_file": "/etc/sf/server.key"}, token_store=storage)
    build_auth(app.config_subset, names=lambda key: f"AUTHKIT_SALESFORCE_{key.upper()}")
    # ConfigurationError: missing Salesforce setting AUTHKIT_SALESFORCE_USERNAME: the jwt flow needs it

Flows: ``jwt``, ``refresh_token``, ``client_credentials``, ``password``,
``token_exchange``, ``static`` (a hyphen works as well as an underscore, in any
case: ``refresh-token``, ``REFRESH_TOKEN``).  Keys per flow (``*`` required):

=====================  ==========================================================================
``jwt``                ``client_id*``, ``username*``, ``private_key*`` or ``private_key_file*``,
                       ``passphrase``, ``login_url``, ``audience``, ``client_secret``
``refresh_token``      ``client_id*``, ``refresh_token*`` (or ``username`` with a token store that
                       holds it), ``client_secret``, ``login_url``, ``username``, ``on_refresh_token``
``client_credentials`` ``client_id*``, ``client_secret*``, ``domain_url*``
``password``           ``client_id*``, ``client_secret*``, ``username*``, ``password*``,
                       ``security_token``, ``login_url``
``token_exchange``     ``client_id*``, ``subject_token*``, ``subject_token_type*``, ``login_url``,
                       ``client_secret``, ``username``, ``scopes``, ``on_refresh_token``
``static``             ``access_token*``, ``instance_url*``
=====================  ==========================================================================

Every minting flow also takes ``token_store`` (``None``: no sharing),
``token_timeout`` (the token endpoint's timeout: seconds or ``[connect, read]``),
``max_token_age``, ``retries``, ``backoff``, ``lock_timeout`` and, from code,
``session``, ``clock`` and ``options`` (a :class:`~authkit.salesforce.FlowOptions`).
``api_version`` and ``timeout`` belong to the REST client and are ignored here.
Values may be strings, as environment variables and settings files give them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from authkit.errors import ConfigurationError
from authkit.salesforce._oauth import normalize_url
from authkit.storage.base import AuthStorage

if TYPE_CHECKING:
    from authkit.salesforce.auth import AuthSession

__all__ = ["FLOWS", "flow_name", "flow_keys", "build_auth", "plain_name"]

FLOWS = ("jwt", "refresh_token", "client_credentials", "password", "token_exchange", "static")

_REQUIRED: dict[str, tuple[str, ...]] = {
    "jwt": ("client_id", "username"),
    "refresh_token": ("client_id",),
    "client_credentials": ("client_id", "client_secret", "domain_url"),
    "password": ("client_id", "client_secret", "username", "password"),
    "token_exchange": ("client_id", "subject_token", "subject_token_type"),
    "static": ("access_token", "instance_url"),
}
_OPTIONAL: dict[str, tuple[str, ...]] = {
    "jwt": ("private_key", "private_key_file", "passphrase", "login_url", "audience", "client_secret"),
    "refresh_token": ("refresh_token", "client_secret", "login_url", "username", "on_refresh_token"),
    "client_credentials": (),
    "password": ("security_token", "login_url"),
    "token_exchange": ("login_url", "client_secret", "username", "scopes", "on_refresh_token"),
    "static": (),
}
_MINTING_OPTIONS = ("token_store", "token_timeout", "max_token_age", "retries", "backoff", "lock_timeout",
                    "session", "clock", "options")
_CLIENT_KEYS = frozenset({"api_version", "timeout"})
_URL_KEYS = ("login_url", "domain_url", "instance_url")


def plain_name(key: str) -> str:
    """How a setting is named when nobody says otherwise: its key."""
    return key


def flow_name(value: object, setting: str = "flow") -> str:
    """The canonical flow name (``refresh-token`` → ``refresh_token``), or ``ConfigurationError``."""
    if isinstance(value, str):
        name = value.strip().lower().replace("-", "_")
        if name in FLOWS:
            return name
    raise ConfigurationError(
        f"unknown Salesforce flow {value!r} in {setting}; expected one of {', '.join(FLOWS)}"
        " (hyphens or underscores)"
    )


def flow_keys(flow: str) -> frozenset[str]:
    """Every key ``flow`` reads (its own and, for a minting flow, the shared options)."""
    flow = flow_name(flow)
    keys = set(_REQUIRED[flow]) | set(_OPTIONAL[flow])
    if flow != "static":
        keys |= set(_MINTING_OPTIONS)
    return frozenset(keys)


def build_auth(
    settings: Mapping[str, Any],
    *,
    token_store: AuthStorage | None = None,
    names: Callable[[str], str] = plain_name,
) -> AuthSession:
    """An :class:`~authkit.salesforce.AuthSession` from ``settings``; ``ConfigurationError`` naming
    the setting (as ``names(key)`` spells it) when one is missing, unknown or unusable.

    ``settings["auth"]`` may instead be a ready ``AuthSession`` or a callable
    returning one.  Minting flows share their token through ``token_store``
    unless the settings give their own ``token_store`` (``None``: no sharing).
    """
    from authkit.salesforce import auth as flows

    options = {k: v for k, v in settings.items() if k not in _CLIENT_KEYS}
    if "auth" in options:
        ready = options.pop("auth")
        if options:
            raise ConfigurationError(f"Salesforce settings give {names('auth')} and also "
                                     f"{', '.join(names(k) for k in sorted(options))}")
        given = ready() if callable(ready) and not isinstance(ready, flows.AuthSession) else ready
        if not isinstance(given, flows.AuthSession):
            raise ConfigurationError(f"Salesforce setting {names('auth')} must be an AuthSession "
                                     "or a callable returning one")
        return given
    if options.get("flow") is None:
        raise ConfigurationError(
            f"no Salesforce settings: give {names('flow')} ({', '.join(FLOWS)}) and its options, "
            f"or {names('auth')}"
        )
    flow = flow_name(options.pop("flow"), names("flow"))
    allowed = flow_keys(flow)
    unknown = sorted(set(options) - allowed)
    if unknown:
        own = [*_REQUIRED[flow], *_OPTIONAL[flow]]
        shared = "" if flow == "static" else ", and the shared token_store, token_timeout, max_token_age, retries, " \
            "backoff, lock_timeout"
        raise ConfigurationError(
            f"bad Salesforce settings for the {flow} flow: unknown setting "
            f"{', '.join(names(k) for k in unknown)}; it takes {', '.join(names(k) for k in own)}{shared}"
        )
    options = {k: v for k, v in options.items() if not (v is None and k != "token_store")}
    for key in _REQUIRED[flow]:
        if _blank(options.get(key)):
            raise ConfigurationError(f"missing Salesforce setting {names(key)}: the {flow} flow needs it")
    for key in _URL_KEYS:
        if key in options:
            try:
                options[key] = normalize_url(options[key], names(key))
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(f"bad Salesforce setting: {exc}") from None
    if flow == "static":
        return flows.StaticTokenAuth(options["access_token"], options["instance_url"])

    options.setdefault("token_store", token_store)
    _coerce_options(options, names)
    if flow == "jwt":
        key, key_file = options.pop("private_key", None), options.pop("private_key_file", None)
        if key is not None and key_file is not None:
            raise ConfigurationError(f"give the Salesforce {names('private_key')} or {names('private_key_file')}, "
                                     "not both")
        if _blank(key) and _blank(key_file):
            raise ConfigurationError(f"missing Salesforce setting {names('private_key')} or "
                                     f"{names('private_key_file')}: the jwt flow needs one")
        # A file setting is always a path, never key text (and never echoed).
        options["private_key"] = Path(key_file) if key_file is not None else key
        key_setting = names("private_key_file" if key_file is not None else "private_key")
    else:
        key_setting = ""
    if flow == "refresh_token" and _blank(options.get("refresh_token")):
        if options.get("token_store") is None or _blank(options.get("username")):
            raise ConfigurationError(
                f"missing Salesforce setting {names('refresh_token')}: the refresh_token flow needs it "
                f"(or {names('username')} and a token store that holds it, after `authkit salesforce login`)")
        options["refresh_token"] = None
    if flow == "token_exchange" and isinstance(options.get("scopes"), str):
        options["scopes"] = options["scopes"].split()
    cls = {"jwt": flows.JwtAuth, "refresh_token": flows.RefreshTokenAuth,
           "client_credentials": flows.ClientCredentialsAuth, "password": flows.PasswordAuth,
           "token_exchange": flows.TokenExchangeAuth}[flow]
    try:
        session: AuthSession = cls(**options)
    except ConfigurationError as exc:
        hint = f" (check {key_setting})" if key_setting and "private key" in str(exc) else ""
        raise ConfigurationError(f"bad Salesforce settings for the {flow} flow: {exc}{hint}") from None
    except (TypeError, ValueError) as exc:
        # The message names a parameter and never a value (the flows make sure of that).
        raise ConfigurationError(f"bad Salesforce settings for the {flow} flow: {exc}") from None
    return session


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _coerce_options(options: dict[str, Any], names: Callable[[str], str]) -> None:
    """Numbers from strings (environment variables, settings files); ``token_timeout`` → ``timeout``."""
    if "token_timeout" in options:
        value = options.pop("token_timeout")
        if isinstance(value, str):
            value = [part for part in value.replace(",", " ").split()]
        if isinstance(value, (list, tuple)):
            parts = tuple(_number(v, names("token_timeout")) for v in value)
            if len(parts) == 1:
                options["timeout"] = parts[0]
            elif len(parts) == 2:
                options["timeout"] = parts
            else:
                raise ConfigurationError(f"Salesforce setting {names('token_timeout')} must be seconds "
                                         "or [connect, read] seconds")
        else:
            options["timeout"] = _number(value, names("token_timeout"))
    for key in ("max_token_age", "backoff", "lock_timeout"):
        if isinstance(options.get(key), str):
            options[key] = _number(options[key], names(key))
    if isinstance(options.get("retries"), str):
        try:
            options["retries"] = int(options["retries"])
        except ValueError:
            raise ConfigurationError(f"Salesforce setting {names('retries')} must be a whole number") from None


def _number(value: object, setting: str) -> float:
    if isinstance(value, bool):
        raise ConfigurationError(f"Salesforce setting {setting} must be a number of seconds")
    if isinstance(value, (int, float)):
        return float(value)
    try:
        number = float(str(value))
    except ValueError:
        raise ConfigurationError(f"Salesforce setting {setting} must be a number of seconds") from None
    if not math.isfinite(number):
        raise ConfigurationError(f"Salesforce setting {setting} must be a finite number of seconds")
    return number
