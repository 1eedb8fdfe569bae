"""The ``manage.py authkit_<command>`` commands: thin shells over :mod:`authkit.maintenance`.

``manage.py authkit_cleanup --json`` parses, prints and exits exactly as
``authkit cleanup --json`` does (one line per failure, JSON on failure too,
exit 0/1/2), on the storage of the Django settings.  ``call_command()``
gets Django's behaviour: a failure is a :class:`CommandError`.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

from django.core.management.base import BaseCommand, CommandError, CommandParser

from authkit._cli_maintenance import _COMMANDS, _add_command, _call, _run_framework


def _storage_url() -> str | None:
    from django.conf import settings

    if getattr(settings, "AUTHKIT_STORAGE", None) is not None:
        return None  # a ready storage: there is no URL to quote (or mask)
    url = getattr(settings, "AUTHKIT_STORAGE_URL", None)
    return url if isinstance(url, str) else None


def _storage_options() -> dict[str, Any] | None:
    from django.conf import settings

    options = getattr(settings, "AUTHKIT_STORAGE_OPTIONS", None)
    return options if isinstance(options, dict) else None


class MaintenanceCommand(BaseCommand):  # type: ignore[misc]  # Django ships no type hints
    """A ``manage.py`` command running the maintenance sub-command :attr:`command`."""

    command = ""
    # The command checks the one thing it needs, the storage, and says so in one line;
    # a project's unrelated system-check errors must not stop a cron cleanup.
    requires_system_checks: list[str] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = _COMMANDS[self.command][0]

    def run_from_argv(self, argv: list[str]) -> NoReturn:
        from authkit.contrib.django import get_storage

        prog = f"{os.path.basename(argv[0])} {argv[1]}"
        sys.exit(_run_framework(argv[2:], prog=prog, command=self.command, storage=get_storage,
                                storage_url=_storage_url(), storage_options=_storage_options()))

    def add_arguments(self, parser: CommandParser) -> None:
        _add_command(parser, self.command)

    def handle(self, *args: Any, **options: Any) -> None:
        from authkit.contrib.django import get_storage

        status, message = _call(self.command, options, storage=get_storage, storage_url=_storage_url(),
                                storage_options=_storage_options(), out=self.stdout, err=self.stderr)
        if status:
            raise CommandError(message, returncode=status)
