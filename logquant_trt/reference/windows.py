# SPDX-License-Identifier: Apache-2.0
"""Position-only retention rules: which recent and sparse tokens stay full precision.

These rules depend only on the sequence length, so one instance describes every
layer, head and sequence of a batch (docs/kv_format.md §5.1-5.2).
"""

from __future__ import annotations


_NO_POSITIONS: list[int] = []


class RecentWindow:
    """KIVI / OTT: the newest `residual` tokens stay in full precision."""

    def __init__(self, residual: int) -> None:
        self.residual = residual
        self.length = 0

    def prefill(self, length: int) -> None:
        self.length = length

    def decode(self, length: int) -> None:
        self.length = length

    @property
    def window_start(self) -> int:
        return max(0, self.length - self.residual)

    @property
    def sparse(self) -> list[int]:
        return _NO_POSITIONS

    @property
    def permanent(self) -> list[int]:
        return _NO_POSITIONS


class LogSparseWindow:
    """LogQuant (Concyclics/LogQuantKV): window of W..2W tokens plus a sparse set
    whose density halves going back; at most 3W positions, token 0 never dropped.
    """

    def __init__(self, window: int) -> None:
        self.w = window
        self.length = 0
        self.window_start = 0
        self.sparse: list[int] = []

    def prefill(self, length: int) -> None:
        w = self.w
        self.length = length
        if length <= w:
            self.sparse, self.window_start = [], 0
        elif length < 3 * w:
            self.sparse, self.window_start = list(range(w)), w
        else:
            kept, start = [], 0
            # `kept + [start, length)` is the kept list; thin its oldest 2W while 3W or more remain.
            while len(kept) + (length - start) >= 3 * w:
                oldest = (kept + list(range(start, start + 2 * w - len(kept))))[: 2 * w]
                start = start + 2 * w - len(kept)
                kept = oldest[0::2]
            self.sparse, self.window_start = kept, start

    def decode(self, length: int) -> None:
        """Position length-1 was appended."""
        self.length = length
        if length - self.window_start > 2 * self.w:
            leaving = list(range(self.window_start, self.window_start + self.w))
            self.sparse = (self.sparse + leaving)[0::2] if self.sparse else leaving
            self.window_start += self.w

    @property
    def permanent(self) -> list[int]:
        return [0] if self.length > 0 else []
