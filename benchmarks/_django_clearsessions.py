"""The baseline of the cleanup benchmark: Django's ``clearsessions`` on its own db session backend.

Run in a process of its own (Django's settings can be configured once per
process, and other benchmarks configure them differently)::

    python -m benchmarks._django_clearsessions postgresql://postgres@127.0.0.1/test 200000 200000

fills a fresh ``django_session`` table (under a unique name) with the expired and
live sessions, times ``call_command("clearsessions")`` and prints one JSON line:
``{"seconds": ..., "deleted": ...}``.  The table is dropped afterwards.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from urllib.parse import urlsplit


def _configure(url: str, table: str) -> None:
    import django
    from django.conf import settings

    parts = urlsplit(url)
    if parts.scheme.startswith("postgres"):
        engine = "django.db.backends.postgresql"
    else:
        import pymysql

        pymysql.install_as_MySQLdb()  # Django's MySQL backend on PyMySQL, as authkit uses
        engine = "django.db.backends.mysql"
    settings.configure(
        SECRET_KEY="benchmark-only",
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.sessions"],
        DATABASES={"default": {
            "ENGINE": engine, "NAME": parts.path.lstrip("/"), "USER": parts.username or "",
            "PASSWORD": parts.password or "", "HOST": parts.hostname or "", "PORT": str(parts.port or ""),
        }},
    )
    django.setup()
    from django.contrib.sessions.models import Session

    Session._meta.db_table = table


def main() -> None:
    url, expired, live = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    table = f"bench_django_session_{uuid.uuid4().hex[:8]}"
    _configure(url, table)
    from django.contrib.sessions.models import Session
    from django.core.management import call_command
    from django.db import connection

    with connection.schema_editor() as editor:
        editor.create_model(Session)
    try:
        call_command("clearsessions")  # warm: imports and connection, on the empty table
        total = expired + live
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(
                    f"INSERT INTO {table} (session_key, session_data, expire_date) "
                    f"SELECT 'key' || i, repeat('x', 100), "
                    f"CASE WHEN i <= {expired} THEN now() - interval '1 hour' ELSE now() + interval '1 day' END "
                    f"FROM generate_series(1, {total}) AS s(i)"
                )
                cursor.execute(f"ANALYZE {table}")
            else:
                cursor.execute(
                    f"INSERT INTO {table} (session_key, session_data, expire_date) "
                    f"SELECT CONCAT('key', seq), REPEAT('x', 100), "
                    f"IF(seq <= {expired}, NOW(6) - INTERVAL 1 HOUR, NOW(6) + INTERVAL 1 DAY) "
                    f"FROM seq_1_to_{total}"
                )
                cursor.execute(f"ANALYZE TABLE {table}")
                cursor.fetchall()
        start = time.perf_counter()
        call_command("clearsessions")
        seconds = time.perf_counter() - start
        left = Session.objects.count()
        print(json.dumps({"seconds": seconds, "deleted": total - left}))
    finally:
        with connection.schema_editor() as editor:
            editor.delete_model(Session)


if __name__ == "__main__":
    main()
