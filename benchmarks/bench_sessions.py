"""The Flask and Django session integrations, each beside a baseline from the same run.

* Django: a request's worth of session work (load an existing session, change
  it, save it) with ``authkit.contrib.django.sessions`` against Django's own
  ``db`` backend, both on one SQLite file; and the authkit engine on memory
  and on PostgreSQL (if reachable).  Plus the engine's ``save()`` against a
  bare ``store_session`` on the same storage: the price of the per-session
  lock that makes ``UpdateError`` / ``CreateError`` exact.
* Flask: a request that changes the session through the test client, with
  ``AuthKitSessionInterface`` (memory and SQLite) against Flask's default
  signed-cookie sessions.

``python -m benchmarks.run sessions`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from authkit.models import SessionData
from authkit.storage import AuthStorage, MemoryStorage, open_storage
from benchmarks.harness import Table, best_rate
from tests.services import POSTGRES_URL, reachable, unique_prefix


def _configure_django(db_path: Path) -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            SECRET_KEY="benchmark-only",
            USE_TZ=True,
            INSTALLED_APPS=["django.contrib.sessions", "authkit.contrib.django"],
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(db_path)}},
            AUTHKIT_STORAGE=MemoryStorage(),
        )
        django.setup()
    from django.core.management import call_command

    call_command("migrate", "sessions", verbosity=0)


def _request_cycle(store_class: Any, key: str) -> Callable[[int], object]:
    """Load the session ``key``, change it, save it: what SessionMiddleware does per request."""

    def cycle(i: int) -> object:
        session = store_class(key)
        session["counter"] = i
        session.save()
        return session

    return cycle


def _django(table: Table, n: int, tmp: Path) -> None:
    from django.contrib.sessions.backends.db import SessionStore as DbStore
    from django.test import override_settings

    from authkit.contrib.django.sessions import SessionStore as AuthkitStore

    def seeded(store_class: Any) -> str:
        session = store_class()
        session.update({"user": "42", "cart": [1, 2, 3], "theme": "dark"})
        session.save()
        return str(session.session_key)

    db_rate = best_rate(_request_cycle(DbStore, seeded(DbStore)), n)
    stores: list[tuple[str, AuthStorage]] = [
        ("memory", MemoryStorage()),
        ("sqlite", open_storage(f"sqlite:///{tmp / 'authkit.db'}")),
    ]
    if reachable(POSTGRES_URL):
        stores.append(("postgresql", open_storage(POSTGRES_URL, prefix=unique_prefix("bs"))))
    for name, storage in stores:
        try:
            with override_settings(AUTHKIT_STORAGE=storage):
                key = seeded(AuthkitStore)
                ours = best_rate(_request_cycle(AuthkitStore, key), n)
                baseline_label = "baseline: Django db backend, SQLite file"
                table.rate(f"Django load+save, authkit on {name}", ours, db_rate, baseline_label)
                record = storage.get_session(key)
                assert record is not None

                def bare(i: int, record: SessionData = record, key: str = key, storage: AuthStorage = storage) -> None:
                    record.data["counter"] = i
                    storage.store_session(key, record)

                def locked_save(i: int, key: str = key) -> None:
                    session = AuthkitStore(key)
                    session._session_cache = {"counter": i}
                    session.save()

                table.rate(f"  save() vs bare store_session ({name})", best_rate(locked_save, n),
                           best_rate(bare, n), "baseline: store_session without lock and check")
        finally:
            drop = getattr(storage, "drop_schema", None)
            if name == "postgresql" and drop is not None:
                drop()
            storage.close()


def _flask(table: Table, n: int, tmp: Path) -> None:
    from flask import Flask, session

    from authkit.contrib.flask import AuthKit

    def app_with(storage: AuthStorage | None) -> Callable[[int], object]:
        app = Flask(__name__)
        app.config["SECRET_KEY"] = "benchmark-only"
        if storage is not None:
            AuthKit(app, storage=storage)

        @app.get("/")
        def view() -> str:
            session["counter"] = session.get("counter", 0) + 1
            return "ok"

        client = app.test_client()
        client.get("/")
        return lambda i: client.get("/")

    cookie_rate = best_rate(app_with(None), n)
    for name, storage in (("memory", MemoryStorage()), ("sqlite", open_storage(f"sqlite:///{tmp / 'flask.db'}"))):
        with storage:
            table.rate(f"Flask request changing the session, authkit on {name}", best_rate(app_with(storage), n),
                       cookie_rate, "baseline: Flask's signed-cookie session")


def run(quick: bool) -> None:
    n = 100 if quick else 1000
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        _configure_django(tmp / "django.db")
        table = Table("Sessions: Django engine and Flask interface")
        _django(table, n, tmp)
        _flask(table, n, tmp)
        table.print()
