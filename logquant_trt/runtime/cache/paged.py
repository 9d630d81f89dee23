# SPDX-License-Identifier: Apache-2.0
"""The 2-bit paged cache on the GPU, written and read by the CUDA kernels (logquant_trt.ops).

Layout: docs/kv_format.md §4, one `PagedLayer` per layer. Every per-row tensor is allocated once
for all layers ([layers, rows, ...]) and each layer sees a contiguous slice, so resetting rows or
emptying idle ones is one operation for the whole model. Page ids are shared by all layers (one
host-side allocation per sequence) and so is the block table.

Prefill goes through a one-row staging layout: the prefill kernel (re)writes every row it is given,
so a busy batch cannot be prefilled in place; the staged row is then copied into its slot.
"""

from __future__ import annotations

import math

import torch

from logquant_trt.format import MASK_WORD_BITS, PAGE_TENSOR_NAMES
from logquant_trt.ops.decode_attention import DecodeAttentionRunner
from logquant_trt.ops.kv_write import append_decode, quantize_prefill
from logquant_trt.reference.paged import PagedLayer, page_shapes
from logquant_trt.runtime.cache.base import KVCache, block_bound, causal_self_attention

# PagedLayer fields with a leading row dimension, and the value an empty row holds.
ROW_FIELDS = {"num_sealed": 0, "seq_len": 0, "tail_k": None, "tail_v": None, "retained_pos": -1,
              "retained_k": None, "retained_v": None}


def _row_shapes(config, shape) -> dict[str, tuple[tuple[int, ...], torch.dtype | None]]:
    """Per-row shapes of one layer (None dtype = the cache dtype)."""
    h, d = shape.num_kv_heads, shape.head_dim
    t, s = config.tail_capacity(), config.retained_slots()
    return {"num_sealed": ((), torch.int32), "seq_len": ((), torch.int32),
            "tail_k": ((h, t, d), None), "tail_v": ((h, t, d), None),
            "retained_pos": ((h, s), torch.int32), "retained_k": ((h, s, d), None), "retained_v": ((h, s, d), None)}


def _page_tensor_shapes(config, shape) -> list[tuple[tuple[int, ...], torch.dtype | None]]:
    h, d, g = shape.num_kv_heads, shape.head_dim, config.group_size
    codes_and_params = page_shapes(config.key_axis, h, g, d, config.channel_group(d))
    dtypes = (torch.uint8, None, torch.uint8, None)
    return [*zip(codes_and_params, dtypes), ((h, g // MASK_WORD_BITS), torch.int32)]


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype | None, cache_dtype: torch.dtype) -> int:
    return math.prod(shape) * (dtype or cache_dtype).itemsize


def _stacked(layers: int, rows: int, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
             fill: int) -> torch.Tensor:
    """[layers, rows, *shape] whose per-layer slices each start 16-byte aligned (the kernels' loads need it)."""
    per_layer = rows * math.prod(shape)
    align = 16 // dtype.itemsize
    padded = -(-per_layer // align) * align
    flat = torch.full((layers, padded), fill, dtype=dtype, device=device)
    return flat[:, :per_layer].unflatten(1, (rows, *shape))


def max_blocks(config, max_seq_len: int) -> int:
    return max(block_bound(config, max_seq_len), 1)


class PagedKVCache(KVCache):
    graph_safe = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.device.type != "cuda":
            raise ValueError(f"PagedKVCache runs the CUDA kernels; device={self.device} (use the reference backend)")
        layers, rows, dtype, device = self.shape.num_layers, self.rows, self.dtype, self.device

        def alloc(lead: tuple[int, ...], shape: tuple[int, ...], dt: torch.dtype | None, fill: int = 0):
            return torch.full((*lead, *shape), fill, dtype=dt or dtype, device=device)

        row_shapes = _row_shapes(self.config, self.shape)
        self._rows = {name: _stacked(layers, rows, s, dt or dtype, device, ROW_FIELDS[name] or 0)
                      for name, (s, dt) in row_shapes.items()}
        self._staging = {name: alloc((1,), s, dt, ROW_FIELDS[name] or 0) for name, (s, dt) in row_shapes.items()}
        per_page = _page_tensor_shapes(self.config, self.shape)
        pages = [{n: alloc((self.num_pages,), s, dt) for n, (s, dt) in zip(PAGE_TENSOR_NAMES, per_page)}
                 for _ in range(layers)]
        self.block_table = torch.full((rows, max_blocks(self.config, self.max_seq_len)), -1, dtype=torch.int32,
                                      device=device)
        self._staging_table = self.block_table[:1].clone()
        self.layers = [PagedLayer(self.config, **pages[l], block_table=self.block_table,
                                  **{n: t[l] for n, t in self._rows.items()}) for l in range(layers)]
        self._staged = [PagedLayer(self.config, **pages[l], block_table=self._staging_table, **self._staging)
                        for l in range(layers)]
        self._runners: list[DecodeAttentionRunner] = []  # one per layer

    # -- sizing -----------------------------------------------------------------------------------------------

    @classmethod
    def bytes_per_row(cls, config, shape, max_seq_len: int) -> int:
        dtype = getattr(torch, config.dtype)
        per_layer = sum(_nbytes(s, dt, dtype) for s, dt in _row_shapes(config, shape).values())
        return shape.num_layers * per_layer + max_blocks(config, max_seq_len) * 4

    @classmethod
    def bytes_per_page(cls, config, shape) -> int:
        dtype = getattr(torch, config.dtype)
        return shape.num_layers * sum(_nbytes(s, dt, dtype) for s, dt in _page_tensor_shapes(config, shape))

    @classmethod
    def pages_for(cls, config, length: int) -> int:
        return block_bound(config, length)

    # -- sequence slots ----------------------------------------------------------------------------------------

    def assign(self, row: int, pages: list[int]) -> None:
        if len(pages) > self.block_table.shape[1]:
            raise ValueError(f"{len(pages)} pages exceed max_blocks={self.block_table.shape[1]}")
        table = torch.full((self.block_table.shape[1],), -1, dtype=torch.int32)
        table[:len(pages)] = torch.tensor(pages, dtype=torch.int32)
        self.block_table[row].copy_(table, non_blocking=False)
        for name, fill in ROW_FIELDS.items():
            if fill is not None:
                self._rows[name][:, row].fill_(fill)

    def prefill(self, row: int, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if layer == 0:
            self._staging_table.copy_(self.block_table[row:row + 1])
        lengths = torch.full((1,), k.shape[2], dtype=torch.int32, device=self.device)
        quantize_prefill(self._staged[layer], k.contiguous(), v.contiguous(), lengths, layer)
        for name in ROW_FIELDS:
            self._rows[name][layer, row].copy_(self._staging[name][0])
        return causal_self_attention(q, k, v)

    def begin_decode(self, active: torch.Tensor, active_rows: list[int]) -> None:
        # Idle rows restart empty every step: one token never seals a block, so they need no pages.
        self._rows["seq_len"].mul_(active)
        self._rows["num_sealed"].mul_(active)

    def decode(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        paged = self.layers[layer]
        append_decode(paged, k, v, layer)
        out = torch.empty_like(q)
        self._runner(layer, q.shape[1]).run(q, out)
        return out

    def _runner(self, layer: int, num_q_heads: int) -> DecodeAttentionRunner:
        # Built on the first decode, from its query heads (the model's, fixed for the cache's lifetime).
        if not self._runners:
            self._runners = [DecodeAttentionRunner(p, num_q_heads, 1) for p in self.layers]
        return self._runners[layer]
