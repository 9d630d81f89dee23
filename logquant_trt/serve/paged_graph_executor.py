# SPDX-License-Identifier: Apache-2.0
"""The runtime's scheduler over the exported graph's contract, for the TensorRT engine in Triton.

The engine of `make engine` is PagedCausalLM: (input_ids, position_ids, context_lengths, cache) ->
logits, with the cache updated in place (docs/export.md, docs/plugin.md). `PagedGraphExecutor` is a
runtime Executor for any step function with that contract, so GenerationEngine batches it
continuously: TensorRT in the Triton Python backend (trt_python_model.py), or PagedCausalLM itself on
the CPU, which is how the tests check it without TensorRT.

Layout: one cache row (slot) per sequence, max_batch slots. Slot s owns the fixed pages
[s*M, (s+1)*M) (the identity block table of LayerCache.empty), so no page allocator is needed;
the per-sequence tensors of a slot are row s, contiguous. A prefill binds copies of row s in their own
allocations (_PrefillStage): a view of row s starts at an address TensorRT refuses.
A decode step always runs every slot (idle ones reset to an empty cache and fed token 0): one
static shape, and a row's arithmetic never depends on how many others are busy. What a step binds
is built once: the cache views, and the input tensors, which each step rewrites in place.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from logquant_trt.config import LogQuantConfig
from logquant_trt.format import PAGE_TENSOR_NAMES
from logquant_trt.ops.logquant_attention import CACHE_INPUTS, CACHE_OUTPUTS, LayerCache
from logquant_trt.runtime.executor import Executor

# step(input_ids [B, n] int64, position_ids [B, n] int64, context_lengths [B] int32, cache) -> logits [B, n, V];
# cache: CACHE_INPUTS of layer 0, layer 1, ... for these B rows, updated in place by the step.
StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]], torch.Tensor]

# TensorRT takes tensor addresses aligned to 256 bytes (IExecutionContext::setTensorAddress).
TENSOR_ALIGNMENT = 256


class SlotCache:
    """Every layer's cache tensors for max_batch slots (LayerCache.empty: identity block tables)."""

    def __init__(self, layers: list[LayerCache]) -> None:
        self.layers = [dict(zip(CACHE_INPUTS, layer.tensors)) for layer in layers]
        table = self.layers[0]["block_table"]
        self.num_slots, self.blocks_per_slot = table.shape

    @classmethod
    def empty(cls, config: LogQuantConfig, *, slots: int, layers: int, kv_heads: int, head_dim: int,
              max_seq_len: int, device: torch.device | str) -> "SlotCache":
        """A zeroed cache of `slots` slots of max_seq_len tokens each (PagedCausalLM.empty_cache's layout)."""
        return cls(LayerCache.empty_layers(config, layers, slots, kv_heads, head_dim, max_seq_len, device))

    def views(self, start: int, stop: int) -> list[torch.Tensor]:
        """The step's cache argument for slots [start, stop): pages whole, per-sequence tensors sliced."""
        return [t if name in PAGE_TENSOR_NAMES else t[start:stop]
                for layer in self.layers for name, t in layer.items()]

    def reset(self, slot: int) -> None:
        """Make slot empty (seq_len = num_sealed = 0, no retained tokens, no masked slots in its pages)."""
        pages = self.layers[0]["block_table"][slot].long()
        for layer in self.layers:
            layer["seq_len"][slot] = 0
            layer["num_sealed"][slot] = 0
            layer["retained_pos"][slot] = -1
            layer["dup_mask"][pages] = 0  # a page's masks are rewritten at its seal; zero them anyway

    def empty_lengths(self, idle: torch.Tensor) -> None:
        """seq_len = num_sealed = 0 where `idle` (bool [num_slots], on the cache's device) is set. Enough to idle
        a slot that reset() emptied for one more decode step: one token never seals a block or fills a retained
        slot."""
        for layer in self.layers:
            layer["seq_len"].masked_fill_(idle, 0)
            layer["num_sealed"].masked_fill_(idle, 0)


class _PrefillStage:
    """One slot's per-sequence cache tensors in allocations of their own, which a prefill binds with the pages.

    Row s of a per-sequence tensor starts s rows into it (4 s bytes for seq_len), off TensorRT's 256-byte
    alignment; a fresh allocation starts aligned. load() copies a slot in, store() copies it back.
    """

    def __init__(self, cache: SlotCache) -> None:
        self._cache = cache
        self._rows = [{name: torch.empty_like(t[:1]) for name, t in layer.items() if name not in PAGE_TENSOR_NAMES}
                      for layer in cache.layers]
        self.views = [rows.get(name, t) for layer, rows in zip(cache.layers, self._rows) for name, t in layer.items()]

    def load(self, slot: int) -> None:
        for layer, rows in zip(self._cache.layers, self._rows):
            for name, staged in rows.items():
                staged.copy_(layer[name][slot:slot + 1])

    def store(self, slot: int) -> None:
        for layer, rows in zip(self._cache.layers, self._rows):
            for name, staged in rows.items():
                layer[name][slot:slot + 1].copy_(staged)


class _DecodeInputs:
    """The decode step's inputs for every slot, allocated once and rewritten in place by each step.

    Tokens, positions and the idle flags are staged in one host buffer (pinned on CUDA) and reach the
    device in one copy; each of its rows starts on a TensorRT-aligned address, because the step binds
    tokens and positions as views of those rows.
    """

    def __init__(self, slots: int, device: torch.device) -> None:
        per_row = TENSOR_ALIGNMENT // torch.int64.itemsize
        width = -(-slots // per_row) * per_row
        self._host = torch.zeros(3, width, dtype=torch.int64, pin_memory=device.type == "cuda")
        self._staging = self._host.numpy()  # the same memory: numpy fills it with no torch op per row
        self._device = torch.zeros(3, width, dtype=torch.int64, device=device)
        self.tokens = self._device[0, :slots].unsqueeze(1)  # [B, 1]
        self.positions = self._device[1, :slots].unsqueeze(1)  # [B, 1]
        self._idle_flags = self._device[2, :slots]  # 1 = idle, as int64 to travel in the same copy
        self.lengths = torch.ones(slots, dtype=torch.int32, device=device)
        self.idle = torch.zeros(slots, dtype=torch.bool, device=device)

    def write(self, rows: list[int], tokens: list[int], positions: list[int]) -> None:
        """tokens[i] at positions[i] for rows[i]; every other slot is idle, token 0 at position 0."""
        staging = self._staging
        staging[:2] = 0
        staging[2] = 1
        staging[0, rows], staging[1, rows], staging[2, rows] = tokens, positions, 0
        # Blocking: the next step rewrites the host buffer, so this copy must be done by then.
        self._device.copy_(self._host)
        self.lengths.copy_(self.positions[:, 0]).add_(1)  # not read by a decode step; position + 1 for clarity
        self.idle.copy_(self._idle_flags)


def torch_step(lm: torch.nn.Module) -> StepFn:
    """PagedCausalLM as a StepFn: it returns new cache tensors, which are copied back into the views."""

    @torch.no_grad()
    def step(input_ids: torch.Tensor, position_ids: torch.Tensor, context_lengths: torch.Tensor,
             cache: list[torch.Tensor]) -> torch.Tensor:
        logits, *new = lm(input_ids, position_ids, context_lengths, *cache)
        width_in, width_out = len(CACHE_INPUTS), len(CACHE_OUTPUTS)
        for layer in range(len(cache) // width_in):
            views = dict(zip(CACHE_INPUTS, cache[layer * width_in:(layer + 1) * width_in]))
            for name, tensor in zip(CACHE_OUTPUTS, new[layer * width_out:(layer + 1) * width_out]):
                views[name].copy_(tensor)
        return logits

    return step


class PagedGraphExecutor(Executor):
    """The runtime's Executor over a StepFn: GenerationEngine schedules, the exported graph computes."""

    def __init__(self, step: StepFn, cache: SlotCache, *, max_seq_len: int, max_prompt: int, vocab_size: int,
                 device: torch.device | str) -> None:
        capacity = cache.blocks_per_slot * _group_size(cache)
        if max_seq_len > capacity:
            raise ValueError(f"max_seq_len={max_seq_len} exceeds the cache's {capacity} tokens per slot")
        self.step_fn, self.cache = step, cache
        self.max_batch, self.max_seq_len, self.max_prompt = cache.num_slots, max_seq_len, max_prompt
        self.vocab_size, self.device = vocab_size, torch.device(device)
        self._prefill = _PrefillStage(cache)
        self._all_views = cache.views(0, self.max_batch)  # a decode step's cache
        self._inputs = _DecodeInputs(self.max_batch, self.device)

    def prefill(self, row: int, pages: list[int], prompt: tuple[int, ...]) -> torch.Tensor:
        self.cache.reset(row)
        n = len(prompt)
        ids = torch.tensor([prompt], dtype=torch.int64, device=self.device)
        positions = torch.arange(n, dtype=torch.int64, device=self.device)[None]
        # The graph's prefill needs n > 1; a one-token prompt is a decode step on the empty row.
        lengths = torch.full((1,), n, dtype=torch.int32, device=self.device)
        self._prefill.load(row)
        logits = self.step_fn(ids, positions, lengths, self._prefill.views)
        self._prefill.store(row)
        return logits[0, -1]

    def decode(self, rows: list[int], tokens: list[int], positions: list[int]) -> torch.Tensor:
        inputs = self._inputs
        inputs.write(rows, tokens, positions)
        if len(rows) < self.max_batch:  # idle rows (emptied by reset() at release) decode into an empty cache
            self.cache.empty_lengths(inputs.idle)
        return self.step_fn(inputs.tokens, inputs.positions, inputs.lengths, self._all_views)[:, 0]

    def release(self, row: int) -> None:
        self.cache.reset(row)


def _group_size(cache: SlotCache) -> int:
    # dup_mask is [pages, H, G/32]: the block size is 32 mask bits per word.
    return cache.layers[0]["dup_mask"].shape[-1] * 32
