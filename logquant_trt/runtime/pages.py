# SPDX-License-Identifier: Apache-2.0
"""Host-side bookkeeping of the paged pool: which page ids are free.

A page id names the same page in every layer's page tensors (docs/kv_format.md §4.1), so one
allocation serves the whole model. The pool never touches device memory.
"""

from __future__ import annotations


class PageAllocator:
    """A free list of page ids 0 .. num_pages - 1; lowest ids first, for locality."""

    def __init__(self, num_pages: int) -> None:
        if num_pages < 0:
            raise ValueError(f"num_pages must be >= 0, got {num_pages}")
        self.num_pages = num_pages
        self._free = list(range(num_pages - 1, -1, -1))  # a stack: pop() yields the lowest id
        self._taken: set[int] = set()  # checks frees without a scan of the pool

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self, count: int) -> list[int] | None:
        """`count` page ids, or None (and nothing taken) when fewer are free."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if count > len(self._free):
            return None
        pages = [self._free.pop() for _ in range(count)]
        self._taken.update(pages)
        return pages

    def free(self, pages: list[int]) -> None:
        stray = [p for p in pages if p not in self._taken]
        if stray:
            raise ValueError(f"pages {stray} are not allocated (double free?)")
        self._taken.difference_update(pages)
        self._free.extend(pages)
        self._free.sort(reverse=True)
