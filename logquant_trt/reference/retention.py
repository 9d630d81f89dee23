# SPDX-License-Identifier: Apache-2.0
"""A layer's retention policy: window rule + pinned sinks + optional outlier pool.

Policies compose (docs/kv_format.md §5):
  kivi         = RecentWindow(R)
  logquant     = LogSparseWindow(W)                (pins token 0)
  ott          = RecentWindow(R) + OutlierPool(k)
  logquant_ott = LogSparseWindow(W) + OutlierPool(k)
`sink_tokens` adds pinned positions [0, sink_tokens) to any of them.
"""

from __future__ import annotations

import torch

from logquant_trt.config import LogQuantConfig
from logquant_trt.reference.outlier_pool import OutlierPool
from logquant_trt.reference.windows import LogSparseWindow, RecentWindow


class LayerRetention:
    def __init__(self, config: LogQuantConfig, layer_idx: int, batch: int, heads: int) -> None:
        self.config = config
        self.window = LogSparseWindow(config.window) if config.uses_log_window else RecentWindow(config.residual)
        pool_size = config.pool_size_for_layer(layer_idx)
        self.pool = OutlierPool(batch, heads, pool_size, config.extra_pool_size) if pool_size else None

    def advance(self, length: int, prefill: bool) -> None:
        """The cache now holds positions [0, length)."""
        (self.window.prefill if prefill else self.window.decode)(length)

    @property
    def window_start(self) -> int:
        return self.window.window_start

    def pinned(self) -> list[int]:
        """Positions kept in full precision forever, for every head."""
        sinks = range(min(self.config.sink_tokens, self.window.length))
        return sorted(set(sinks) | set(self.window.permanent))

    def on_seal(self, block_start: int, keys: torch.Tensor) -> torch.Tensor:
        """bool [B, H, G]: the block's tokens left out of its min/max."""
        b, h, g, _ = keys.shape
        positions = torch.arange(block_start, block_start + g)
        pinned = torch.isin(positions, torch.tensor(self.pinned(), dtype=torch.long))
        excluded = pinned.to(keys.device).expand(b, h, g).clone()
        if self.pool is not None:
            excluded |= self.pool.on_seal(block_start, keys, ~excluded)
        return excluded

    def regions(self, b: int, h: int) -> dict[str, list[int]]:
        """The retained buffer's regions (docs/kv_format.md §4.4), positions ascending.

        "sparse" is LogQuant's whole ordered set, since thinning needs it; an entry
        whose copy lives in "pool" or "extra" is shadowed there.
        """
        sinks = list(range(min(self.config.sink_tokens, self.window.length)))
        pool = self.pool.pool_positions(b, h) if self.pool is not None else []
        extra = sorted(self.pool.extra[b][h]) if self.pool is not None else []
        sparse = [p for p in self.window.sparse if p >= len(sinks)]
        return {"sinks": sinks, "sparse": sparse, "pool": pool, "extra": extra}

    def retained(self, b: int, h: int) -> set[int]:
        """Every position of head (b, h) that is full precision besides the tail."""
        kept = set(self.pinned()) | set(self.window.sparse)
        if self.pool is not None:
            kept |= set(self.pool.positions(b, h))
        return kept
