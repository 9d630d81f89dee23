# SPDX-License-Identifier: Apache-2.0
import pytest

from logquant_trt.runtime.pages import PageAllocator


def test_allocate_and_free_round_trip() -> None:
    pool = PageAllocator(8)
    first = pool.allocate(3)
    assert first == [0, 1, 2] and pool.num_free == 5
    assert pool.allocate(6) is None and pool.num_free == 5  # all-or-nothing
    second = pool.allocate(5)
    assert sorted(first + second) == list(range(8)) and pool.num_free == 0
    pool.free(first)
    assert pool.allocate(3) == [0, 1, 2]


def test_double_free_is_named() -> None:
    pool = PageAllocator(4)
    pages = pool.allocate(2)
    pool.free(pages)
    with pytest.raises(ValueError, match=r"pages \[0, 1\] are not allocated"):
        pool.free(pages)
