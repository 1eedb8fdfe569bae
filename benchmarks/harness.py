"""Timing and table printing shared by every benchmark module.

Each figure is printed beside a baseline measured in the same run, because
absolute times on shared machines mean little; the ratio is what to read.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from authkit.storage.sql import SqlStorage


@contextmanager
def sql_storage(url: str) -> Iterator[SqlStorage]:
    """A SqlStorage on a prefix of its own, its tables dropped afterwards."""
    from authkit.storage.sql import SqlStorage  # only the SQL benchmarks need SQLAlchemy
    from tests.services import unique_prefix

    storage = SqlStorage(url, prefix=unique_prefix("b"))
    try:
        yield storage
    finally:
        storage.drop_schema()
        storage.close()


def best_rate(fn: Callable[[int], object], n: int, repeat: int = 3) -> float:
    """Operations per second of ``fn(i)`` for ``i`` in ``range(n)``, best of ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, time.perf_counter() - start)
    return n / best


def best_time(fn: Callable[[], object], repeat: int = 3) -> float:
    """Seconds of one call of ``fn``, best of ``repeat``."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


class Table:
    """Rows of ``(what, authkit figure, baseline figure, ratio, goal)`` printed aligned."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.rows: list[tuple[str, str, str, str, str]] = []

    def rate(self, what: str, ours: float, baseline: float, goal: str = "") -> None:
        """Add a row of two rates (ops/s); the ratio is time ours / time baseline."""
        self.rows.append((what, f"{ours:,.0f}/s", f"{baseline:,.0f}/s", f"{baseline / ours:.2f}x", goal))

    def seconds(self, what: str, ours: float, baseline: float, goal: str = "") -> None:
        """Add a row of two durations; the ratio is ours / baseline."""
        ratio = f"{ours / baseline:.2f}x"
        self.rows.append((what, f"{ours * 1000:,.2f} ms", f"{baseline * 1000:,.2f} ms", ratio, goal))

    def note(self, what: str, value: str, goal: str = "") -> None:
        """Add a row with a single figure and no baseline."""
        self.rows.append((what, value, "", "", goal))

    def print(self) -> None:
        header = ("operation", "authkit", "baseline", "ratio", "goal")
        rows = [header, *self.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        print(f"\n## {self.title}")
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def interleaved(fns: Sequence[Callable[[], object]], rounds: int = 7) -> list[list[float]]:
    """Seconds of each ``fn()`` per round, the functions taking turns every round.

    Alternating A, B, A, B, ... spreads load from elsewhere on the machine over
    every side alike; read the medians and their spread (:func:`summary`).
    """
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for side, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[side].append(time.perf_counter() - start)
    return times


def summary(times: Sequence[float]) -> tuple[float, float]:
    """The median and the spread ((max - min) / median) of some timings."""
    middle = statistics.median(times)
    return middle, (max(times) - min(times)) / middle if middle else 0.0


def ratio_row(table: Table, what: str, ours: Sequence[float], baseline: Sequence[float], goal: str = "",
              per: int = 1, extra: str = "") -> None:
    """A row of two sets of timings (of ``per`` operations each): medians, spreads, ratio of medians."""
    (a, a_spread), (b, b_spread) = summary(ours), summary(baseline)

    def cell(seconds: float, spread: float) -> str:
        if per > 1:
            return f"{per / seconds:,.0f}/s ±{spread * 50:.0f}%"
        return f"{seconds * 1000:,.1f} ms ±{spread * 50:.0f}%"

    table.rows.append((what, cell(a, a_spread), cell(b, b_spread), f"{a / b:.2f}x" + extra, goal))


class Versus:
    """Throughput of ours against a peer's from interleaved rounds: medians and spread.

    ``ratios`` are per round (ours / peer, so above 1 is faster); rounds
    alternate which side runs first, so a slow phase of a shared machine
    hits both sides alike.
    """

    def __init__(self, ours: list[float], peer: list[float]) -> None:
        self.ours = ours
        self.peer = peer
        self.ratios = [o / p for o, p in zip(ours, peer, strict=True)]

    @staticmethod
    def _median(values: list[float]) -> float:
        ordered = sorted(values)
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2

    @property
    def ratio(self) -> float:
        """The median of the per-round throughput ratios (ours / peer)."""
        return self._median(self.ratios)

    def cells(self) -> tuple[str, str, str]:
        """``(ours/s, peer/s, "1.23x (1.10-1.31)")``: medians, and the ratio's range over the rounds."""
        spread = f"{min(self.ratios):.2f}-{max(self.ratios):.2f}"
        return (f"{self._median(self.ours):,.0f}/s", f"{self._median(self.peer):,.0f}/s",
                f"{self.ratio:.2f}x ({spread})")


def versus(
    ours: Callable[[], Callable[[int], object]],
    peer: Callable[[], Callable[[int], object]],
    n: int,
    rounds: int = 5,
) -> Versus:
    """Run ``rounds`` interleaved rounds of ``n`` operations of each side.

    ``ours`` and ``peer`` are called (untimed) before each round and return the
    operation ``fn(i)`` to time for ``i`` in ``range(n)``: a round that consumes
    something (sessions to delete) prepares it there.
    """
    ours_rates: list[float] = []
    peer_rates: list[float] = []
    for round_ in range(rounds):
        sides = [(ours, ours_rates), (peer, peer_rates)]
        for prepare, rates in sides if round_ % 2 == 0 else reversed(sides):
            fn = prepare()
            start = time.perf_counter()
            for i in range(n):
                fn(i)
            rates.append(n / (time.perf_counter() - start))
    return Versus(ours_rates, peer_rates)
