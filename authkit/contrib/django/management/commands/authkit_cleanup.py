"""``manage.py authkit_cleanup``: delete expired sessions, tokens and kv entries, cron-safe.

Takes the shared cleanup lock, so overlapping runs (two cron hosts, or the
``authkit`` command at the same time) never both work: the second one prints
``skipped`` and exits 0.  One summary line; ``--json`` for machines; a failure
is one ``CommandError`` line and exit status 1.

    */15 * * * *  cd /srv/app && python manage.py authkit_cleanup --json
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from authkit.contrib import format_report, run_cleanup
from authkit.contrib.django import get_storage
from authkit.errors import AuthKitError
from authkit.storage.base import DEFAULT_BATCH_SIZE


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
        parser.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE,
                            help=f"records of each kind deleted per transaction (default {DEFAULT_BATCH_SIZE})")
        parser.add_argument("--wait", type=_seconds, default=0.0,
                            help="seconds to wait for a running cleanup; by default skip at once")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print the summary as JSON")

    def handle(self, *args: Any, batch_size: int, wait: float, as_json: bool, **options: Any) -> None:
        try:
            report = run_cleanup(get_storage(), batch_size=batch_size, wait=wait)
        except AuthKitError as exc:
            raise CommandError(f"cleanup failed: {type(exc).__name__}: {exc}") from exc
        self.stdout.write(format_report(report, as_json=as_json))
