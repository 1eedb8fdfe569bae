"""What the security-at-rest tests share: secrets to look for, and *sites*, one real store per
backend, opened as often as a test likes and read raw (SQLite files with their WAL,
PostgreSQL and MariaDB rows through reflected tables, Redis values by type).

The fixtures ``site`` (each backend's in turn) and ``key`` are a plugin of ``conftest.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from authkit.models import AuthToken, SessionData
from authkit.storage import AuthStorage, open_storage
from authkit.storage.encrypted import generate_key
from tests.backends import drop_redis_keys
from tests.clock import FakeClock
from tests.services import MYSQL_URL, POSTGRES_URL, REDIS_URL, require, unique_prefix

ROOT = Path(__file__).resolve().parent.parent

ACCESS = "00DACCESSSECRETqqqqqqqqqqqqqqqq"
REFRESH = "5AepREFRESHSECRETwwwwwwwwwwww"
META = "METASECRETeeeeeeeeeeeeeeeeee"
SESSION_SECRET = "SESSIONSECRETrrrrrrrrrrrrrrrr"
IP = "198.51.100.123"
AGENT = "AgentSecret/9.9"
KV_SECRET = b"KVSECRETtttttttttttttttttttt"
SECRETS = [ACCESS, REFRESH, META, SESSION_SECRET, IP, AGENT, KV_SECRET.decode()]


# -- sites: one real store per backend, opened as often as a test likes ------------------


@dataclasses.dataclass
class Site:
    name: str
    url: str
    prefix: str
    clock: FakeClock
    tmp_path: Path

    def open(self, **options: Any) -> AuthStorage:
        return open_storage(self.url, prefix=self.prefix, clock=self.clock, **options)

    def raw(self) -> bytes:
        """Everything the store holds, as the server (or the file) has it."""
        if self.name == "sqlite":
            return b"".join(p.read_bytes() for p in self.tmp_path.iterdir() if p.name.startswith("at-rest.db"))
        if self.name == "redis":
            return raw_redis(self.url, self.prefix)
        return _raw_sql(self.url, self.prefix)

    def drop(self) -> None:
        if self.name == "redis":
            import redis

            client = redis.Redis.from_url(self.url)
            drop_redis_keys(client, self.prefix)
            client.close()
        elif self.name != "sqlite":
            from authkit.storage.sql import SqlStorage

            storage = SqlStorage(self.url, prefix=self.prefix, create_schema=False)
            storage.drop_schema()
            storage.close()


def _raw_sql(url: str, prefix: str) -> bytes:
    import sqlalchemy as sa

    from authkit.storage.sql import SqlStorage

    engine = sa.create_engine(SqlStorage(url, prefix=prefix, create_schema=False).engine.url)
    out: list[bytes] = []
    try:
        with engine.connect() as conn:
            for name in sa.inspect(conn).get_table_names():
                if not name.startswith(prefix):
                    continue
                table = sa.Table(name, sa.MetaData(), autoload_with=conn)
                for row in conn.execute(sa.select(table)):
                    for value in row:
                        out.append(bytes(value) if isinstance(value, (bytes, memoryview)) else str(value).encode())
    finally:
        engine.dispose()
    return b"\n".join(out)


def raw_redis(url: str, prefix: str) -> bytes:
    """Every key under ``prefix`` and everything stored in it, as one blob to scan for secrets."""
    import redis

    client = redis.Redis.from_url(url)
    out: list[bytes] = []
    try:
        for name in client.scan_iter(match=prefix.replace("*", "\\*") + "*", count=500):
            out.append(name)
            kind = client.type(name)
            if kind == b"string":
                out.append(client.get(name) or b"")
            elif kind == b"hash":
                for field, value in client.hgetall(name).items():
                    out += [field, value]
            elif kind == b"zset":
                out += [member for member, _ in client.zrange(name, 0, -1, withscores=True)]
            elif kind == b"set":
                out += list(client.smembers(name))
            elif kind == b"list":
                out += client.lrange(name, 0, -1)
            else:
                raise AssertionError(f"unexpected redis type {kind!r}")
    finally:
        client.close()
    return b"\n".join(out)


def make_site(name: str, tmp_path: Path, clock: FakeClock) -> Site:
    if name == "sqlite":
        return Site(name, f"sqlite:///{tmp_path / 'at-rest.db'}", "authkit_", clock, tmp_path)
    if name == "redis":
        return Site(name, require(REDIS_URL, "Redis"), unique_prefix("z").rstrip("_") + ":", clock, tmp_path)
    url = require(POSTGRES_URL, "PostgreSQL") if name == "postgresql" else require(MYSQL_URL, "MariaDB/MySQL")
    return Site(name, url, unique_prefix("z"), clock, tmp_path)


SITE_NAMES = ["sqlite", "postgresql", "mysql", "redis"]


@pytest.fixture(params=SITE_NAMES)
def site(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Site]:
    """Each backend's site in turn, dropped afterwards."""
    s = make_site(request.param, tmp_path, clock)
    try:
        yield s
    finally:
        s.drop()


@pytest.fixture
def key() -> str:
    """A new encryption key."""
    return generate_key()


def assert_no_secret(blob: bytes, secrets: list[str] = SECRETS) -> None:
    for secret in secrets:
        assert secret.encode() not in blob, f"{secret[:6]}... is in the store in clear"


def secret_token(token_id: str = "tok-1", **fields: Any) -> AuthToken:
    values: dict[str, Any] = {"user_id": "user-1", "access_token": ACCESS, "refresh_token": REFRESH,
                              "scopes": ["api"], "client_id": "client-1", "metadata": {"note": META}}
    values.update(fields)
    return AuthToken(token_id, **values)


def secret_session(**fields: Any) -> SessionData:
    values: dict[str, Any] = {"session_id": "", "user_id": "user-1", "ip_address": IP, "user_agent": AGENT,
                              "data": {"secret": SESSION_SECRET}}
    values.update(fields)
    return SessionData(**values)


def fill_plain(storage: AuthStorage, n: int, clock: FakeClock) -> None:
    now = clock()
    storage.store_tokens_bulk([secret_token(f"t{i}", access_token=f"{ACCESS}{i}",
                                            expires_at=now + timedelta(hours=1))
                               for i in range(n)])
    storage.store_sessions_bulk([(f"s{i}", secret_session(expires_at=now + timedelta(hours=1))) for i in range(n)])
    for i in range(n):
        storage.store_kv(f"k{i}", KV_SECRET + str(i).encode(), ttl=3600)


def assert_filled(storage: AuthStorage, n: int) -> None:
    """``storage`` reads back every record :func:`fill_plain` wrote, secrets included."""
    for i in range(n):
        token = storage.get_token_by_access_token(f"{ACCESS}{i}")
        assert token is not None and token.refresh_token == REFRESH
        session = storage.get_session(f"s{i}")
        assert session is not None and session.data == {"secret": SESSION_SECRET}
        assert storage.get_kv(f"k{i}") == KV_SECRET + str(i).encode()
