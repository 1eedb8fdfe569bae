"""What a framework integration asks of the storage: the calls it makes, the round trips they cost."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from authkit.models import SessionData
from authkit.storage import MemoryStorage


class Recording(MemoryStorage):
    """A memory storage that records its session calls and its locks."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def get_session(self, session_id: str) -> SessionData | None:
        self.calls.append("get")
        return super().get_session(session_id)

    def store_session(self, session_id: str, data: SessionData) -> None:
        self.calls.append("store")
        super().store_session(session_id, data)

    def create_session(self, session_id: str, data: SessionData) -> bool:
        self.calls.append("create")
        return super().create_session(session_id, data)

    def replace_session(self, session_id: str, data: SessionData) -> bool:
        self.calls.append("replace")
        return super().replace_session(session_id, data)

    def touch_session(self, session_id: str, expires_at: datetime | None,
                      last_activity: datetime | None = None) -> bool:
        self.calls.append("touch")
        return super().touch_session(session_id, expires_at, last_activity)

    def delete_session(self, session_id: str) -> None:
        self.calls.append("delete")
        super().delete_session(session_id)

    def lock(self, name: str, timeout: float = 10.0, ttl: float = 30.0) -> Any:
        self.calls.append(f"lock {name}")  # so a test's expected list of calls shows it
        return super().lock(name, timeout, ttl)

    def take(self) -> list[str]:
        calls, self.calls = self.calls, []
        return calls


def quiet_reset(proxy: Any) -> None:
    """``proxy.reset()`` once the proxy thread has finished with every byte already forwarded."""
    # The proxy forwards an answer before it counts the turn, so a client can be on its
    # next call (or read the count) before the count moves. resume() - a no-op when not
    # stalled - returns only once the proxy thread went round its loop: every turn counted.
    proxy.resume()
    proxy.reset()


def settled_turns(proxy: Any) -> int:
    """``proxy.turns`` once every answer already forwarded has been counted (see :func:`quiet_reset`)."""
    proxy.resume()
    turns: int = proxy.turns
    return turns


def django_session_turns(proxy: Any, store: Any) -> dict[str, int]:
    """Round trips through ``proxy`` (a ``tests.tcp_proxy.TcpProxy``) of a Django session
    ``store`` class's create, save, load + save and delete, after a warm-up of each."""
    _django_session_turns_once(proxy, store)  # warms up the connections
    return _django_session_turns_once(proxy, store)


def _django_session_turns_once(proxy: Any, store: Any) -> dict[str, int]:
    counts = {}
    quiet_reset(proxy)
    s = store()
    s["a"] = 1
    s.save()
    counts["create"] = settled_turns(proxy)
    quiet_reset(proxy)
    s["b"] = 2
    s.save()
    counts["save"] = settled_turns(proxy)
    quiet_reset(proxy)
    loaded = store(s.session_key)
    loaded["c"] = 3
    loaded.save()
    counts["load_save"] = settled_turns(proxy)
    quiet_reset(proxy)
    loaded.delete()
    counts["delete"] = settled_turns(proxy)
    return counts
