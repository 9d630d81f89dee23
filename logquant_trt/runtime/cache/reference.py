# SPDX-License-Identifier: Apache-2.0
"""The PyTorch reference as a runtime cache: one `LayerKVState` per (row, layer).

Runs on any device, every policy included (fp16 too). It is the runtime's CPU fallback and the
oracle its GPU backends are compared with; it is not graph-safe (it loops over busy rows on the
host) and it holds tokens in Python-managed tensors rather than in a preallocated pool.
"""

from __future__ import annotations

import torch

from logquant_trt.reference.attention import dense_attention
from logquant_trt.reference.layer_state import LayerKVState
from logquant_trt.runtime.cache.base import KVCache, block_bound, causal_self_attention


class ReferenceKVCache(KVCache):
    graph_safe = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._states: list[list[LayerKVState] | None] = [None] * self.rows
        self._active_rows: list[int] = []

    @classmethod
    def pages_for(cls, config, length: int) -> int:
        # Accounted as the paged layout would hold it, so admission behaves as on the GPU.
        return block_bound(config, length)

    def assign(self, row: int, pages: list[int]) -> None:
        self._states[row] = [LayerKVState(self.config, layer) for layer in range(self.shape.num_layers)]

    def release(self, row: int) -> None:
        self._states[row] = None

    def prefill(self, row: int, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        self._row(row)[layer].append(k, v)
        return causal_self_attention(q, k, v)

    def begin_decode(self, active: torch.Tensor, active_rows: list[int]) -> None:
        self._active_rows = list(active_rows)

    def decode(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(q)
        for row in self._active_rows:
            state = self._row(row)[layer]
            state.append(k[row:row + 1], v[row:row + 1])
            out[row:row + 1] = dense_attention(q[row:row + 1], *state.effective_kv())
        return out

    def _row(self, row: int) -> list[LayerKVState]:
        states = self._states[row]
        if states is None:
            raise RuntimeError(f"row {row} holds no sequence")
        return states
