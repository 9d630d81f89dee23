# SPDX-License-Identifier: Apache-2.0
"""LogQuant's kept positions against hand-worked sequences and a literal re-statement."""

import pytest

from logquant_trt.reference.windows import LogSparseWindow, RecentWindow


def literal_logquant(window: int, prefill: int, total: int) -> list[tuple[list[int], list[int]]]:
    """Concyclics/LogQuantKV's index rule, as lists, for lengths prefill .. total."""
    tmp, sparse, local = list(range(prefill)), [], list(range(prefill))
    while len(tmp) >= 3 * window:
        sparse, local = tmp[0:2 * window:2], tmp[2 * window:]
        tmp = sparse + local
    if window < prefill < 3 * window:
        sparse, local = tmp[:window], tmp[window:]
    history = [(list(sparse), list(local))]
    for t in range(prefill, total):
        local.append(t)
        if len(local) > 2 * window:
            sparse = (sparse + local[:window])[0::2] if sparse else local[:window]
            local = local[window:]
        history.append((list(sparse), list(local)))
    return history


def kept(rule: LogSparseWindow) -> tuple[list[int], list[int]]:
    return rule.sparse, list(range(rule.window_start, rule.length))


def test_prefill_shorter_than_window_keeps_everything_in_the_window() -> None:
    rule = LogSparseWindow(4)
    rule.prefill(4)
    assert kept(rule) == ([], [0, 1, 2, 3])


def test_prefill_between_w_and_3w_makes_the_first_w_sparse() -> None:
    rule = LogSparseWindow(4)
    rule.prefill(9)
    assert kept(rule) == ([0, 1, 2, 3], [4, 5, 6, 7, 8])


def test_prefill_of_3w_and_more_thins_by_hand() -> None:
    rule = LogSparseWindow(4)
    rule.prefill(12)  # one pass: oldest 8 -> every 2nd
    assert kept(rule) == ([0, 2, 4, 6], [8, 9, 10, 11])
    rule.prefill(22)
    # pass 1: [0,2,4,6] + [8..21]; pass 2 on [0,2,4,6,8,9,10,11]: [0,4,8,10] + [12..21];
    # pass 3 on [0,4,8,10,12,13,14,15]: [0,8,12,14] + [16..21] (10 < 12 stops).
    assert kept(rule) == ([0, 8, 12, 14], [16, 17, 18, 19, 20, 21])


def test_decode_by_hand() -> None:
    rule = LogSparseWindow(2)
    rule.prefill(3)  # W < L < 3W
    assert kept(rule) == ([0, 1], [2])
    for length in (4, 5, 6):
        rule.decode(length)
    assert kept(rule) == ([0, 1], [2, 3, 4, 5])  # window of 2W = 4 is still allowed
    rule.decode(7)  # window [2..6] exceeds 2W: sparse = (0, 1, 2, 3)[::2], window loses 2, 3
    assert kept(rule) == ([0, 2], [4, 5, 6])


@pytest.mark.parametrize("window", [1, 3, 4, 32])
@pytest.mark.parametrize("prefill", [1, 2, 5, 40, 97, 200])
def test_matches_the_literal_rule_over_hundreds_of_steps(window: int, prefill: int) -> None:
    total = prefill + 600
    history = literal_logquant(window, prefill, total)
    rule = LogSparseWindow(window)
    rule.prefill(prefill)
    states = [kept(rule)]
    for length in range(prefill + 1, total + 1):
        rule.decode(length)
        states.append(kept(rule))
    assert states == history
    for sparse, local in states:
        assert len(sparse) + len(local) <= 3 * window
        assert 0 in sparse + local, "token 0 must never be dropped"
        assert sparse == sorted(sparse) and all(p < local[0] for p in sparse)


def test_density_halves_going_back() -> None:
    rule = LogSparseWindow(32)
    rule.prefill(1)
    for length in range(2, 4001):
        rule.decode(length)
    gaps = [b - a for a, b in zip(rule.sparse[1:], rule.sparse[2:])]
    assert gaps == sorted(gaps, reverse=True), "spacing grows going back"
    assert max(gaps) >= 8 * min(gaps)


def test_recent_window() -> None:
    rule = RecentWindow(16)
    rule.prefill(10)
    assert rule.window_start == 0
    rule.decode(40)
    assert rule.window_start == 24 and rule.sparse == []
