"""The scavenger row's confidence interval for the median pair ratio
(bench/workloads/scavenger.py): distribution-free, from order statistics."""

from __future__ import annotations

import math
import random

from eventstore_actors.bench.workloads.scavenger import median_ci


def coverage(n: int, j: int) -> float:
    """Chance that ranks j and n - j + 1 enclose the median of a continuous distribution."""
    return 1 - 2 * sum(math.comb(n, i) for i in range(j)) / 2**n


def test_the_interval_takes_the_widest_ranks_that_still_cover_95_percent() -> None:
    for n, j in [(6, 1), (9, 2), (13, 3), (15, 4), (20, 6), (25, 8)]:
        values = [float(v) for v in range(1, n + 1)]
        random.Random(n).shuffle(values)  # order of the pairs does not matter
        assert median_ci(values) == (float(j), float(n - j + 1))
        assert coverage(n, j) >= 0.95 > coverage(n, j + 1)


def test_too_few_pairs_have_no_interval() -> None:
    assert median_ci([1.0, 0.9, 1.1, 0.95, 1.05]) is None
    assert median_ci([]) is None
