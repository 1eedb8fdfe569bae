"""The test suite's own port allocator (tests/ports.py): runs side by side never share a port."""

from __future__ import annotations

import multiprocessing
import socket

import pytest

from tests.ports import free_port


def _claim_five(queue: multiprocessing.Queue[list[int]], ready: multiprocessing.Barrier) -> None:
    ready.wait(30)
    queue.put([free_port() for _ in range(5)])
    ready.wait(30)  # hold the claims until the other process has claimed too


def test_two_processes_claiming_at_once_get_disjoint_ports() -> None:
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[list[int]] = context.Queue()
    ready = context.Barrier(2)
    workers = [context.Process(target=_claim_five, args=(queue, ready), daemon=True) for _ in range(2)]
    for worker in workers:
        worker.start()
    first, second = queue.get(timeout=60), queue.get(timeout=60)
    for worker in workers:
        worker.join(30)
    assert len(set(first)) == 5 and len(set(second)) == 5
    assert not set(first) & set(second)


def test_a_port_something_listens_on_is_skipped_and_none_is_handed_out_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        monkeypatch.setenv("AUTHKIT_TEST_PRIVATE_PORTS", f"{busy}-{busy + 20}")
        first, second = free_port(), free_port()
    assert busy not in (first, second) and first != second
