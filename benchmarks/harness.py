"""Timing and table printing shared by every benchmark module.

Each figure is printed beside a baseline measured in the same run, because
absolute times on shared machines mean little; the ratio is what to read.
"""

from __future__ import annotations

import time
from collections.abc import Callable


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
