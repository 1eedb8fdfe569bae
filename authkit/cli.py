"""The ``authkit`` command: maintain a storage and check Salesforce credentials.

Usage::

    authkit init                      # create (or verify) the schema
    authkit stats [--json]            # live and expired tokens, sessions, kv entries
    authkit cleanup [--json]          # delete expired records; safe to run from cron
    authkit reencrypt                 # move every record to the newest encryption key
    authkit encrypt                   # encrypt a plaintext store in place (resumable)
    authkit salesforce check          # log in with SF_* variables and print org, user, instance

The storage comes from ``--storage URL`` or ``AUTHKIT_STORAGE_URL`` (default
``sqlite:///authkit.db``), encryption keys from ``AUTHKIT_ENCRYPTION_KEYS``.
The storage options work before or after the sub-command.

Exit status: 0 on success (and when ``cleanup`` skips because another run holds
the lock), 1 when the work failed (server down, wrong key, login refused), 2 for
bad usage or configuration (bad URL, missing variable).  A failure prints one
line on stderr, never a traceback (``--debug`` shows it), and no secret: URL
passwords, keys and Salesforce credentials are masked in everything printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import IO, Any

from authkit import __version__
from authkit.errors import (
    ApiError,
    AuthenticationError,
    AuthKitError,
    ConfigurationError,
)
from authkit.storage._redact import redact_url, url_secrets
from authkit.storage.base import DEFAULT_BATCH_SIZE, AuthStorage
from authkit.storage.keys import ENCRYPTION_KEY_FILE_ENV, keys_from_environment
from authkit.storage.url import ENCRYPTION_KEYS_ENV, _open_storage

__all__ = ["main", "STORAGE_URL_ENV", "DEFAULT_STORAGE_URL", "CLEANUP_LOCK", "REENCRYPT_LOCK"]

STORAGE_URL_ENV = "AUTHKIT_STORAGE_URL"
DEFAULT_STORAGE_URL = "sqlite:///authkit.db"
CLEANUP_LOCK = "authkit-cleanup"
REENCRYPT_LOCK = "authkit-reencrypt"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Credentials come from the environment (or a file) only: a value on the
# command line is visible to every user of the machine through ``ps``.
_SECRET_ENV = ("SF_CLIENT_SECRET", "SF_PASSWORD", "SF_SECURITY_TOKEN", "SF_REFRESH_TOKEN", "SF_PRIVATE_KEY",
               "SF_PRIVATE_KEY_PASSPHRASE", "SF_ACCESS_TOKEN")

_FLOWS = ("jwt", "refresh-token", "client-credentials", "password", "static")
_FLOW_NAMES = {
    "jwt": "the JWT bearer flow",
    "refresh-token": "the refresh token flow",
    "client-credentials": "the client credentials flow",
    "password": "the username-password flow",
    "static": "a static access token",
}


class _Failure(Exception):
    """An expected failure: reported as one line, with this exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


# -- masking secrets ------------------------------------------------------------


def _redact_url(url: str) -> str:
    """``url`` with its password (user-info or ``?password=``) replaced by ``***``, for printing."""
    return redact_url(url)


class _Scrubber:
    """Masks every known secret in text before it is printed.

    Error messages from authkit never hold secrets on purpose; this is the
    belt to those braces, for messages that quote a driver or a server.
    """

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def add(self, value: str | None) -> None:
        # Very short values would mask ordinary words; no real secret is that short.
        if value and len(value) >= 4:
            self._secrets.add(value)

    def add_url(self, url: str) -> None:
        # A driver may quote the password as written in the URL or percent-decoded;
        # url_secrets() gives both, from the user-info and from the query.
        for secret in url_secrets(url):
            self.add(secret)

    def __call__(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


# -- output ---------------------------------------------------------------------


class _Progress:
    """A one-line progress bar on a terminal; nothing at all anywhere else.

    Cron mails whatever a job prints, so off a terminal the bar stays silent
    and only the summary line is written.
    """

    def __init__(self, stream: IO[str], label: str, total: int | None = None) -> None:
        self._stream = stream
        self._label = label
        self._total = total
        self._enabled = _isatty(stream)
        self._last = 0.0
        self._drawn = False

    def update(self, done: int, force: bool = False) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:  # redraw at most 10 times a second
            return
        self._last = now
        if self._total:
            fraction = min(done / self._total, 1.0)
            filled = int(fraction * 30)
            line = f"{self._label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{self._total}"
        else:
            line = f"{self._label} ... {done} records"
        self._stream.write("\r" + line)
        self._stream.flush()
        self._drawn = True

    def finish(self) -> None:
        if self._drawn:
            self._stream.write("\r\x1b[K")  # erase the bar; the summary line follows on stdout
            self._stream.flush()


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# -- storage --------------------------------------------------------------------


def _storage_url(args: argparse.Namespace) -> str:
    url: str = getattr(args, "storage", None) or os.environ.get(STORAGE_URL_ENV) or DEFAULT_STORAGE_URL
    return url


@contextmanager
def _opened(args: argparse.Namespace, scrub: _Scrubber, *, create: bool,
            maintenance: bool = False) -> Iterator[AuthStorage]:
    """The storage the options name, closed afterwards; bad URLs become a usage failure.

    Only ``init`` (and a check that plays the application) creates the schema:
    ``stats`` or a cron ``cleanup`` pointed at a mistyped URL must fail loudly,
    not report zeros from a new, empty database.
    """
    url = _storage_url(args)
    scrub.add_url(url)
    for key in os.environ.get(ENCRYPTION_KEYS_ENV, "").split(","):
        scrub.add(key.strip())
    options: dict[str, Any] = {"create_schema": create}
    prefix = getattr(args, "prefix", None)
    if prefix is not None:
        options["prefix"] = prefix
    if not create:
        _check_sqlite_file(url)
    try:
        # maintenance: cleanup and stats work on an encrypted store without the keys
        # (they read no secret and write no record), so cron needs no keys.
        storage = _open_storage(url, maintenance=maintenance, **options)
    except ConfigurationError as exc:
        raise _Failure(f"bad storage configuration: {exc}", EXIT_USAGE) from exc
    except (ValueError, TypeError) as exc:
        raise _Failure(f"bad storage URL or option: {exc}", EXIT_USAGE) from exc
    with storage:
        yield storage


def _check_sqlite_file(url: str) -> None:
    """A missing SQLite file is a usage failure, before SQLite creates an empty one."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return  # open_storage() reports a bad URL in its own words
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return
    if database.startswith("file:") or os.path.exists(database):
        return
    raise _Failure(f"no SQLite database at {database}: create it with `authkit init`", EXIT_USAGE)


def _storage_label(args: argparse.Namespace) -> str:
    return _redact_url(_storage_url(args))


@contextmanager
def _exclusive(storage: AuthStorage, name: str, wait: float, ttl: float) -> Iterator[bool]:
    """Hold lock ``name``; yields False (holding nothing) if another holder kept it for ``wait`` s.

    Only the lock acquisition's ``TimeoutError`` means "skip": one raised by
    the work inside the block is a failure and propagates.
    """
    with ExitStack() as stack:
        try:
            stack.enter_context(storage.lock(name, timeout=wait, ttl=ttl))
        except TimeoutError:
            yield False
            return
        yield True


# -- commands -------------------------------------------------------------------


def _emit(out: IO[str], args: argparse.Namespace, line: str, data: dict[str, Any]) -> None:
    if getattr(args, "json", False):
        out.write(json.dumps(data, sort_keys=True) + "\n")
    elif not getattr(args, "quiet", False):
        out.write(line + "\n")


def _cmd_init(args: argparse.Namespace, out: IO[str], err: IO[str], scrub: _Scrubber) -> int:
    with _opened(args, scrub, create=not args.check) as storage:
        counts = storage.stats()  # a real round trip: proves the schema is there and readable
    records = sum(counts.values())
    what = "verified" if args.check else "ready"
    _emit(out, args, f"ok: schema {what} at {_storage_label(args)} ({records} records stored)",
          {"status": "ok", "storage": _storage_label(args), "records": records})
    return EXIT_OK


def _cmd_stats(args: argparse.Namespace, out: IO[str], err: IO[str], scrub: _Scrubber) -> int:
    with _opened(args, scrub, create=False, maintenance=True) as storage:
        counts = storage.stats()
    if args.json:
        out.write(json.dumps(counts, sort_keys=True) + "\n")
        return EXIT_OK
    out.write(f"storage: {_storage_label(args)}\n")
    out.write(f"{'':10}{'live':>10}{'expired':>10}\n")
    for kind in ("tokens", "sessions", "kv"):
        out.write(f"{kind:10}{counts.get(kind + '_live', 0):>10}{counts.get(kind + '_expired', 0):>10}\n")
    return EXIT_OK


def _cmd_cleanup(args: argparse.Namespace, out: IO[str], err: IO[str], scrub: _Scrubber) -> int:
    with (_opened(args, scrub, create=False, maintenance=True) as storage,
          _exclusive(storage, CLEANUP_LOCK, args.wait, args.lock_ttl) as held):
        if not held:
            _emit(out, args, "skipped: another cleanup is running",
                  {"status": "skipped", "reason": "another cleanup is running"})
            return EXIT_OK
        started = time.monotonic()
        total = None
        if _isatty(err):
            # Only a terminal pays for the count that sizes the bar.
            total = sum(v for k, v in storage.stats().items() if k.endswith("_expired"))
        progress = _Progress(err, "cleanup", total)
        try:
            report = storage.cleanup_expired(batch_size=args.batch_size,
                                             progress=lambda report: progress.update(report.total))
        finally:
            progress.finish()
        seconds = time.monotonic() - started
    _emit(out, args,
          f"cleanup: deleted {report.total} expired records (tokens {report.tokens}, sessions {report.sessions}, "
          f"kv {report.kv}) in {seconds:.2f} s",
          {"status": "ok", "tokens": report.tokens, "sessions": report.sessions, "kv": report.kv,
           "total": report.total, "seconds": round(seconds, 3)})
    return EXIT_OK


def _cmd_reencrypt(args: argparse.Namespace, out: IO[str], err: IO[str], scrub: _Scrubber) -> int:
    if keys_from_environment() is None:
        raise _Failure(f"reencrypt needs the keys in {ENCRYPTION_KEYS_ENV} (newest first, comma-separated) "
                       f"or {ENCRYPTION_KEY_FILE_ENV}", EXIT_USAGE)
    from authkit.storage.encrypted import EncryptedStorage

    with _opened(args, scrub, create=False) as storage:
        if not isinstance(storage, EncryptedStorage):
            raise _Failure("this storage is not encrypted; nothing to re-encrypt", EXIT_USAGE)
        with _exclusive(storage, REENCRYPT_LOCK, args.wait, args.lock_ttl) as held:
            if not held:
                _emit(out, args, "skipped: another reencrypt is running",
                      {"status": "skipped", "reason": "another reencrypt is running"})
                return EXIT_OK
            started = time.monotonic()
            progress = _Progress(err, "reencrypt")
            try:
                done = storage.reencrypt(batch_size=args.batch_size, progress=progress.update)
            finally:
                progress.finish()
            seconds = time.monotonic() - started
    _emit(out, args, f"reencrypt: {done} records moved to the newest key in {seconds:.2f} s",
          {"status": "ok", "records": done, "seconds": round(seconds, 3)})
    return EXIT_OK


def _cmd_encrypt(args: argparse.Namespace, out: IO[str], err: IO[str], scrub: _Scrubber) -> int:
    """Thin: the work, its batches, resumption and summary are EncryptedStorage.encrypt_existing()."""
    if keys_from_environment() is None:
        raise _Failure(f"encrypt needs the keys in {ENCRYPTION_KEYS_ENV} or {ENCRYPTION_KEY_FILE_ENV}", EXIT_USAGE)
    from authkit.storage.encrypted import EncryptedStorage

    with _opened(args, scrub, create=False) as storage:
        assert isinstance(storage, EncryptedStorage)  # keys are set: open_storage() wrapped it
        # The reencrypt lock: the two walks must not interleave.
        with _exclusive(storage, REENCRYPT_LOCK, args.wait, args.lock_ttl) as held:
            if not held:
                _emit(out, args, "skipped: another encrypt or reencrypt is running",
                      {"status": "skipped", "reason": "another encrypt or reencrypt is running"})
                return EXIT_OK
            if args.start:
                storage.begin_encrypt_existing()
                _emit(out, args, "encrypt: migration marked in progress; readers with keys accept plaintext "
                      "until `authkit encrypt` completes", {"status": "started"})
                return EXIT_OK
            total = sum(storage.stats().values()) if _isatty(err) else None
            progress = _Progress(err, "encrypt", total)
            started = time.monotonic()
            try:
                summary = storage.encrypt_existing(batch_size=args.batch_size, progress=progress.update)
            except KeyboardInterrupt:
                raise _Failure("interrupted; run `authkit encrypt` again to continue where it stopped",
                               EXIT_INTERRUPTED) from None
            finally:
                progress.finish()
            seconds = time.monotonic() - started
    sealed = summary["tokens"] + summary["sessions"] + summary["kv"]
    _emit(out, args,
          f"encrypt: sealed {sealed} records (tokens {summary['tokens']}, sessions {summary['sessions']}, "
          f"kv {summary['kv']}; {summary['already_sealed']} already sealed) in {seconds:.2f} s"
          + ("; resumed an interrupted run" if summary["resumed"] else ""),
          {"status": "ok", **summary, "sealed": sealed, "seconds": round(seconds, 3),
           "longest_write_seconds": round(summary["longest_write_seconds"], 4)})
    return EXIT_OK


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
    flow: str | None = args.flow or _env("SF_FLOW")
    if flow:
        if flow not in _FLOWS:
            raise _Failure(f"unknown flow {flow!r}; expected one of {', '.join(_FLOWS)}", EXIT_USAGE)
        return flow
    if _env("SF_PRIVATE_KEY") or args.private_key_file or _env("SF_PRIVATE_KEY_FILE"):
        return "jwt"
    if _env("SF_REFRESH_TOKEN"):
        return "refresh-token"
    if _env("SF_PASSWORD"):
        return "password"
    if _env("SF_CLIENT_SECRET") and (args.domain_url or _env("SF_DOMAIN_URL")):
        return "client-credentials"
    if _env("SF_ACCESS_TOKEN"):
        return "static"
    raise _Failure("no Salesforce credentials found: set SF_CLIENT_ID plus SF_PRIVATE_KEY_FILE and SF_USERNAME "
                   "(JWT), SF_REFRESH_TOKEN, SF_PASSWORD or SF_CLIENT_SECRET and SF_DOMAIN_URL; "
                   "see docs/cli.md", EXIT_USAGE)


def _build_auth(args: argparse.Namespace, flow: str, scrub: _Scrubber, token_store: AuthStorage | None) -> Any:
    """The ``AuthSession`` for ``flow``, from options first, then ``SF_*`` variables."""
    from authkit.salesforce import auth as sf

    for name in _SECRET_ENV:
        _env(name, scrub)
    if flow == "static":
        instance_url = args.instance_url or _env("SF_INSTANCE_URL")
        return sf.StaticTokenAuth(_need(_env("SF_ACCESS_TOKEN"), "SF_ACCESS_TOKEN"),
                                  _need(instance_url, "--instance-url or SF_INSTANCE_URL"))
    client_id = _need(args.client_id or _env("SF_CLIENT_ID"), "--client-id or SF_CLIENT_ID")
    username = args.username or _env("SF_USERNAME")
    secret = _env("SF_CLIENT_SECRET")
    login_url = args.login_url or _env("SF_LOGIN_URL")
    options: dict[str, Any] = {"token_store": token_store}
    if login_url and flow != "client-credentials":
        options["login_url"] = login_url
    if flow == "jwt":
        key_file = args.private_key_file or _env("SF_PRIVATE_KEY_FILE")
        private_key: str | None = _env("SF_PRIVATE_KEY")
        if not private_key and key_file:
            try:
                with open(key_file, encoding="utf-8") as handle:
                    private_key = handle.read()
            except OSError as exc:
                raise _Failure(f"cannot read the private key file {key_file}: {exc.strerror}", EXIT_USAGE) from exc
        scrub.add(private_key)
        audience = args.audience or _env("SF_AUDIENCE")
        if audience:
            options["audience"] = audience
        passphrase = _env("SF_PRIVATE_KEY_PASSPHRASE")
        if passphrase:
            options["passphrase"] = passphrase
        if secret:
            options["client_secret"] = secret  # lets the flow verify the response signature
        return sf.JwtAuth(client_id, _need(username, "--username or SF_USERNAME"),
                          _need(private_key, "SF_PRIVATE_KEY or --private-key-file / SF_PRIVATE_KEY_FILE"), **options)
    if flow == "refresh-token":
        if username:
            options["username"] = username  # names the identity in a shared token store
        return sf.RefreshTokenAuth(client_id, _need(_env("SF_REFRESH_TOKEN"), "SF_REFRESH_TOKEN"),
                                   client_secret=secret, **options)
    if flow == "client-credentials":
        return sf.ClientCredentialsAuth(client_id, _need(secret, "SF_CLIENT_SECRET"),
                                        _need(args.domain_url or _env("SF_DOMAIN_URL"),
                                              "--domain-url or SF_DOMAIN_URL"), **options)
    return sf.PasswordAuth(client_id, _need(secret, "SF_CLIENT_SECRET"), _need(username, "--username or SF_USERNAME"),
                           _need(_env("SF_PASSWORD"), "SF_PASSWORD"),
                           security_token=_env("SF_SECURITY_TOKEN") or "", **options)


def _cmd_salesforce_check(args: argparse.Namespace, out: IO[str], err: IO[str], scrub: _Scrubber) -> int:
    flow = _detect_flow(args)
    import requests

    from authkit.salesforce.client import SalesforceClient

    with ExitStack() as stack:
        # Only a shared-store check touches the storage: a plain check must not
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
            started = time.monotonic()
            token = auth.access_token()  # the login (or the token shared through the store)
            seconds = time.monotonic() - started
            scrub.add(token)
            info = _userinfo(client, auth, token)
        except AuthenticationError as exc:
            raise _Failure(_auth_failure(exc, flow)) from exc
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a finite number of seconds >= 0")
    return value


def _storage_options(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS defaults let the options sit before or after the sub-command
    # without the sub-parser's default overwriting a value given before it.
    parser.add_argument("--storage", metavar="URL", default=argparse.SUPPRESS,
                        help=f"storage URL (default: ${STORAGE_URL_ENV}, else {DEFAULT_STORAGE_URL})")
    parser.add_argument("--prefix", default=argparse.SUPPRESS,
                        help="table/key prefix (default: the backend's, authkit_ / authkit:)")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of a failure")


def _lock_options(parser: argparse.ArgumentParser, what: str, ttl: float) -> None:
    parser.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE, metavar="N",
                        help=f"records per batch, each batch its own short transaction (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--wait", type=_seconds, default=0.0, metavar="SECONDS",
                        help=f"wait this long for a running {what} to finish, then skip (default 0: skip at once)")
    parser.add_argument("--lock-ttl", type=_seconds, default=ttl, metavar="SECONDS",
                        help=f"a crashed run's lock frees itself after this long (default {ttl:g}); "
                             f"make it longer than your longest {what}")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _storage_options(common)
    parser = argparse.ArgumentParser(
        prog="authkit", description="Maintain an authkit storage and check Salesforce credentials.",
        epilog="Exit status: 0 ok or skipped, 1 failed, 2 bad usage or configuration. See docs/cli.md.")
    parser.add_argument("--version", action="version", version=f"authkit {__version__}")
    _storage_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    init = commands.add_parser("init", parents=[common], help="create the schema, or verify it with --check")
    init.add_argument("--check", action="store_true", help="only verify; never create anything")
    init.add_argument("--json", action="store_true", help="print the result as one JSON object")
    init.set_defaults(handler=_cmd_init)

    stats = commands.add_parser("stats", parents=[common], help="live and expired tokens, sessions and kv entries")
    stats.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    stats.set_defaults(handler=_cmd_stats)

    cleanup = commands.add_parser("cleanup", parents=[common],
                                  help="delete expired records (cron-safe: one run at a time)")
    _lock_options(cleanup, "cleanup", 600.0)
    cleanup.set_defaults(handler=_cmd_cleanup)

    reencrypt = commands.add_parser("reencrypt", parents=[common],
                                    help=f"re-encrypt every record with the first key in ${ENCRYPTION_KEYS_ENV}")
    _lock_options(reencrypt, "reencrypt", 3600.0)
    reencrypt.set_defaults(handler=_cmd_reencrypt)

    encrypt = commands.add_parser("encrypt", parents=[common],
                                  help="encrypt a plaintext store in place (resumable; readers keep working)")
    _lock_options(encrypt, "encrypt", 3600.0)
    encrypt.add_argument("--start", action="store_true",
                         help="only mark the migration as started (then roll the keys out, then run without it)")
    encrypt.set_defaults(handler=_cmd_encrypt)

    salesforce = commands.add_parser("salesforce", help="Salesforce commands")
    sf_commands = salesforce.add_subparsers(dest="sf_command", metavar="COMMAND", required=True)
    check = sf_commands.add_parser(
        "check", parents=[common], help="log in, call userinfo, print org, user and instance",
        description="Log in with a flow given by options or SF_* variables (secrets only from the environment: "
                    "SF_CLIENT_SECRET, SF_PRIVATE_KEY, SF_REFRESH_TOKEN, SF_PASSWORD, SF_SECURITY_TOKEN, "
                    "SF_ACCESS_TOKEN), call /services/oauth2/userinfo and print the org, user and instance.")
    check.add_argument("--flow", choices=_FLOWS, help="default: $SF_FLOW, else guessed from the SF_* variables set")
    check.add_argument("--client-id", help="connected app consumer key (default $SF_CLIENT_ID)")
    check.add_argument("--username", help="Salesforce username (default $SF_USERNAME)")
    check.add_argument("--private-key-file", metavar="PATH", help="JWT: PEM private key (default $SF_PRIVATE_KEY_FILE)")
    check.add_argument("--login-url", help="default $SF_LOGIN_URL, else https://login.salesforce.com")
    check.add_argument("--audience", help="JWT aud claim (default $SF_AUDIENCE, else the login host)")
    check.add_argument("--domain-url", help="client credentials: the My Domain URL (default $SF_DOMAIN_URL)")
    check.add_argument("--instance-url", help="static token: the instance URL (default $SF_INSTANCE_URL)")
    check.add_argument("--api-version", help="default $SF_API_VERSION, else the client's default")
    check.add_argument("--token-store", action="store_true",
                       help="share the token through the --storage store, as your app would")
    check.add_argument("--json", action="store_true", help="print the result as one JSON object")
    check.set_defaults(handler=_cmd_salesforce_check)
    return parser


def _die(err: IO[str], scrub: _Scrubber, message: str, status: int) -> int:
    text = " ".join(scrub(message).split())  # one line, whatever the message held
    err.write(f"authkit: error: {text}\n")
    err.flush()
    return status


def _configure_logging(debug: bool) -> None:
    """``--debug``: authkit's log on stderr.  Otherwise none of it: a failure is one line.

    (Without a handler, Python would print authkit's warnings, such as a retried
    token request, through its last-resort handler.)
    """
    if debug:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    else:
        logging.getLogger("authkit").addHandler(logging.NullHandler())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status (the console script exits with it)."""
    args = _parser().parse_args(argv)
    _configure_logging(bool(getattr(args, "debug", False)))
    out, err = sys.stdout, sys.stderr
    scrub = _Scrubber()
    handler: Callable[[argparse.Namespace, IO[str], IO[str], _Scrubber], int] = args.handler
    try:
        return handler(args, out, err, scrub)
    except KeyboardInterrupt:
        return _die(err, scrub, "interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        # `authkit stats | head -1`: the reader left. Nothing to report, and nothing more to
        # flush into the closed pipe at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        status, message = _describe(exc)
        if status is None:
            raise
        if getattr(args, "json", False):
            out.write(json.dumps({"status": "error", "error": " ".join(scrub(message).split())}) + "\n")
        return _die(err, scrub, message, status)


def _describe(exc: Exception) -> tuple[int | None, str]:
    """Exit status and message of an expected failure; ``(None, "")`` for a bug (traceback)."""
    if isinstance(exc, _Failure):
        return exc.status, str(exc)
    if isinstance(exc, ConfigurationError):
        return EXIT_USAGE, f"{type(exc).__name__}: {exc}"
    if isinstance(exc, AuthenticationError):
        return EXIT_FAILED, _auth_failure(exc, "")
    if isinstance(exc, (AuthKitError, TimeoutError)):
        return EXIT_FAILED, f"{type(exc).__name__}: {exc}"
    return None, ""


if __name__ == "__main__":
    sys.exit(main())
