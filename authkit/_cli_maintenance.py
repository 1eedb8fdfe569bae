"""The maintenance commands: ``init``, ``stats``, ``cleanup``, ``reencrypt``, ``encrypt``,
``sessions revoke`` and ``tokens revoke``, one implementation for three shells.

``authkit`` adds them with :func:`add_commands`; ``flask authkit ...`` runs
:func:`_run_framework` on the app's storage; ``manage.py authkit_<command>``
builds its parser with :func:`_add_command` and runs :func:`_run_framework`
(or :func:`_call`, for ``call_command``).  The same sub-commands, options,
one-line errors, ``--json`` output (on failure too) and exit statuses,
whichever shell runs them::

    add_commands(parser.add_subparsers(dest="command"))     # authkit init|stats|cleanup|...
    _run_framework(["cleanup", "--json"], prog="flask authkit", storage=app_storage)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from authkit._cli_run import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Handler,
    _describe,
    _emit,
    _epilog,
    _Failure,
    _isatty,
    _output_options,
    _Parser,
    _positive_int,
    _positive_seconds,
    _Progress,
    _record_id,
    _redact_url,
    _run,
    _Scrubber,
    _seconds,
)
from authkit._cli_storage import _lent, _opened, _storage_label
from authkit.maintenance import (
    CLEANUP_LOCK_TTL,
    REENCRYPT_LOCK,
    REENCRYPT_LOCK_TTL,
    _exclusive,
    run_cleanup,
)
from authkit.models import CleanupReport
from authkit.storage.base import DEFAULT_BATCH_SIZE, AuthStorage
from authkit.storage.keys import ENCRYPTION_KEY_FILE_ENV, keys_from_environment
from authkit.storage.url import ENCRYPTION_KEYS_ENV

__all__ = ["add_commands"]

def _summary(report: CleanupReport, seconds: float) -> str:
    """The one summary line of a cleanup, whichever shell ran it."""
    return (f"cleanup: deleted {report.total} expired records (tokens {report.tokens}, sessions {report.sessions}, "
            f"kv {report.kv}) in {seconds:.2f} s")


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


# -- running a command from a framework ---------------------------------------------


def _run_framework(argv: Sequence[str], *, prog: str, storage: AuthStorage | Callable[[], AuthStorage],
                   storage_url: str | None = None, storage_options: Mapping[str, Any] | None = None,
                   command: str | None = None, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """``flask authkit ...`` / ``manage.py authkit_<command> ...``: the maintenance commands on the app's storage.

    ``storage`` is the app's storage or a function opening it (a bad setting
    then fails as the command's one line, not as a traceback); ``storage_url``
    and ``storage_options`` the settings it came from, so its password is
    masked in any message and ``init`` can create what the app may not.
    """
    scrub, app = _app_storage(storage, storage_url, storage_options)
    parser = _framework_parser(prog, command)
    parser.set_defaults(**app)  # a framework shell has no storage options: the storage is the app's
    return _run(parser, argv, out=out or sys.stdout, err=err or sys.stderr, scrub=scrub)


def _call(command: str, options: dict[str, Any], *, storage: AuthStorage | Callable[[], AuthStorage],
          storage_url: str | None, out: IO[str], err: IO[str],
          storage_options: Mapping[str, Any] | None = None) -> tuple[int, str]:
    """Run ``command`` with parsed ``options`` (Django's ``call_command``); the exit status and error line."""
    scrub, app = _app_storage(storage, storage_url, storage_options)
    args = argparse.Namespace(**{**options, **app})
    handler: Handler = options.get("handler") or _HANDLERS[command]
    try:
        return handler(args, out, err, scrub), ""
    except Exception as exc:
        status, message = _describe(exc)
        message = " ".join(scrub(message).split())
        if getattr(args, "json", False):
            out.write(json.dumps({"status": "error", "error": message}) + "\n")
        return status, message


def _app_storage(storage: AuthStorage | Callable[[], AuthStorage], storage_url: str | None,
                 storage_options: Mapping[str, Any] | None) -> tuple[_Scrubber, dict[str, Any]]:
    """A framework command's scrubber and storage arguments: the app's storage, lent (never closed),
    labelled and masked by the setting it came from."""
    scrub = _Scrubber()
    if storage_url:
        scrub.add_url(storage_url)
    label = _redact_url(storage_url) if storage_url else "the app's storage"
    return scrub, {"storage_source": _lent(storage, storage_url, storage_options), "storage_label": label}
