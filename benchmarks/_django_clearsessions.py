"""The baseline of the cleanup benchmark: Django's ``clearsessions`` on its own db session backend.

Run in a process of its own (Django's settings can be configured once per
process, and other benchmarks configure them differently)::

    python -m benchmarks._django_clearsessions postgresql://postgres@127.0.0.1/test 200000 200000

fills a fresh ``django_session`` table (under a unique name) with the expired and
live sessions laid out as authkit's side of the benchmark lays out its own
(``benchmarks.bench_cleanup.rows_sql``: interleaved, each with its own expiry),
times ``call_command("clearsessions")`` and prints one JSON line:
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

    from benchmarks.bench_cleanup import rows_sql

    with connection.schema_editor() as editor:
        editor.create_model(Session)
    try:
        call_command("clearsessions")  # warm: imports and connection, on the empty table
        postgresql = connection.vendor == "postgresql"
        source, key, condition, offset = rows_sql(postgresql, expired, live)
        if postgresql:
            now, delta = "now()", f"{offset} * interval '1 microsecond'"
        else:
            now, delta = "NOW(6)", f"INTERVAL {offset} MICROSECOND"
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (session_key, session_data, expire_date) "
                f"SELECT {key}, {'repeat' if postgresql else 'REPEAT'}('x', 100), "
                f"CASE WHEN {condition} THEN {now} - {delta} ELSE {now} + {delta} END FROM {source}"
            )
            cursor.execute(f"ANALYZE {table}" if postgresql else f"ANALYZE TABLE {table}")
            if not postgresql:
                cursor.fetchall()
        start = time.perf_counter()
        call_command("clearsessions")
        seconds = time.perf_counter() - start
        left = Session.objects.count()
        print(json.dumps({"seconds": seconds, "deleted": expired + live - left}))
    finally:
        with connection.schema_editor() as editor:
            editor.delete_model(Session)


if __name__ == "__main__":
    main()
