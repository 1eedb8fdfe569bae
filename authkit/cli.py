"""The ``authkit`` command: maintain a storage and check Salesforce credentials.

Usage::

    authkit init                      # create (or verify) the schema
    authkit stats [--json]            # live and expired tokens, sessions, kv entries
    authkit cleanup [--json]          # delete expired records; safe to run from cron
    authkit reencrypt                 # move every record to the newest encryption key
    authkit encrypt                   # encrypt a plaintext store in place (resumable)
    authkit salesforce check          # log in with SF_* variables and print org, user, instance
    authkit salesforce query SOQL     # rows as CSV / JSON lines (--bulk: a Bulk API 2.0 job)
    authkit salesforce load OP SOBJECT FILE   # insert/update/upsert/delete a CSV with Bulk API 2.0
    authkit salesforce login          # log in in a browser; keep the refresh token (--token-store)
    authkit salesforce logout         # revoke it and remove it from the store

The storage comes from ``--storage URL`` or ``AUTHKIT_STORAGE_URL`` (default
``sqlite:///authkit.db``), encryption keys from ``AUTHKIT_ENCRYPTION_KEYS``.
The storage options work before or after the sub-command.  The maintenance
sub-commands live in :mod:`authkit._cli_maintenance`, shared with ``flask authkit``
and ``manage.py authkit_...``; how every command runs (one-line failures,
``--json``, exit statuses, masking) in :mod:`authkit._cli_run`.

Exit status: 0 on success (and when ``cleanup`` skips because another run holds
the lock), 1 when the work failed (server down, wrong key, login refused), 2 for
bad usage or configuration (bad URL, missing variable).  A failure prints one
line on stderr, never a traceback (``--debug`` shows it), and no secret: URL
passwords, keys and Salesforce credentials are masked in everything printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from typing import IO, Any

from authkit import __version__
from authkit._cli_maintenance import add_commands
from authkit._cli_run import (
    DOCS_URL,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    _epilog,
    _Failure,
    _Parser,
    _run,
    _Scrubber,
)
from authkit._cli_storage import DEFAULT_STORAGE_URL as DEFAULT_STORAGE_URL
from authkit._cli_storage import STORAGE_URL_ENV as STORAGE_URL_ENV
from authkit._cli_storage import _opened, _storage_label, _storage_options
from authkit.errors import ApiError, AuthenticationError, ConfigurationError
from authkit.maintenance import CLEANUP_LOCK as CLEANUP_LOCK
from authkit.maintenance import REENCRYPT_LOCK as REENCRYPT_LOCK
from authkit.storage.base import AuthStorage

__all__ = ["main", "STORAGE_URL_ENV", "DEFAULT_STORAGE_URL", "CLEANUP_LOCK", "REENCRYPT_LOCK"]

# Credentials come from the environment (or a file) only: a value on the
# command line is visible to every user of the machine through ``ps``.
_SECRET_ENV = ("SF_CLIENT_SECRET", "SF_PASSWORD", "SF_SECURITY_TOKEN", "SF_REFRESH_TOKEN", "SF_PRIVATE_KEY",
               "SF_PRIVATE_KEY_PASSPHRASE", "SF_ACCESS_TOKEN", "SF_SUBJECT_TOKEN")

_FLOWS = ("jwt", "refresh-token", "client-credentials", "password", "token-exchange", "static")
_FLOW_NAMES = {
    "jwt": "the JWT bearer flow",
    "token-exchange": "the token exchange flow",
    "refresh-token": "the refresh token flow",
    "client-credentials": "the client credentials flow",
    "password": "the username-password flow",
    "static": "a static access token",
}


# -- salesforce check -----------------------------------------------------------


def _env(name: str, scrub: _Scrubber | None = None) -> str | None:
    value = os.environ.get(name) or None
    if scrub is not None:
        scrub.add(value)
    return value


def _need(value: str | None, what: str) -> str:
    if not value:
        raise _Failure(f"missing {what}", EXIT_USAGE)
    return value


def _detect_flow(args: argparse.Namespace) -> str:
    from authkit.salesforce.settings import flow_name

    flow: str | None = args.flow or _env("SF_FLOW")
    if flow:
        try:
            return flow_name(flow, "--flow / SF_FLOW").replace("_", "-")
        except ConfigurationError as exc:
            raise _Failure(str(exc), EXIT_USAGE) from None
    if _env("SF_PRIVATE_KEY") or args.private_key_file or _env("SF_PRIVATE_KEY_FILE"):
        return "jwt"
    if _env("SF_REFRESH_TOKEN"):
        return "refresh-token"
    if _env("SF_PASSWORD"):
        return "password"
    if _env("SF_CLIENT_SECRET") and (args.domain_url or _env("SF_DOMAIN_URL")):
        return "client-credentials"
    if _env("SF_SUBJECT_TOKEN"):
        return "token-exchange"
    if _env("SF_ACCESS_TOKEN"):
        return "static"
    raise _Failure("no Salesforce credentials found: set SF_CLIENT_ID plus SF_PRIVATE_KEY_FILE and SF_USERNAME "
                   "(JWT), SF_REFRESH_TOKEN, SF_PASSWORD or SF_CLIENT_SECRET and SF_DOMAIN_URL; "
                   f"see {DOCS_URL}/cli.md", EXIT_USAGE)


# The command's spelling of each Salesforce setting (authkit.salesforce.settings keys):
# an option (None: environment only, for secrets) and an environment variable.
_SETTINGS: dict[str, tuple[str | None, str]] = {
    "client_id": ("client_id", "SF_CLIENT_ID"),
    "client_secret": (None, "SF_CLIENT_SECRET"),
    "username": ("username", "SF_USERNAME"),
    "password": (None, "SF_PASSWORD"),
    "security_token": (None, "SF_SECURITY_TOKEN"),
    "private_key": (None, "SF_PRIVATE_KEY"),
    "private_key_file": ("private_key_file", "SF_PRIVATE_KEY_FILE"),
    "passphrase": (None, "SF_PRIVATE_KEY_PASSPHRASE"),
    "login_url": ("login_url", "SF_LOGIN_URL"),
    "audience": ("audience", "SF_AUDIENCE"),
    "domain_url": ("domain_url", "SF_DOMAIN_URL"),
    "instance_url": ("instance_url", "SF_INSTANCE_URL"),
    "access_token": (None, "SF_ACCESS_TOKEN"),
    "refresh_token": (None, "SF_REFRESH_TOKEN"),
    "subject_token": (None, "SF_SUBJECT_TOKEN"),
    "subject_token_type": ("subject_token_type", "SF_SUBJECT_TOKEN_TYPE"),
}


def _setting_name(key: str) -> str:
    option, env = _SETTINGS.get(key, (None, "SF_" + key.upper()))
    return f"--{option.replace('_', '-')} or {env}" if option else env


def _build_auth(args: argparse.Namespace, flow: str, scrub: _Scrubber, token_store: AuthStorage | None) -> Any:
    """The ``AuthSession`` for ``flow``, from options first, then ``SF_*`` variables."""
    from authkit.salesforce.settings import build_auth, flow_keys

    for name in _SECRET_ENV:
        _env(name, scrub)
    keys = flow_keys(flow)
    settings: dict[str, Any] = {"flow": flow}
    for key, (option, env) in _SETTINGS.items():
        if key in keys:
            value = (getattr(args, option, None) if option else None) or _env(env)
            if value:
                settings[key] = value
    if flow != "static":
        settings["token_store"] = token_store
    try:
        return build_auth(settings, names=_setting_name)
    except ConfigurationError as exc:
        raise _Failure(str(exc), EXIT_USAGE) from None


def _client_for(args: argparse.Namespace, scrub: _Scrubber, stack: ExitStack) -> tuple[str, Any, Any]:
    """The flow, auth session and client that the options and ``SF_*`` variables name; ``stack`` closes them.

    Shared by ``salesforce check`` and the bulk commands: bad settings are a usage failure.
    """
    from authkit.salesforce.client import SalesforceClient

    flow = _detect_flow(args)
    # Only a shared-store command touches the storage: a plain one must not
    # leave an authkit.db behind in the current directory.
    store = stack.enter_context(_opened(args, scrub, create=True)) if args.token_store else None
    try:
        auth = _build_auth(args, flow, scrub, store)
    except (ValueError, TypeError) as exc:
        raise _Failure(f"bad Salesforce setting: {exc}", EXIT_USAGE) from exc
    client_options: dict[str, Any] = {}
    api_version = args.api_version or _env("SF_API_VERSION")
    if api_version:
        client_options["api_version"] = api_version
    try:
        client = stack.enter_context(SalesforceClient(auth, **client_options))
    except (ValueError, TypeError) as exc:
        raise _Failure(f"bad Salesforce setting: {exc}", EXIT_USAGE) from exc
    return flow, auth, client


def _cmd_salesforce_check(args: argparse.Namespace, out: IO[str], err: IO[str], scrub: _Scrubber) -> int:
    import requests

    with ExitStack() as stack:
        flow, auth, client = _client_for(args, scrub, stack)
        try:
            started = time.monotonic()
            token = auth.access_token()  # the login (or the token shared through the store)
            seconds = time.monotonic() - started
            scrub.add(token)
            info = _userinfo(client, auth, token)
        except AuthenticationError as exc:
            raise _Failure(_auth_failure(exc, flow)) from exc
        except ApiError as exc:
            if flow == "static" and exc.status_code in (401, 403):
                # userinfo answers a dead token with 403 "Bad_OAuth_Token": nothing to mint a new one with.
                raise _Failure(f"Salesforce refused the access token ({exc.status_code} {exc.error_code or ''}".rstrip()
                               + "): it expired or was revoked (hint: get a new SF_ACCESS_TOKEN, e.g. "
                               "`sf org display`, or use a flow that mints tokens: JWT, refresh token, ...)") from exc
            raise
        except requests.RequestException as exc:
            raise _Failure(f"cannot reach Salesforce: {type(exc).__name__}") from exc
        instance = auth.instance_url
    org = info.get("organization_id") or "?"
    user = info.get("preferred_username") or info.get("email") or "?"
    user_id = info.get("user_id") or "?"
    name = info.get("name")
    data = {"status": "ok", "flow": flow, "organization_id": org, "username": user, "user_id": user_id,
            "name": name, "instance_url": instance, "token_store": bool(args.token_store),
            "seconds": round(seconds, 3)}
    if args.json:
        out.write(json.dumps(data, sort_keys=True) + "\n")
        return EXIT_OK
    out.write(f"ok: authenticated with {_FLOW_NAMES[flow]} in {seconds:.2f} s\n")
    out.write(f"org:      {org}\n")
    out.write(f"user:     {user} ({user_id}){' ' + name if name else ''}\n")
    out.write(f"instance: {instance}\n")
    if args.token_store:
        out.write(f"token store: {_storage_label(args)}\n")
    return EXIT_OK


def _userinfo(client: Any, auth: Any, token: str) -> dict[str, Any]:
    """``/services/oauth2/userinfo``, retried once with a new token if Salesforce rejects this one.

    userinfo answers a dead token with 403 ``Bad_OAuth_Token`` rather than the
    REST API's 401, which the client's own retry does not cover; a stale token
    from a shared store must not fail the check.
    """
    for attempt in (1, 2):
        try:
            info = client.get("/services/oauth2/userinfo")
        except ApiError as exc:
            if attempt == 2 or exc.status_code not in (401, 403):
                raise
            auth.invalidate(token)
            token = auth.access_token()
            continue
        if not isinstance(info, dict):
            raise _Failure("userinfo did not return a JSON object")
        return info
    raise AssertionError("unreachable")


_HINTS = {
    "invalid_client_id": "check SF_CLIENT_ID (the connected app's consumer key)",
    "invalid_client": "check the consumer key and secret, and that the flow is enabled on the connected app",
    "unsupported_grant_type": "enable this OAuth flow on the connected app",
    "invalid_app_access": "the user's profile or permission set does not grant access to the connected app",
}


def _auth_failure(exc: AuthenticationError, flow: str) -> str:
    """One line: Salesforce's own error and, for the usual suspects, what to check."""
    if exc.error is None:  # no OAuth error body: the endpoint was unreachable or answered garbage
        return f"authentication failed: {exc}"
    code = exc.error
    description = exc.error_description or str(exc)
    hint = _HINTS.get(code)
    lowered = description.lower()
    if code == "invalid_grant":
        if "audience" in lowered:
            hint = "set SF_AUDIENCE / --audience, or the login URL: https://test.salesforce.com for sandboxes"
        elif "approved" in lowered:
            hint = "pre-authorize the user: connected app > Manage > Profiles or Permission Sets"
        elif "expired authorization code" in lowered:
            # What Salesforce answers to a JWT whose exp it considers past: a skewed clock.
            hint = "check this machine's clock (NTP): a JWT assertion is valid for 3 minutes"
        elif "expired" in lowered or "revoked" in lowered:
            hint = "the refresh token was revoked or expired; authorize again"
        elif "locked" in lowered:
            hint = "the user is locked out: Setup > Users"
        elif "authentication failure" in lowered:
            hint = "check username, password and security token, and the login URL (sandbox or production)"
        elif flow == "jwt":
            hint = "check the consumer key, the username, and the certificate on the connected app"
    line = f"authentication failed: {code}: {description}"
    return f"{line} (hint: {hint})" if hint else line


# -- the parser -----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    _storage_options(common)
    parser = _Parser(
        prog="authkit", description="Maintain an authkit storage and check Salesforce credentials.",
        epilog=_epilog())
    parser.add_argument("--version", action="version", version=f"authkit {__version__}")
    _storage_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # init, stats, cleanup, reencrypt, sessions, tokens: the same as flask authkit / manage.py authkit_...
    add_commands(commands, parents=[common])

    salesforce = commands.add_parser("salesforce", help="Salesforce commands")
    sf_commands = salesforce.add_subparsers(dest="sf_command", metavar="COMMAND", required=True)
    check = sf_commands.add_parser(
        "check", parents=[common], help="log in, call userinfo, print org, user and instance",
        description="Log in with a flow given by options or SF_* variables (secrets only from the environment: "
                    "SF_CLIENT_SECRET, SF_PRIVATE_KEY, SF_REFRESH_TOKEN, SF_PASSWORD, SF_SECURITY_TOKEN, "
                    "SF_ACCESS_TOKEN), call /services/oauth2/userinfo and print the org, user and instance.")
    check.add_argument("--flow", metavar="FLOW", help=f"{', '.join(_FLOWS)} (or with underscores); "
                       "default: $SF_FLOW, else guessed from the SF_* variables set")
    check.add_argument("--client-id", help="connected app consumer key (default $SF_CLIENT_ID)")
    check.add_argument("--username", help="Salesforce username (default $SF_USERNAME)")
    check.add_argument("--private-key-file", metavar="PATH", help="JWT: PEM private key (default $SF_PRIVATE_KEY_FILE)")
    check.add_argument("--login-url", help="default $SF_LOGIN_URL, else https://login.salesforce.com")
    check.add_argument("--audience", help="JWT aud claim (default $SF_AUDIENCE, else the login host)")
    check.add_argument("--domain-url", help="client credentials: the My Domain URL (default $SF_DOMAIN_URL)")
    check.add_argument("--instance-url", help="static token: the instance URL (default $SF_INSTANCE_URL)")
    check.add_argument("--subject-token-type", help="token exchange: the subject token's type "
                       "(default $SF_SUBJECT_TOKEN_TYPE)")
    check.add_argument("--api-version", help="default $SF_API_VERSION, else the client's default")
    check.add_argument("--token-store", action="store_true",
                       help="share the token through the --storage store, as your app would")
    check.add_argument("--json", action="store_true", help="print the result as one JSON object")
    check.set_defaults(handler=_cmd_salesforce_check)
    from authkit._cli_bulk import add_parsers as add_bulk_parsers  # salesforce query / load
    from authkit._cli_login import add_commands as add_login_commands  # salesforce login / logout

    add_bulk_parsers(sf_commands, common)
    add_login_commands(sf_commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status (the console script exits with it)."""
    return _run(_parser(), sys.argv[1:] if argv is None else argv, out=sys.stdout, err=sys.stderr,
                describe=_describe_salesforce)


def _describe_salesforce(exc: Exception) -> tuple[int, str] | None:
    """A login refused outside ``salesforce check``'s own handling: Salesforce's error and a hint."""
    if isinstance(exc, AuthenticationError):
        return EXIT_FAILED, _auth_failure(exc, "")
    return None


if __name__ == "__main__":
    sys.exit(main())
