"""How every ``authkit`` command runs, whichever shell starts it.

``authkit ...``, ``flask authkit ...`` and ``manage.py authkit_...`` parse with
:class:`_Parser` and run through :func:`_run`, so a failure is always one line
on stderr (``authkit: error: ...``), a JSON object on stdout with ``--json``,
never a traceback (``--debug`` shows it), and the same exit status::

    status = _run(parser, ["cleanup", "--json"], out=sys.stdout, err=sys.stderr)

Exit statuses: 0 on success (and when ``cleanup`` skips because another run
holds the lock), 1 when the work failed (server down, wrong key, login
refused), 2 for bad usage or configuration (bad URL, bad option), 130 when
interrupted.  Secrets (URL passwords, keys, tokens) are masked by
:class:`_Scrubber` in everything printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import IO, Any, NoReturn

from authkit.errors import AuthenticationError, AuthKitError, ConfigurationError
from authkit.maintenance import _MAX_SECONDS
from authkit.storage._redact import redact_url, url_secrets

__all__ = ["DOCS_URL", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED"]

DOCS_URL = "https://github.com/authkit-sf/authkit-sf/blob/main/docs"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# The largest --batch-size: beyond it a value is a typo, not a plan (a 20-digit LIMIT).
_MAX_BATCH_SIZE = 1_000_000


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


def _emit(out: IO[str], args: argparse.Namespace, line: str, data: dict[str, Any]) -> None:
    if getattr(args, "json", False):
        out.write(json.dumps(data, sort_keys=True) + "\n")
    elif not getattr(args, "quiet", False):
        out.write(line + "\n")


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


def _output_options(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as one JSON object")


Handler = Callable[[argparse.Namespace, IO[str], IO[str], _Scrubber], int]


def _record_id(text: str) -> str:
    from authkit.storage._codec import check_id

    try:
        return check_id(text, "id")
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _epilog() -> str:
    return f"Exit status: 0 ok or skipped, 1 failed, 2 bad usage or configuration. Manual: {DOCS_URL}/cli.md"


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
         scrub: _Scrubber | None = None,
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
