"""``within_budget``: how many deliveries, oldest first, a claim of deliveries takes."""

from __future__ import annotations

import pytest

from receiver.journal.hotpath import within_budget


@pytest.mark.parametrize(
    ("sizes", "budget", "taken"),
    [
        pytest.param([], 10, 0, id="nothing-due"),
        pytest.param([3, 3, 3], 9, 3, id="exactly-the-budget"),
        pytest.param([3, 3, 3], 8, 2, id="the-third-would-pass-it"),
        pytest.param([50, 1, 1], 10, 1, id="a-large-first-goes-alone"),
        pytest.param([1, 50, 1], 10, 1, id="a-large-one-waits-for-the-next-claim"),
        pytest.param([0, 0, 7], 0, 2, id="empty-bodies-cost-nothing"),
    ],
)
def test_a_claim_takes_the_oldest_within_the_budget(
    sizes: list[int], budget: int, taken: int
) -> None:
    assert within_budget(sizes, budget) == taken
