"""Flask and Django sessions on authkit against their peers, on the same servers in the same run.

* Flask: ``authkit.contrib.flask`` against Flask-Session, on Redis (its
  ``redis`` interface) and on PostgreSQL (its ``sqlalchemy`` interface),
  through Flask's test client.
* Django: ``authkit.contrib.django.sessions`` against Django's ``cache``
  backend on Django's ``RedisCache`` and on django-redis, and against Django's
  ``db`` and ``cached_db`` backends on PostgreSQL (``cached_db`` caching in Redis).

Each operation runs in interleaved rounds (ours, peer, peer, ours, ...); the
table gives the median throughputs, the median of the per-round ratios
(ours / peer: above 1.00x is faster) with its range, and the round trips one
operation costs on each side, counted by a TCP proxy between client and server.
For Flask on Redis a second table gives the CPU one request costs, this process's
plus a private ``redis-server``'s: steadier than throughput on a loaded machine.

``python -m benchmarks.run sessions`` (``--quick`` for a smoke run), or alone:
``python -m benchmarks.bench_sessions``.  Needs the ``bench`` extra
(Flask-Session, django-redis, Flask-SQLAlchemy).  A server that is down skips
its rows.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any
from urllib.parse import urlsplit

from benchmarks.harness import versus
from tests.services import POSTGRES_URL, REDIS_URL, reachable, unique_prefix
from tests.session_calls import quiet_reset, settled_turns
from tests.tcp_proxy import TcpProxy

Op = Callable[[int], object]

_POOL = 64  # sessions each load/modify round cycles through


class _Rows:
    """The table: operation, ours/s, peer/s, ratio (range), round trips ours/peer (or
    ``fifth``'s column), goal."""

    def __init__(self, title: str, fifth: str = "round trips") -> None:
        self.title = title
        self.fifth = fifth
        self.rows: list[tuple[str, ...]] = []

    def add(self, what: str, cells: tuple[str, str, str], trips: tuple[int, int]) -> None:
        self.rows.append((what, *cells, f"{trips[0]} / {trips[1]}", ">= 1.00x"))

    def print(self) -> None:
        header = ("operation", "authkit", "peer", "ratio (range)", self.fifth, "goal")
        rows = [header, *self.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        print(f"\n## {self.title}")
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _turns(proxy: TcpProxy, prepare: Callable[[], Op]) -> int:
    """Round trips of one operation through ``proxy`` in the steady state; preparing is not counted.

    Warmed up first: connections are open, and psycopg has prepared its statements (it
    prepares one on its 5th run, in a round trip of its own that later runs never pay).
    """
    for _ in range(6):
        prepare()(0)
    op = prepare()
    quiet_reset(proxy)
    op(0)
    return settled_turns(proxy)


# -- Flask ---------------------------------------------------------------------------------


class _FlaskSide:
    """One Flask app with the session views, driven by a cookie-less test client."""

    def __init__(self, app: Any, n: int) -> None:
        from flask import session

        app.config["SECRET_KEY"] = "benchmark-only"

        @app.get("/create")
        def create() -> str:
            session["user"] = "u"
            session["n"] = 0
            return "ok"

        @app.get("/read")
        def read() -> str:
            return str(session.get("n"))

        @app.get("/count")
        def count() -> str:
            session["n"] = session.get("n", 0) + 1
            return "ok"

        @app.get("/logout")
        def logout() -> str:
            session.clear()
            return "ok"

        self.app = app
        self.n = n  # operations per round: sessions a delete round needs
        self.client = app.test_client(use_cookies=False)

    def get(self, path: str, sid: str | None = None) -> Any:
        headers = {"Cookie": f"session={sid}"} if sid else {}
        response = self.client.get(path, headers=headers)
        assert response.status_code == 200, response.status_code
        return response

    def new_session(self) -> str:
        response = self.get("/create")
        for header in response.headers.getlist("Set-Cookie"):
            if header.startswith("session="):
                return str(header.split(";", 1)[0].split("=", 1)[1])
        raise AssertionError("no session cookie")

    def ops(self) -> dict[str, Callable[[], Op]]:
        """Operation name -> a round's preparation returning the timed op."""
        pool = [self.new_session() for _ in range(_POOL)]

        def with_refresh(refresh: bool, path: str) -> Callable[[], Op]:
            def prepare() -> Op:
                self.app.config["SESSION_REFRESH_EACH_REQUEST"] = refresh
                return lambda i: self.get(path, pool[i % _POOL])
            return prepare

        def create() -> Op:
            return lambda i: self.get("/create")

        def delete() -> Op:
            doomed = [self.new_session() for _ in range(self.n)]
            return lambda i: self.get("/logout", doomed[i])

        return {
            "create (new session)": create,
            "load (read-only request)": with_refresh(False, "/read"),
            "load + slide expiry": with_refresh(True, "/read"),
            "load + modify + save (full request)": with_refresh(True, "/count"),
            "delete (logout)": delete,
        }


def _flask_authkit(url: str, n: int, stack: ExitStack) -> _FlaskSide:
    from flask import Flask

    from authkit.contrib.flask import AuthKit
    from authkit.storage import open_storage

    kind = "r" if url.startswith("redis") else "s"
    prefix = unique_prefix(kind).rstrip("_") + ":" if kind == "r" else unique_prefix(kind)
    storage = open_storage(url, prefix=prefix)
    stack.callback(_drop_authkit, storage, url, prefix)
    app = Flask("bench_authkit")
    AuthKit(app, storage=storage)
    return _FlaskSide(app, n)


def _drop_authkit(storage: Any, url: str, prefix: str) -> None:
    if url.startswith("redis"):
        _drop_redis_keys(url, prefix)
    else:
        storage.drop_schema()
    storage.close()


def _drop_redis_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    names = list(client.scan_iter(match=prefix.replace("*", r"\*") + "*", count=1000))
    for i in range(0, len(names), 1000):
        client.delete(*names[i:i + 1000])
    client.close()


def _flask_session_redis(url: str, n: int, stack: ExitStack) -> _FlaskSide:
    import redis
    from flask import Flask
    from flask_session import Session

    prefix = unique_prefix("fs") + ":"
    client = redis.Redis.from_url(url)
    stack.callback(client.close)
    stack.callback(_drop_redis_keys, url, prefix)
    app = Flask("bench_flask_session")
    app.config.update(SESSION_TYPE="redis", SESSION_REDIS=client, SESSION_KEY_PREFIX=prefix)
    Session(app)
    return _FlaskSide(app, n)


def _sqlalchemy_url(url: str) -> str:
    return "postgresql+psycopg://" + url.split("://", 1)[1]


def _flask_session_sqlalchemy(url: str, n: int, stack: ExitStack) -> _FlaskSide:
    from flask import Flask
    from flask_session import Session
    from flask_sqlalchemy import SQLAlchemy

    app = Flask("bench_flask_session_sql")
    app.config.update(SQLALCHEMY_DATABASE_URI=_sqlalchemy_url(url))
    db = SQLAlchemy(app)
    table = unique_prefix("fq") + "sessions"
    app.config.update(SESSION_TYPE="sqlalchemy", SESSION_SQLALCHEMY=db, SESSION_SQLALCHEMY_TABLE=table)
    Session(app)

    def drop() -> None:
        with app.app_context():
            db.session.remove()
            app.session_interface.sql_session_model.__table__.drop(db.engine)  # type: ignore[attr-defined]
            db.engine.dispose()

    stack.callback(drop)
    return _FlaskSide(app, n)


def _flask(server_url: str, ours: Callable[[str, int, ExitStack], _FlaskSide],
           peer: Callable[[str, int, ExitStack], _FlaskSide], title: str, n: int, rounds: int) -> None:
    host, port = urlsplit(server_url).hostname or "127.0.0.1", urlsplit(server_url).port or 0
    rows = _Rows(title)
    with ExitStack() as stack:
        proxy = stack.enter_context(TcpProxy(host, port))
        sides = [ours(server_url, n, stack), peer(server_url, n, stack)]
        counted = [ours(proxy.url(server_url), 1, stack), peer(proxy.url(server_url), 1, stack)]
        timed_ops = [side.ops() for side in sides]
        counted_ops = [side.ops() for side in counted]
        for name in timed_ops[0]:
            result = versus(timed_ops[0][name], timed_ops[1][name], n, rounds)
            trips = (_turns(proxy, counted_ops[0][name]), _turns(proxy, counted_ops[1][name]))
            rows.add(name, result.cells(), trips)
    rows.print()


def _private_redis_cpu(title: str, sides: Callable[[str, ExitStack], list[dict[str, Callable[[], Op]]]],
                       n: int, rounds: int) -> None:
    """CPU per operation on Redis, ours and the peer's: this process's CPU time plus the
    server's (``INFO cpu``) on a private ``redis-server`` that nothing else uses.

    Wall-clock throughput on a loaded shared machine mostly measures the scheduler; CPU time
    is what an operation costs whatever else runs, so this table is the steadier yardstick.
    ``sides(url, stack)`` gives the operations of both sides on the server at ``url``.
    The server's part of each side's CPU is printed beside: what the commands (for authkit,
    its Lua scripts) cost Redis, apart from the client's Python.
    """
    import shutil
    import statistics
    import time

    import redis

    from tests.redis_cluster import RedisServer

    if shutil.which("redis-server") is None:
        print(f"\n## {title}: skipped (no redis-server binary)")
        return
    rows = _Rows(title, "server's part, ours / peer")
    with RedisServer() as server, ExitStack() as stack:  # a port of AUTHKIT_TEST_PRIVATE_PORTS
        client = redis.Redis.from_url(server.url)
        stack.callback(client.close)

        def server_cpu() -> float:
            info = client.info("cpu")
            return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

        ops = sides(server.url, stack)
        for name in ops[0]:
            costs: list[list[float]] = [[], []]
            served: list[list[float]] = [[], []]  # the server's part of costs
            for round_ in range(rounds):
                for side in (0, 1) if round_ % 2 == 0 else (1, 0):
                    op = ops[side][name]()
                    cpu, started = server_cpu(), time.process_time()
                    for i in range(n):
                        op(i)
                    own, served_now = time.process_time() - started, server_cpu() - cpu
                    costs[side].append((own + served_now) / n)
                    served[side].append(served_now / n)
            ratios = [p / o for o, p in zip(costs[0], costs[1], strict=True)]
            ours, peer = statistics.median(costs[0]), statistics.median(costs[1])
            server_part = f"{statistics.median(served[0]) * 1e6:,.0f} / {statistics.median(served[1]) * 1e6:,.0f} us"
            rows.rows.append((name, f"{ours * 1e6:,.0f} us", f"{peer * 1e6:,.0f} us",
                              f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})", server_part,
                              ">= 1.00x (peer CPU / ours)"))
    rows.print()


def _flask_cpu(n: int, rounds: int) -> None:
    def sides(url: str, stack: ExitStack) -> list[dict[str, Callable[[], Op]]]:
        return [_flask_authkit(url, n, stack).ops(), _flask_session_redis(url, n, stack).ops()]

    _private_redis_cpu("Flask sessions on Redis, CPU per request (client + private server): authkit vs Flask-Session",
                       sides, n, rounds)


# -- Django --------------------------------------------------------------------------------


class _Router:
    """Sends Django's queries to the proxied database alias while round trips are counted."""

    alias = "default"

    def db_for_read(self, model: Any, **hints: Any) -> str:
        return _Router.alias

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return _Router.alias


@contextlib.contextmanager
def _routed(alias: str) -> Iterator[None]:
    before, _Router.alias = _Router.alias, alias
    try:
        yield
    finally:
        _Router.alias = before


def _configure_django(pg: TcpProxy | None, redis_proxy: TcpProxy | None, schema: str, prefix: str) -> None:
    import django
    from django.conf import settings

    def database(url: str) -> dict[str, Any]:
        parts = urlsplit(url)
        return {"ENGINE": "django.db.backends.postgresql", "NAME": parts.path.lstrip("/"),
                "USER": parts.username or "", "PASSWORD": parts.password or "",
                "HOST": parts.hostname, "PORT": parts.port, "OPTIONS": {"options": f"-c search_path={schema}"}}

    databases: dict[str, Any] = {}
    if pg is not None:
        databases = {"default": database(POSTGRES_URL), "counted": database(pg.url(POSTGRES_URL))}
    caches: dict[str, Any] = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    if redis_proxy is not None:
        for alias, backend in (("redis", "django.core.cache.backends.redis.RedisCache"),
                               ("django_redis", "django_redis.cache.RedisCache")):
            caches[alias] = {"BACKEND": backend, "LOCATION": REDIS_URL, "KEY_PREFIX": prefix}
            caches[f"{alias}_counted"] = {"BACKEND": backend, "LOCATION": redis_proxy.url(REDIS_URL),
                                          "KEY_PREFIX": prefix}
    settings.configure(
        SECRET_KEY="benchmark-only",
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.sessions", "authkit.contrib.django"],
        DATABASES=databases,
        DATABASE_ROUTERS=["benchmarks.bench_sessions._Router"],
        CACHES=caches,
        SESSION_CACHE_ALIAS="redis",
    )
    django.setup()


def _store_classes(cache_alias: str | None) -> dict[str, type]:
    """Django's cache, cached_db and db stores, the cache ones on ``cache_alias``."""
    from django.contrib.sessions.backends.cache import SessionStore as CacheStore
    from django.contrib.sessions.backends.cached_db import SessionStore as CachedDbStore
    from django.contrib.sessions.backends.db import SessionStore as DbStore
    from django.core.cache import caches

    def on(base: type, alias: str) -> type:
        def __init__(self: Any, session_key: str | None = None) -> None:
            base.__init__(self, session_key)
            self._cache = caches[alias]

        return type(f"{base.__name__}_{alias}", (base,), {"__init__": __init__})

    classes: dict[str, type] = {"db": DbStore}
    if cache_alias is not None:
        classes["cache"] = on(CacheStore, cache_alias)
        classes["cached_db"] = on(CachedDbStore, cache_alias)
    return classes


def _django_ops(store: type, n: int) -> dict[str, Callable[[], Op]]:
    from django.conf import settings
    from django.contrib.sessions.middleware import SessionMiddleware
    from django.http import HttpRequest, HttpResponse
    from django.test import RequestFactory

    def new() -> str:
        s = store()
        s["user"] = "u"
        s["n"] = 0
        s.save()
        return str(s.session_key)

    pool = [new() for _ in range(_POOL)]

    def view(request: HttpRequest) -> HttpResponse:
        request.session["n"] = request.session.get("n", 0) + 1  # type: ignore[attr-defined]
        return HttpResponse("ok")

    middleware = SessionMiddleware(view)
    middleware.SessionStore = store  # type: ignore[attr-defined]
    factory = RequestFactory()

    def request(i: int) -> object:
        req = factory.get("/")
        req.COOKIES[settings.SESSION_COOKIE_NAME] = pool[i % _POOL]
        response = middleware(req)
        assert response.status_code == 200
        return response

    def modify(i: int) -> object:
        s = store(pool[i % _POOL])
        s["n"] = i
        s.save()
        return s

    def delete() -> Op:
        doomed = [new() for _ in range(n)]
        return lambda i: store(doomed[i]).delete()

    return {
        "create (new session)": lambda: lambda i: new(),
        "load": lambda: lambda i: store(pool[i % _POOL])["n"],
        "load + modify + save": lambda: modify,
        "delete": delete,
        "full request (middleware)": lambda: request,
    }


def _django(n: int, rounds: int) -> None:
    from django.core.management import call_command

    from authkit.contrib.django.sessions import SessionStore as AuthkitStore
    from authkit.storage import open_storage

    have_pg, have_redis = reachable(POSTGRES_URL), reachable(REDIS_URL)
    if not (have_pg or have_redis):
        print("\n## Django sessions: skipped (neither PostgreSQL nor Redis is reachable)")
        return
    schema = unique_prefix("dj").rstrip("_")
    prefix = unique_prefix("dc")
    with ExitStack() as stack:
        pg = stack.enter_context(TcpProxy(*_host_port(POSTGRES_URL))) if have_pg else None
        rp = stack.enter_context(TcpProxy(*_host_port(REDIS_URL))) if have_redis else None
        if have_pg:
            _pg_execute(f'CREATE SCHEMA "{schema}"')
            stack.callback(_pg_execute, f'DROP SCHEMA "{schema}" CASCADE')
        if have_redis:
            stack.callback(_drop_redis_keys, REDIS_URL, prefix)
        _configure_django(pg, rp, schema, prefix)
        if have_pg:
            from django.db import connections

            call_command("migrate", "sessions", verbosity=0)
            stack.callback(connections.close_all)

        def authkit_side(url: str, proxy: TcpProxy) -> tuple[type, type]:
            """(timed, counted) authkit store classes on ``url``."""
            classes = []
            for target in (url, proxy.url(url)):
                kind = "r" if url.startswith("redis") else "s"
                key_prefix = unique_prefix(kind).rstrip("_") + ":" if kind == "r" else unique_prefix(kind)
                storage = open_storage(target, prefix=key_prefix)
                stack.callback(_drop_authkit, storage, target, key_prefix)

                def __init__(self: Any, session_key: str | None = None, storage: Any = storage) -> None:
                    AuthkitStore.__init__(self, session_key)
                    self._bench_storage = storage

                classes.append(type("Store", (AuthkitStore,), {
                    "__init__": __init__, "storage": property(lambda self: self._bench_storage)}))
            return classes[0], classes[1]

        comparisons: list[tuple[str, tuple[type, type], tuple[type, type], str | None]] = []
        if have_redis and rp is not None:
            ours = authkit_side(REDIS_URL, rp)
            timed, counted = _store_classes("redis"), _store_classes("redis_counted")
            comparisons.append(("Django sessions on Redis: authkit vs the cache backend (Django's RedisCache)",
                                ours, (timed["cache"], counted["cache"]), None))
            timed, counted = _store_classes("django_redis"), _store_classes("django_redis_counted")
            comparisons.append(("Django sessions on Redis: authkit vs the cache backend on django-redis",
                                ours, (timed["cache"], counted["cache"]), None))
        if have_pg and pg is not None:
            ours = authkit_side(POSTGRES_URL, pg)
            db = _store_classes(None)["db"]
            comparisons.append(("Django sessions on PostgreSQL: authkit vs Django's db backend",
                                ours, (db, db), "counted"))
            if have_redis:
                timed, counted = _store_classes("redis"), _store_classes("redis_counted")
                comparisons.append(("Django sessions on PostgreSQL: authkit vs cached_db (PostgreSQL + RedisCache)",
                                    ours, (timed["cached_db"], counted["cached_db"]), "counted"))
        proxy_of = {"redis": rp, "pg": pg}
        for title, (ours_timed, ours_counted), (peer_timed, peer_counted), alias in comparisons:
            rows = _Rows(title)
            ours_ops, peer_ops = _django_ops(ours_timed, n), _django_ops(peer_timed, n)
            with _routed(alias or "default"):
                ours_count, peer_count = _django_ops(ours_counted, 1), _django_ops(peer_counted, 1)
            for name in ours_ops:
                result = versus(ours_ops[name], peer_ops[name], n, rounds)
                on_pg = "PostgreSQL" in title
                ours_proxy = proxy_of["pg" if on_pg else "redis"]
                assert ours_proxy is not None
                trips_ours = _turns(ours_proxy, ours_count[name])
                peer_trips = 0
                with _routed(alias or "default"):
                    # cached_db talks to both servers: count both.
                    for proxy in {p for p in proxy_of.values() if p is not None}:
                        peer_trips += _turns(proxy, peer_count[name])
                rows.add(name, result.cells(), (trips_ours, peer_trips))
            rows.print()
        if have_redis:
            _django_cpu(n, rounds)


def _django_cpu(n: int, rounds: int) -> None:
    """The CPU table of Django sessions on Redis against django-redis (Django is configured)."""
    from django.contrib.sessions.backends.cache import SessionStore as CacheStore
    from django_redis.cache import RedisCache

    from authkit.contrib.django.sessions import SessionStore as AuthkitStore
    from authkit.storage import open_storage

    def sides(url: str, stack: ExitStack) -> list[dict[str, Callable[[], Op]]]:
        storage = open_storage(url, prefix="bench:")
        stack.callback(storage.close)
        cache = RedisCache(url, {"KEY_PREFIX": "dc"})
        stack.callback(cache.close)
        ours = type("Store", (AuthkitStore,), {"storage": property(lambda self: storage)})

        def __init__(self: Any, session_key: str | None = None) -> None:
            CacheStore.__init__(self, session_key)
            self._cache = cache

        peer = type("PeerStore", (CacheStore,), {"__init__": __init__})
        return [_django_ops(ours, n), _django_ops(peer, n)]

    _private_redis_cpu("Django sessions on Redis, CPU per operation (client + private server): "
                       "authkit vs the cache backend on django-redis", sides, n, rounds)


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 0


def _pg_execute(sql: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.encode())


def run(quick: bool) -> None:
    # Every side registers the removal of its keys, tables and schema before it writes
    # any (ExitStack callbacks: they run on errors and Ctrl-C too).  A plain `kill`
    # would skip them and leave thousands of keys in the shared Redis: make it an exit.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # Many short rounds rather than a few long ones: on a shared machine the load
    # drifts, and rounds that alternate quickly see the same load on both sides.
    n = 40 if quick else 150
    rounds = 3 if quick else 11
    missing = [name for name in ("flask_session", "django_redis", "flask_sqlalchemy")
               if not _importable(name)]
    if missing:
        print(f"\n## Sessions vs peers: skipped, install the bench extra (missing {', '.join(missing)})")
        return
    if reachable(REDIS_URL):
        _flask(REDIS_URL, _flask_authkit, _flask_session_redis,
               "Flask sessions on Redis: authkit vs Flask-Session (redis)", n, rounds)
        _flask_cpu(n, rounds)
    else:
        print("\n## Flask sessions on Redis: skipped (Redis is not reachable)")
    if reachable(POSTGRES_URL):
        _flask(POSTGRES_URL, _flask_authkit, _flask_session_sqlalchemy,
               "Flask sessions on PostgreSQL: authkit vs Flask-Session (sqlalchemy)", n, rounds)
    else:
        print("\n## Flask sessions on PostgreSQL: skipped (PostgreSQL is not reachable)")
    _django(n, rounds)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    import sys

    run("--quick" in sys.argv)
