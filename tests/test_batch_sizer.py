"""The cleanup step sizer: each step near the target time, whatever the noise in step times."""

from __future__ import annotations

import random

import pytest

from authkit.storage._batch_sizer import BatchSizer

TARGET = 0.02
COST = 10e-6  # seconds per record: the target is 2,000 records


def test_the_first_size_is_the_first_batch_capped() -> None:
    assert BatchSizer(TARGET, 1000, 10**6).size == 1000
    assert BatchSizer(TARGET, 1000, 50).size == 50


def test_steady_steps_settle_on_the_target() -> None:
    sizer = BatchSizer(TARGET, 1000, 10**6)
    for _ in range(60):
        sizer.record(sizer.size * COST)
    assert sizer.size == pytest.approx(TARGET / COST, rel=0.01)


def test_growth_is_at_most_double_a_step() -> None:
    sizer = BatchSizer(TARGET, 100, 10**6)
    for _ in range(30):
        before = sizer.size
        sizer.record(before * COST / 100)  # a very fast store: it could take 200,000 at once
        assert sizer.size <= before * 2 + 1


def test_one_fast_step_moves_the_next_little() -> None:
    sizer = BatchSizer(TARGET, 2000, 10**6)
    for _ in range(40):
        sizer.record(sizer.size * COST)
    settled = sizer.size
    sizer.record(settled * COST / 4)  # fast by chance
    # The last step alone would say 4x; the smoothed cost says a little more than now.
    assert settled < sizer.size <= settled * 1.25


def test_a_slow_step_shrinks_the_next_at_once() -> None:
    sizer = BatchSizer(TARGET, 2000, 10**6)
    for _ in range(40):
        sizer.record(sizer.size * COST)
    sizer.record(sizer.size * COST * 5)  # 5x the target: the server is busy now
    assert sizer.size == pytest.approx(TARGET / (COST * 5), rel=0.01)


def test_slightly_slow_steps_are_averaged_not_believed() -> None:
    sizer = BatchSizer(TARGET, 2000, 10**6)
    for _ in range(40):
        sizer.record(sizer.size * COST)
    settled = sizer.size
    sizer.record(settled * COST * 1.4)  # under 1.5 targets: noise
    assert settled * 0.9 < sizer.size < settled


def test_noisy_steps_keep_their_expected_time_near_the_target() -> None:
    """Step times +-50% at random: the size the sizer picks never expects more than 1.5
    targets (scaling by the last step alone expects up to 2), and averages near the target."""
    rng = random.Random(20261130)
    sizer = BatchSizer(TARGET, 1000, 10**6)
    sizes = []
    for _ in range(3000):
        sizes.append(sizer.size)
        sizer.record(sizer.size * COST * rng.uniform(0.5, 1.5))
    settled = sizes[50:]
    assert max(settled) * COST <= 1.5 * TARGET
    assert sum(settled) / len(settled) * COST == pytest.approx(TARGET, rel=0.1)


def test_the_size_stays_within_one_and_the_cap() -> None:
    sizer = BatchSizer(TARGET, 10, 40)
    for _ in range(20):
        sizer.record(0.0)  # a clock that did not move
        assert 1 <= sizer.size <= 40
    sizer.record(100.0)
    assert sizer.size == 1


@pytest.mark.parametrize(("target", "first", "cap"), [(0, 1, 1), (0.02, 0, 1), (0.02, 1, 0)])
def test_bad_settings_are_refused(target: float, first: int, cap: int) -> None:
    with pytest.raises(ValueError):
        BatchSizer(target, first, cap)
