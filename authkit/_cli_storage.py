"""Which storage a command works on, opened so that a mistake is a one-line usage failure.

The ``authkit`` command opens (and closes) the storage ``--storage`` or
``AUTHKIT_STORAGE_URL`` names; ``flask authkit`` and ``manage.py authkit_...``
lend the app's (:func:`_lent`).  Either way a command gets it from
:func:`_opened`::

    with _opened(args, scrub, create=False) as storage:
        counts = storage.stats()
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from typing import Any

from authkit._cli_run import EXIT_USAGE, _Failure, _redact_url, _Scrubber
from authkit.errors import ConfigurationError
from authkit.storage.base import AuthStorage
from authkit.storage.url import ENCRYPTION_KEYS_ENV, _open_storage

__all__ = ["STORAGE_URL_ENV", "DEFAULT_STORAGE_URL"]

STORAGE_URL_ENV = "AUTHKIT_STORAGE_URL"
DEFAULT_STORAGE_URL = "sqlite:///authkit.db"


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
    if not os.path.isdir(os.path.dirname(os.path.abspath(database))):
        return  # open_storage() names the missing directory, as it does for `init`
    raise _Failure(f"no SQLite database at {database}: create it with `authkit init`", EXIT_USAGE)


def _lent(storage: AuthStorage | Callable[[], AuthStorage], url: str | None = None,
          options: Mapping[str, Any] | None = None) -> StorageSource:
    """A :data:`StorageSource` for a storage the app owns: used, never closed.

    An app whose options forbid creating the schema (``create_schema=False``,
    the safe production setting: a mistyped prefix is refused, not created)
    never creates it itself, so ``init`` opens its own storage from the app's
    ``url`` and ``options`` with creation allowed, and closes it afterwards.
    """

    def source(create: bool) -> AbstractContextManager[AuthStorage]:
        if create and url is not None and options is not None and options.get("create_schema") is False:
            return _open_storage(url, maintenance=False, **{**options, "create_schema": True})
        return nullcontext(storage() if callable(storage) and not isinstance(storage, AuthStorage) else storage)

    return source


def _storage_options(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS defaults let the options sit before or after the sub-command
    # without the sub-parser's default overwriting a value given before it.
    parser.add_argument("--storage", metavar="URL", default=argparse.SUPPRESS,
                        help=f"storage URL (default: ${STORAGE_URL_ENV}, else {DEFAULT_STORAGE_URL})")
    parser.add_argument("--prefix", default=argparse.SUPPRESS,
                        help="table/key prefix (default: the backend's, authkit_ / authkit:)")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of a failure")
