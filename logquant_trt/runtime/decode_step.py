# SPDX-License-Identifier: Apache-2.0
"""One decode step of every row, with static input/output buffers, replayed from a CUDA graph.

Inputs are written into `tokens`, `positions` and `active` before `run()`; the logits come back in
the same tensor every step. The graph is captured on first use after one eager warm-up step, whose
own writes are real: a capture reruns nothing, so the warm-up must be a genuine step.
"""

from __future__ import annotations

import torch

from logquant_trt.runtime.cache.base import KVCache
from logquant_trt.runtime.model import DecoderModel


class DecodeStep:
    def __init__(self, model: DecoderModel, cache: KVCache, use_cuda_graph: bool) -> None:
        self.model, self.cache = model, cache
        device, rows = cache.device, cache.rows
        self.tokens = torch.zeros(rows, 1, dtype=torch.int64, device=device)
        self.positions = torch.zeros(rows, 1, dtype=torch.int64, device=device)
        self.active = torch.zeros(rows, dtype=torch.int32, device=device)
        self.use_cuda_graph = use_cuda_graph and cache.graph_safe and device.type == "cuda"
        self._graph: torch.cuda.CUDAGraph | None = None
        self._logits: torch.Tensor | None = None
        self._active_rows: list[int] = []

    def set_inputs(self, rows: list[int], tokens: list[int], positions: list[int]) -> None:
        """Busy rows and their last token / its position; every other row idles (token 0 at position 0)."""
        host_tokens = torch.zeros(self.cache.rows, 1, dtype=torch.int64)
        host_positions = torch.zeros(self.cache.rows, 1, dtype=torch.int64)
        host_active = torch.zeros(self.cache.rows, dtype=torch.int32)
        if rows:
            index = torch.tensor(rows)
            host_tokens[index, 0] = torch.tensor(tokens)
            host_positions[index, 0] = torch.tensor(positions)
            host_active[index] = 1
        self.tokens.copy_(host_tokens)
        self.positions.copy_(host_positions)
        self.active.copy_(host_active)
        self._active_rows = list(rows)

    @torch.no_grad()
    def run(self) -> torch.Tensor:
        """Logits [rows, vocab] of this step (a buffer reused by the next step)."""
        if not self.use_cuda_graph:
            return self._forward()
        if self._graph is None:
            logits = self._forward()  # the warm-up is this step's real work
            self._capture()
            return logits
        self._graph.replay()
        assert self._logits is not None
        return self._logits

    def _forward(self) -> torch.Tensor:
        self.cache.begin_decode(self.active, self._active_rows)
        return self.model.forward(self.tokens, self.positions, self.cache.decode)

    def _capture(self) -> None:
        # Capture a copy of the step; the capture's own launches are discarded, not executed.
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._logits = self._forward()
        self._graph = graph
