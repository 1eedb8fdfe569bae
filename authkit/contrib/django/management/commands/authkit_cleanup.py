"""``manage.py authkit_cleanup``: delete expired sessions, tokens and kv entries, cron-safe.

Takes the shared cleanup lock, so overlapping runs (two cron hosts, or the
``authkit`` command at the same time) never both work: the second one prints
``skipped: another cleanup is running`` and exits 0.  The summary is worded
as ``authkit cleanup`` words it.  One summary line; ``--json`` for machines; a failure
is one ``CommandError`` line and exit status 1.

    */15 * * * *  cd /srv/app && python manage.py authkit_cleanup --json
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from authkit.contrib import format_failure, format_report, run_cleanup
from authkit.contrib.django import get_storage
from authkit.errors import AuthKitError


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise ValueError("must be >= 0")
    return value


class Command(BaseCommand):  # type: ignore[misc]  # Django ships no type hints
    help = "Delete expired authkit sessions, tokens and kv entries (cron-safe: one run at a time)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=_positive_int, default=None,
                            help="at most this many records of each kind per transaction "
                                 "(default: sized by time, ~20 ms each)")
        parser.add_argument("--wait", type=_seconds, default=0.0,
                            help="seconds to wait for a running cleanup; by default skip at once")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print the summary as JSON")

    def handle(self, *args: Any, batch_size: int | None, wait: float, as_json: bool, **options: Any) -> None:
        started = time.monotonic()
        try:
            report = run_cleanup(get_storage(), batch_size=batch_size, wait=wait)
        except AuthKitError as exc:
            raise CommandError(format_failure(exc, getattr(settings, "AUTHKIT_STORAGE_URL", None))) from exc
        self.stdout.write(format_report(report, seconds=time.monotonic() - started, as_json=as_json))
