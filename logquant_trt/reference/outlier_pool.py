# SPDX-License-Identifier: Apache-2.0
"""OTT outlier-token tracing (arXiv 2505.10938) for one layer (docs/kv_format.md §5.3).

Decisions where the paper is silent (NOTE(logquant): issue #2):
- score = L1 norm of the post-RoPE key over the head's channels, in fp32;
- one pool per (sequence, KV head), so GQA heads keep their own outliers;
- prefill blocks are traced exactly like decode blocks, in position order;
- ties go to the older position (stable sort over pool-then-block order);
- a seal whose evictions do not fit in the extra pool changes nothing for that head
  (OTT's "tracing stops"), which needs no state beyond the two pools.
"""

from __future__ import annotations

import torch


WARP_LANES = 32


def key_l1_scores(keys: torch.Tensor) -> torch.Tensor:
    """[..., D] -> [...]: sum of |k| in fp32, in the kernels' summation order.

    The order is part of the spec (docs/kv_format.md §5.4) so that pool choices
    match bit for bit: lane l of a warp sums channels [l*D/32, (l+1)*D/32) as a
    pairwise tree, then a butterfly (xor 16, 8, 4, 2, 1) adds the lanes.
    """
    x = keys.float().abs()
    if x.shape[-1] % WARP_LANES:
        return x.sum(-1)
    partial = x.unflatten(-1, (WARP_LANES, -1))
    while partial.shape[-1] > 1:
        if partial.shape[-1] % 2:
            return x.sum(-1)
        partial = partial[..., 0::2] + partial[..., 1::2]
    lanes = partial[..., 0]
    index = torch.arange(WARP_LANES, device=keys.device)
    for offset in (16, 8, 4, 2, 1):
        lanes = lanes + lanes[..., index ^ offset]
    return lanes[..., 0]


class OutlierPool:
    def __init__(self, batch: int, heads: int, pool_size: int, extra_pool_size: int) -> None:
        self.k = pool_size
        self.extra_capacity = extra_pool_size
        self.pool: list[list[list[tuple[float, int]]]] = [[[] for _ in range(heads)] for _ in range(batch)]
        self.extra: list[list[list[int]]] = [[[] for _ in range(heads)] for _ in range(batch)]

    def positions(self, b: int, h: int) -> list[int]:
        """Pool and extra pool positions of one head: all pinned in full precision."""
        return self.pool_positions(b, h) + self.extra[b][h]

    def pool_positions(self, b: int, h: int) -> list[int]:
        return sorted(p for _, p in self.pool[b][h])

    def on_seal(self, block_start: int, keys: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
        """Choose the pool at a block seal.

        Args:
            block_start: position of the block's first token.
            keys: [B, H, G, D] the block's keys.
            candidate: bool [B, H, G]; False for tokens pinned by another rule.
        Returns:
            bool [B, H, G]: block tokens that entered the pool (left out of min/max).
        """
        scores = key_l1_scores(keys)
        chosen = torch.zeros(candidate.shape, dtype=torch.bool, device=keys.device)
        for b in range(keys.shape[0]):
            for h in range(keys.shape[1]):
                block = [(float(scores[b, h, i]), block_start + i)
                         for i in range(keys.shape[2]) if candidate[b, h, i]]
                ranked = sorted(self.pool[b][h] + block, key=lambda sp: sp[0])  # stable
                new_pool = ranked[: self.k]
                kept = {p for _, p in new_pool}
                evicted = [p for _, p in self.pool[b][h] if p not in kept]
                if len(self.extra[b][h]) + len(evicted) > self.extra_capacity:
                    continue
                self.extra[b][h].extend(evicted)
                self.pool[b][h] = new_pool
                for _, p in new_pool:
                    if p >= block_start:
                        chosen[b, h, p - block_start] = True
        return chosen
