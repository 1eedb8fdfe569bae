#!/usr/bin/env python
"""The example Django project's manage.py.

    python examples/django_project/manage.py check            # settings are valid
    python examples/django_project/manage.py selftest         # the views against a local fake org, exits 0
    python examples/django_project/manage.py runserver        # serve it (your settings: see demo/settings.py)
    python examples/django_project/manage.py authkit_cleanup  # cron: delete expired sessions and tokens
    python examples/django_project/manage.py clearsessions    # Django's own command works too
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    # Run from anywhere: the project directory holds the ``demo`` package.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
