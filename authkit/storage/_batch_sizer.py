"""How many records the next cleanup step looks at, so that each step takes about the target time.

    sizer = BatchSizer(target=0.02, first=1000, cap=1_000_000)
    while ...:
        started = time.perf_counter()
        step(sizer.size)
        sizer.record(time.perf_counter() - started)

Statement times are noisy: a step that ran fast by chance says little about the
next one.  Scaling the next batch by the last step's time alone (what cleanup
did before) doubles the batch after such a step, and so the time the next step
is expected to take: with step times +-50% at random, up to 2 targets before
its own noise (1.5 here).  So the sizer keeps a smoothed cost per record, an
average that moves a fifth of the way to each new step's (one step at a quarter
of the cost grows the next batch by about 1.2x).  A batch at most doubles from
one step to the next, so the first steps, whose estimate rests on one or two
times, ramp up without overshooting far.  After a step well over the target
the batch shrinks at once (a server that is busy now: learning that again, step
by step, would cost more slow steps).  Only well over: believing every
slower-than-average step would keep the batches below the average's size, and
each extra step costs a round trip and a commit.
"""

from __future__ import annotations

__all__ = ["BatchSizer"]

# How far one step moves the smoothed cost towards the last step's (0..1).
_WEIGHT = 0.2
# The most the batch grows from one step to the next.
_GROWTH = 2.0
# A step over this many targets resets the cost to its own.
_SLOW = 1.5


class BatchSizer:
    """The size of each next batch, from the times of the batches before it."""

    def __init__(self, target: float, first: int, cap: int) -> None:
        if target <= 0 or first < 1 or cap < 1:
            raise ValueError("target, first and cap must be positive")
        self._target = target
        self._cap = cap
        self._cost: float | None = None  # smoothed seconds per record
        self.size = min(first, cap)

    def record(self, elapsed: float) -> None:
        """Note that the batch of :attr:`size` records took ``elapsed`` seconds; sets the next size."""
        cost = max(elapsed, 1e-9) / self.size
        if self._cost is None or (elapsed > _SLOW * self._target and cost > self._cost):
            self._cost = cost
        else:
            self._cost += _WEIGHT * (cost - self._cost)
        wanted = int(self._target / self._cost)
        self.size = max(1, min(self._cap, wanted, int(self.size * _GROWTH) + 1))
