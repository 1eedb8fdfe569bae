"""Maintenance of a storage: one implementation behind every command that does it.

``authkit init|stats|cleanup|reencrypt|encrypt|sessions revoke|tokens revoke``,
``flask authkit ...`` and ``manage.py authkit_...`` are thin shells over this
module: the same sub-commands, options, one-line errors, ``--json`` output
(on failure too) and exit statuses, whichever one runs.

From Python, the cron-safe cleanup is :func:`run_cleanup`::

    >>> from authkit.maintenance import run_cleanup
    >>> report = run_cleanup(storage, batch_size=500)   # None if another run holds the lock

Exit statuses of the commands: 0 on success (and when ``cleanup`` skips
because another run holds the lock), 1 when the work failed (server down,
wrong key, login refused), 2 for bad usage or configuration (bad URL, bad
option), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from typing import IO, Any, NoReturn

from authkit.errors import AuthenticationError, AuthKitError, ConfigurationError
from authkit.models import CleanupReport
from authkit.storage._redact import redact_url, url_secrets
from authkit.storage.base import DEFAULT_BATCH_SIZE, AuthStorage
from authkit.storage.keys import ENCRYPTION_KEY_FILE_ENV, keys_from_environment
from authkit.storage.url import ENCRYPTION_KEYS_ENV, _open_storage

__all__ = ["CLEANUP_LOCK", "REENCRYPT_LOCK", "run_cleanup"]

CLEANUP_LOCK = "authkit-cleanup"
"""The lock every cleanup holds (the ``authkit`` command, Flask, Django, the
every-N-requests cleanup), so overlapping runs from any of them never work at
the same time."""

REENCRYPT_LOCK = "authkit-reencrypt"
"""The lock ``reencrypt`` holds: one re-encryption at a time."""

_log = logging.getLogger("authkit.maintenance")

STORAGE_URL_ENV = "AUTHKIT_STORAGE_URL"
DEFAULT_STORAGE_URL = "sqlite:///authkit.db"
DOCS_URL = "https://github.com/authkit-sf/authkit-sf/blob/main/docs"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# A cleanup of millions of rows can take minutes; the lock must outlive it.
# The holder refreshes nothing, so the TTL is the longest a run may take
# before a second run may start; a crashed run frees the lock after it.
CLEANUP_LOCK_TTL = 600.0
REENCRYPT_LOCK_TTL = 3600.0

# Bounds of the numeric options: beyond them a value is a typo, not a plan, and
# some backends cannot even represent it (a 20-digit LIMIT, a lock TTL of 1e308 s).
_MAX_BATCH_SIZE = 1_000_000
_MAX_SECONDS = 7 * 24 * 3600.0


class _Failure(Exception):
    """An expected failure: reported as one line, with this exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


# -- cleanup, the library call ------------------------------------------------------------


def run_cleanup(
    storage: AuthStorage,
    *,
    batch_size: int | None = None,
    wait: float = 0.0,
    lock_ttl: float = CLEANUP_LOCK_TTL,
    progress: Callable[[CleanupReport], None] | None = None,
) -> CleanupReport | None:
    """Delete expired tokens, sessions and kv entries under :data:`CLEANUP_LOCK`.

    Returns the :class:`~authkit.models.CleanupReport`, or ``None`` when
    another cleanup held the lock for longer than ``wait`` seconds (the
    default ``0`` gives up at once: the other run is doing the work).
    ``lock_ttl`` is how long a crashed run keeps the lock; make it longer than
    your longest cleanup.
    """
    _check_seconds(wait, "wait", allow_zero=True)
    _check_seconds(lock_ttl, "lock_ttl", allow_zero=False)
    with _exclusive(storage, CLEANUP_LOCK, float(wait), float(lock_ttl)) as held:
        if not held:
            return None
        return storage.cleanup_expired(batch_size=batch_size, progress=progress)


def _check_seconds(value: object, name: str, *, allow_zero: bool) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number of seconds")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero) or value > _MAX_SECONDS:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a number of seconds {bound} and at most {_MAX_SECONDS:g}")


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


class _CleanupEveryN:
    """Cleanup every ``n`` requests, for apps without cron (Flask's and Django's opt-in setting).

    :meth:`tick` counts a request; every ``n``-th starts :func:`run_cleanup`
    on a background thread, so no request waits for it, and never a second one
    while one runs in this process (other processes are kept out by the lock).
    A failure is logged, never raised into a request.
    """

    def __init__(self, storage: Callable[[], AuthStorage], n: int) -> None:
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError("the cleanup interval must be a whole number of requests")
        if n <= 0:
            raise ValueError("the cleanup interval must be > 0 requests")
        self._storage = storage
        self._n = n
        self._count = 0
        self._mutex = threading.Lock()
        self._running: threading.Thread | None = None

    def tick(self) -> threading.Thread | None:
        """Count one request; return the cleanup thread if this request started one."""
        with self._mutex:
            self._count += 1
            if self._count < self._n:
                return None
            self._count = 0
            if self._running is not None and self._running.is_alive():
                return None
            thread = threading.Thread(target=self._run, name="authkit-cleanup", daemon=True)
            self._running = thread
        thread.start()
        return thread

    def _run(self) -> None:
        try:
            report = run_cleanup(self._storage())
        except Exception as exc:  # a background job has nobody to raise to
            _log.warning("background cleanup failed: %s: %s", type(exc).__name__, exc)
            return
        if report is None:
            _log.debug("background cleanup skipped: another cleanup is running")
        else:
            _log.info("background cleanup deleted %d expired records", report.total)


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


def _emit(out: IO[str], args: argparse.Namespace, line: str, data: dict[str, Any]) -> None:
    if getattr(args, "json", False):
        out.write(json.dumps(data, sort_keys=True) + "\n")
    elif not getattr(args, "quiet", False):
        out.write(line + "\n")


def _summary(report: CleanupReport, seconds: float) -> str:
    """The one summary line of a cleanup, whichever shell ran it."""
    return (f"cleanup: deleted {report.total} expired records (tokens {report.tokens}, sessions {report.sessions}, "
            f"kv {report.kv}) in {seconds:.2f} s")


# -- storage --------------------------------------------------------------------

StorageSource = Callable[[bool], AbstractContextManager[AuthStorage]]
"""How a shell provides its storage: called with ``create`` (whether the schema
may be created), returns a context manager yielding the storage.  The
``authkit`` command opens (and closes) one from ``--storage``; Flask and Django
lend the app's."""


def _storage_url(args: argparse.Namespace) -> str:
    url: str = getattr(args, "storage", None) or os.environ.get(STORAGE_URL_ENV) or DEFAULT_STORAGE_URL
    return url


def _storage_label(args: argparse.Namespace) -> str:
    label: str | None = getattr(args, "storage_label", None)
    return label if label is not None else _redact_url(_storage_url(args))


@contextmanager
def _opened(args: argparse.Namespace, scrub: _Scrubber, *, create: bool,
            maintenance: bool = False) -> Iterator[AuthStorage]:
    """The storage the options name, closed afterwards; bad URLs become a usage failure.

    Only ``init`` (and a check that plays the application) creates the schema:
    ``stats`` or a cron ``cleanup`` pointed at a mistyped URL must fail loudly,
    not report zeros from a new, empty database.  A framework shell puts its
    app's storage in ``args.storage_source`` instead.
    """
    for key in os.environ.get(ENCRYPTION_KEYS_ENV, "").split(","):
        scrub.add(key.strip())
    source: StorageSource | None = getattr(args, "storage_source", None)
    if source is not None:
        with ExitStack() as stack:
            with _configuration_failures():
                storage = stack.enter_context(source(create))
            yield storage
        return
    url = _storage_url(args)
    scrub.add_url(url)
    options: dict[str, Any] = {"create_schema": create}
    prefix = getattr(args, "prefix", None)
    if prefix is not None:
        options["prefix"] = prefix
    if not create:
        _check_sqlite_file(url)
    with _configuration_failures():
        # maintenance: cleanup and stats work on an encrypted store without the keys
        # (they read no secret and write no record), so cron needs no keys.
        storage = _open_storage(url, maintenance=maintenance, **options)
    with storage:
        yield storage


@contextmanager
def _configuration_failures() -> Iterator[None]:
    """Opening a storage: a bad URL, option or setting is a usage failure (exit 2), not a traceback."""
    try:
        yield
    except ConfigurationError as exc:
        raise _Failure(f"bad storage configuration: {exc}", EXIT_USAGE) from exc
    except (ValueError, TypeError) as exc:
        raise _Failure(f"bad storage URL or option: {exc}", EXIT_USAGE) from exc


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


def _lent(storage: AuthStorage | Callable[[], AuthStorage]) -> StorageSource:
    """A :data:`StorageSource` for a storage the app owns: used, never closed."""

    def source(create: bool) -> AbstractContextManager[AuthStorage]:
        return nullcontext(storage() if callable(storage) and not isinstance(storage, AuthStorage) else storage)

    return source


# -- the commands -------------------------------------------------------------------


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
    with _opened(args, scrub, create=False, maintenance=True) as storage:
        started = time.monotonic()
        total = None
        if _isatty(err):
            # Only a terminal pays for the count that sizes the bar.
            total = sum(v for k, v in storage.stats().items() if k.endswith("_expired"))
        progress = _Progress(err, "cleanup", total)
        try:
            report = run_cleanup(storage, batch_size=args.batch_size, wait=args.wait, lock_ttl=args.lock_ttl,
                                 progress=lambda report: progress.update(report.total))
        finally:
            progress.finish()
        seconds = time.monotonic() - started
    if report is None:
        _emit(out, args, "skipped: another cleanup is running",
              {"status": "skipped", "reason": "another cleanup is running"})
        return EXIT_OK
    _emit(out, args, _summary(report, seconds),
          {"status": "ok", "tokens": report.tokens, "sessions": report.sessions, "kv": report.kv,
           "total": report.total, "seconds": round(seconds, 3)})
    return EXIT_OK


def _cmd_reencrypt(args: argparse.Namespace, out: IO[str], err: IO[str], scrub: _Scrubber) -> int:
    from authkit.storage.encrypted import EncryptedStorage

    if getattr(args, "storage_source", None) is None and keys_from_environment() is None:
        raise _Failure(f"reencrypt needs the keys in {ENCRYPTION_KEYS_ENV} (newest first, comma-separated) "
                       f"or {ENCRYPTION_KEY_FILE_ENV}", EXIT_USAGE)
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
                done = storage.reencrypt(batch_size=args.batch_size or DEFAULT_BATCH_SIZE, progress=progress.update)
            finally:
                progress.finish()
            seconds = time.monotonic() - started
    _emit(out, args, f"reencrypt: {done} records moved to the newest key in {seconds:.2f} s",
          {"status": "ok", "records": done, "seconds": round(seconds, 3)})
    return EXIT_OK


def _cmd_encrypt(args: argparse.Namespace, out: IO[str], err: IO[str], scrub: _Scrubber) -> int:
    """Thin: the work, its batches, resumption and summary are EncryptedStorage.encrypt_existing()."""
    from authkit.storage.encrypted import EncryptedStorage

    if getattr(args, "storage_source", None) is None and keys_from_environment() is None:
        raise _Failure(f"encrypt needs the keys in {ENCRYPTION_KEYS_ENV} or {ENCRYPTION_KEY_FILE_ENV}", EXIT_USAGE)
    with _opened(args, scrub, create=False) as storage:
        if not isinstance(storage, EncryptedStorage):
            raise _Failure("this storage has no encryption keys configured; nothing to encrypt with", EXIT_USAGE)
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
                summary = storage.encrypt_existing(batch_size=args.batch_size or DEFAULT_BATCH_SIZE,
                                                   progress=progress.update)
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


def _encrypt_options(parser: argparse.ArgumentParser) -> None:
    _lock_options(parser, "encrypt", REENCRYPT_LOCK_TTL)
    parser.add_argument("--start", action="store_true",
                        help="only mark the migration as started (then roll the keys out, then run without it)")


def _cmd_sessions_revoke(args: argparse.Namespace, out: IO[str], err: IO[str], scrub: _Scrubber) -> int:
    scrub.add(args.keep)  # a session id is a bearer credential: never printed
    with _opened(args, scrub, create=False) as storage:
        deleted = storage.delete_user_sessions(args.user, keep=args.keep)
    kept = " (kept the one given by --keep)" if args.keep is not None else ""
    _emit(out, args, f"sessions revoke: deleted {deleted} sessions of user {args.user!r}{kept}",
          {"status": "ok", "user": args.user, "deleted": deleted, "kept": args.keep is not None})
    return EXIT_OK


def _cmd_tokens_revoke(args: argparse.Namespace, out: IO[str], err: IO[str], scrub: _Scrubber) -> int:
    with _opened(args, scrub, create=False) as storage:
        deleted = storage.delete_user_tokens(args.user)
    _emit(out, args, f"tokens revoke: deleted {deleted} tokens of user {args.user!r}",
          {"status": "ok", "user": args.user, "deleted": deleted})
    return EXIT_OK


# -- the parser -----------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (a :class:`_Failure`, exit 2), not usage + error."""

    def error(self, message: str) -> NoReturn:
        raise _Failure(f"{message} (see: {self.prog} --help)", EXIT_USAGE)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text[:40]!r}") from None
    if not 0 < value <= _MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(f"must be > 0 and at most {_MAX_BATCH_SIZE}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text[:40]!r}") from None
    if not 0 <= value <= _MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0 and at most {_MAX_SECONDS:g}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0 seconds")
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


def _output_options(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as one JSON object")


def _lock_options(parser: argparse.ArgumentParser, what: str, ttl: float) -> None:
    parser.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                        help="at most N records per batch, each batch its own short transaction "
                             f"(default: cleanup sizes them to take ~20 ms each; reencrypt {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--wait", type=_seconds, default=0.0, metavar="SECONDS",
                        help=f"wait this long for a running {what} to finish, then skip (default 0: skip at once)")
    parser.add_argument("--lock-ttl", type=_positive_seconds, default=ttl, metavar="SECONDS",
                        help=f"a crashed run's lock frees itself after this long (default {ttl:g}); "
                             f"make it longer than your longest {what}")
    _output_options(parser, "the summary")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


Handler = Callable[[argparse.Namespace, IO[str], IO[str], _Scrubber], int]


def _record_id(text: str) -> str:
    from authkit.storage._codec import check_id

    try:
        return check_id(text, "id")
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _init_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true", help="only verify; never create anything")
    _output_options(parser)


def _revoke_options(parser: argparse.ArgumentParser, kind: str, handler: Handler) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    keep = kind == "sessions"
    what = "except the --keep one " if keep else ""
    revoke = actions.add_parser("revoke", help=f"delete every {kind[:-1]} of a user {what}(log out everywhere)",
                                description=f"Delete every {kind[:-1]} of the user {what}(\"log out everywhere\").")
    revoke.add_argument("--user", required=True, type=_record_id, metavar="ID", help="the user id")
    if keep:
        revoke.add_argument("--keep", type=_record_id, metavar="SESSION",
                            help="the stored id of a session to keep (the one the user is using)")
    _output_options(revoke, "the summary")
    revoke.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    revoke.set_defaults(handler=handler)


# name -> (help, add its options, handler); the order is the order of --help.  A command
# with actions (sessions revoke) sets its handler from the action's parser.
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "init": ("create the schema, or verify it with --check", _init_options),
    "stats": ("live and expired tokens, sessions and kv entries",
              lambda parser: _output_options(parser, "the counts")),
    "cleanup": ("delete expired records (cron-safe: one run at a time)",
                lambda parser: _lock_options(parser, "cleanup", CLEANUP_LOCK_TTL)),
    "reencrypt": (f"re-encrypt every record with the first key in ${ENCRYPTION_KEYS_ENV}",
                  lambda parser: _lock_options(parser, "reencrypt", REENCRYPT_LOCK_TTL)),
    "encrypt": ("encrypt a plaintext store in place (resumable; readers with keys keep working)",
                _encrypt_options),
    "sessions": ("sessions of one user: revoke --user ID [--keep SESSION]",
                 lambda parser: _revoke_options(parser, "sessions", _cmd_sessions_revoke)),
    "tokens": ("tokens of one user: revoke --user ID",
               lambda parser: _revoke_options(parser, "tokens", _cmd_tokens_revoke)),
}
_HANDLERS: dict[str, Handler] = {"init": _cmd_init, "stats": _cmd_stats, "cleanup": _cmd_cleanup,
                                 "reencrypt": _cmd_reencrypt, "encrypt": _cmd_encrypt}


def _add_command(parser: argparse.ArgumentParser, name: str) -> None:
    """Give ``parser`` sub-command ``name``'s options and handler."""
    options = _COMMANDS[name][1]
    options(parser)
    if name in _HANDLERS:
        parser.set_defaults(handler=_HANDLERS[name])


def add_commands(commands: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add the maintenance sub-commands to ``commands`` (an ``add_subparsers()`` result)."""
    for name, (help_text, _) in _COMMANDS.items():
        sub = commands.add_parser(name, parents=list(parents), help=help_text,
                                  description=help_text[:1].upper() + help_text[1:] + ".")
        _add_command(sub, name)


def _epilog() -> str:
    return f"Exit status: 0 ok or skipped, 1 failed, 2 bad usage or configuration. Manual: {DOCS_URL}/cli.md"


def _framework_parser(prog: str, command: str | None = None) -> _Parser:
    """The parser of ``flask authkit`` (all sub-commands) or ``manage.py authkit_<command>`` (one).

    The storage is the app's, so there are no storage options.  A Django
    command also accepts the options ``manage.py`` gives every command.
    """
    parser = _Parser(prog=prog, description="Maintain this app's authkit storage.", epilog=_epilog())
    parser.add_argument("--debug", "--traceback", dest="debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of a failure")
    if command is None:
        commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
        add_commands(commands)
        return parser
    help_text = _COMMANDS[command][0]
    parser.description = help_text[:1].upper() + help_text[1:] + "."
    # manage.py has already acted on these (settings, path); accepted so a habitual -v 0 is no error.
    parser.add_argument("--settings", default=argparse.SUPPRESS, help="Django settings module (manage.py's)")
    parser.add_argument("--pythonpath", default=argparse.SUPPRESS, help="added to sys.path (manage.py's)")
    parser.add_argument("-v", "--verbosity", type=int, choices=[0, 1, 2, 3], default=argparse.SUPPRESS,
                        help="accepted for manage.py's sake; -q silences the summary")
    parser.add_argument("--no-color", "--force-color", "--skip-checks", dest="ignored", action="store_true",
                        default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    _add_command(parser, command)
    return parser


# -- running a command ----------------------------------------------------------------


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


def _run(parser: argparse.ArgumentParser, argv: Sequence[str], *, out: IO[str], err: IO[str],
         scrub: _Scrubber | None = None, storage: StorageSource | None = None,
         storage_label: str | None = None,
         describe: Callable[[Exception], tuple[int, str] | None] | None = None) -> int:
    """Parse ``argv`` with ``parser`` and run the chosen handler; return the exit status.

    Every failure is one line on ``err`` (and, with ``--json``, a JSON object
    on ``out``): never a traceback, except with ``--debug``.
    """
    scrub = scrub if scrub is not None else _Scrubber()
    argv = list(argv)
    wants_json = "--json" in argv
    debug = "--debug" in argv or "--traceback" in argv
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version: argparse printed them
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        _configure_logging(debug)
        if storage is not None:
            args.storage_source = storage
            args.storage_label = storage_label or "the app's storage"
        handler: Handler = args.handler
        return handler(args, out, err, scrub)
    except KeyboardInterrupt:
        return _die(err, scrub, "interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        # `authkit stats | head -1`: the reader left. Nothing to report, and nothing more to
        # flush into the closed pipe at exit.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        except (AttributeError, OSError, ValueError):
            pass
        return EXIT_FAILED
    except Exception as exc:
        if debug:
            raise
        described = describe(exc) if describe is not None else None
        status, message = described if described is not None else _describe(exc)
        if wants_json:
            out.write(json.dumps({"status": "error", "error": " ".join(scrub(message).split())}) + "\n")
            out.flush()
        return _die(err, scrub, message, status)


def _describe(exc: Exception) -> tuple[int, str]:
    """Exit status and one-line message of a failure."""
    if isinstance(exc, _Failure):
        return exc.status, str(exc)
    if isinstance(exc, ConfigurationError):
        return EXIT_USAGE, f"{type(exc).__name__}: {exc}"
    if isinstance(exc, AuthenticationError):
        return EXIT_FAILED, f"authentication failed: {exc}"
    if isinstance(exc, (AuthKitError, TimeoutError)):
        return EXIT_FAILED, f"{type(exc).__name__}: {exc}"
    if isinstance(exc, (ValueError, TypeError)):
        # A bad value that slipped past the parser (a setting, an option's combination).
        return EXIT_USAGE, f"bad argument: {exc}"
    # A bug: still one line (a cron mail with a traceback helps nobody); --debug shows it.
    return EXIT_FAILED, f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)"


def _run_framework(argv: Sequence[str], *, prog: str, storage: AuthStorage | Callable[[], AuthStorage],
                   storage_url: str | None = None, command: str | None = None,
                   out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """``flask authkit ...`` / ``manage.py authkit_<command> ...``: the maintenance commands on the app's storage.

    ``storage`` is the app's storage or a function opening it (a bad setting
    then fails as the command's one line, not as a traceback); ``storage_url``
    the setting it came from, so its password is masked in any message.
    """
    scrub = _Scrubber()
    label = None
    if storage_url:
        scrub.add_url(storage_url)
        label = _redact_url(storage_url)
    return _run(_framework_parser(prog, command), argv, out=out or sys.stdout, err=err or sys.stderr, scrub=scrub,
                storage=_lent(storage), storage_label=label)


def _call(command: str, options: dict[str, Any], *, storage: AuthStorage | Callable[[], AuthStorage],
          storage_url: str | None, out: IO[str], err: IO[str]) -> tuple[int, str]:
    """Run ``command`` with parsed ``options`` (Django's ``call_command``); the exit status and error line."""
    scrub = _Scrubber()
    if storage_url:
        scrub.add_url(storage_url)
    args = argparse.Namespace(**options)
    args.storage_source = _lent(storage)
    args.storage_label = _redact_url(storage_url) if storage_url else "the app's storage"
    handler: Handler = options.get("handler") or _HANDLERS[command]
    try:
        return handler(args, out, err, scrub), ""
    except Exception as exc:
        status, message = _describe(exc)
        message = " ".join(scrub(message).split())
        if getattr(args, "json", False):
            out.write(json.dumps({"status": "error", "error": message}) + "\n")
        return status, message
