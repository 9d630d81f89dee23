# SPDX-License-Identifier: Apache-2.0
"""The fp16 baseline cache: every token of every row in full precision, [rows, H, max_seq_len, D] per layer.

Decode attention is FlashAttention-2's variable-length kernel (the one torch SDPA uses), reading each row's
first `lengths[row]` tokens through `seqused_k`: lengths stay on the device, so a step is graph-safe, and
the baseline reads exactly the bytes it needs. Off CUDA it falls back to masked SDPA.

Head-major, so that a CTA's (row, head) keys are one contiguous stream (the varlen view over it is
`_varlen_view`).

Row chunks (`DecodeChunks`): FlashAttention-2 takes its split-KV kernel only while rows x KV heads stay
under 0.8 x 2 x SMs; above that its standard kernel runs a 128-query tile for the 4-8 query heads a KV
head has, and decode reads at ~2.5 TB/s on an H100 (60 rows x 8k) where the split-KV kernel reads at
~2.9. So a large batch is attended in chunks small enough for the split-KV kernel, on two side streams,
so that one chunk's tail overlaps the next chunk's start.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from logquant_trt.runtime.cache.base import KVCache, causal_self_attention

# FlashAttention-2 (flash_api.cpp, set_params_splitkv): more than one split only below 0.8 x this many blocks.
_FLASH_BLOCKS_PER_SM = 2
_SIDE_STREAMS = 2


@dataclasses.dataclass(frozen=True)
class DecodeChunks:
    """Row ranges attended by separate FlashAttention calls."""

    bounds: tuple[tuple[int, int], ...]

    @classmethod
    def plan(cls, rows: int, num_kv_heads: int, sm_count: int) -> "DecodeChunks":
        """One call while FlashAttention would split it anyway; else equal chunks of at most ~1 block per SM."""
        if rows * num_kv_heads < 0.8 * _FLASH_BLOCKS_PER_SM * sm_count:
            return cls(((0, rows),))
        most = max(1, sm_count // num_kv_heads)
        count = -(-rows // most)
        size = -(-rows // count)
        return cls(tuple((start, min(start + size, rows)) for start in range(0, rows, size)))


class DenseKVCache(KVCache):
    graph_safe = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        s = self.shape
        size = (s.num_layers, self.rows, s.num_kv_heads, self.max_seq_len, s.head_dim)
        self.k = torch.zeros(size, dtype=self.dtype, device=self.device)
        self.v = torch.zeros(size, dtype=self.dtype, device=self.device)
        self.lengths = torch.zeros(self.rows, dtype=torch.int32, device=self.device)
        self._write_at = torch.zeros(self.rows, dtype=torch.int64, device=self.device)
        self._row_ids = torch.arange(self.rows, device=self.device)[:, None]
        self._head_ids = torch.arange(s.num_kv_heads, device=self.device)[None, :]
        # FlashAttention varlen: a chunk's row r queries at r, its keys from r * H * max_seq_len (_varlen_view).
        self._cu_q = torch.arange(self.rows + 1, dtype=torch.int32, device=self.device)
        self._cu_k = self._cu_q * (s.num_kv_heads * self.max_seq_len)
        self._visible: torch.Tensor | None = None  # off CUDA: bool [rows, 1, 1, max_seq_len], set per step
        self.chunks = DecodeChunks(((0, self.rows),))
        self._streams: list[torch.cuda.Stream] = []
        if self.device.type == "cuda":
            sm_count = torch.cuda.get_device_properties(self.device).multi_processor_count
            self.chunks = DecodeChunks.plan(self.rows, s.num_kv_heads, sm_count)
            if len(self.chunks.bounds) > 1:
                streams = min(_SIDE_STREAMS, len(self.chunks.bounds))
                self._streams = [torch.cuda.Stream(self.device) for _ in range(streams)]

    @classmethod
    def bytes_per_row(cls, config, shape, max_seq_len: int) -> int:
        itemsize = getattr(torch, config.dtype).itemsize
        return shape.num_layers * 2 * max_seq_len * shape.num_kv_heads * shape.head_dim * itemsize + 4

    def assign(self, row: int, pages: list[int]) -> None:
        self.lengths[row] = 0

    def prefill(self, row: int, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n = k.shape[2]
        self.k[layer, row, :, :n] = k[0]
        self.v[layer, row, :, :n] = v[0]
        if layer == self.shape.num_layers - 1:
            self.lengths[row] = n
        return causal_self_attention(q, k, v)

    def begin_decode(self, active: torch.Tensor, active_rows: list[int]) -> None:
        # Idle rows restart empty: they write slot 0 and attend over that one token.
        self._write_at.copy_(self.lengths * active)
        self.lengths.copy_(self._write_at + 1)
        if self.device.type != "cuda":
            # Every layer of the step attends over the same lengths: one mask serves them all.
            visible = torch.arange(self.max_seq_len, device=self.device) < self.lengths[:, None]
            self._visible = visible[:, None, None, :]

    def decode(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        at = (self._row_ids, self._head_ids, self._write_at[:, None])
        self.k[layer].index_put_(at, k[:, :, 0])
        self.v[layer].index_put_(at, v[:, :, 0])
        if self.device.type == "cuda":
            return self._flash_decode(layer, q)
        return F.scaled_dot_product_attention(q, self.k[layer], self.v[layer], attn_mask=self._visible,
                                              enable_gqa=True)

    def _flash_decode(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        rows, hq, _, d = q.shape
        queries = q.view(rows, hq, d)
        if not self._streams:
            return self._flash_rows(layer, queries, 0, rows).view(rows, hq, 1, d)
        out = torch.empty_like(queries)
        main = torch.cuda.current_stream(self.device)
        for index, (start, stop) in enumerate(self.chunks.bounds):
            stream = self._streams[index % len(self._streams)]
            stream.wait_stream(main)
            with torch.cuda.stream(stream):
                out[start:stop] = self._flash_rows(layer, queries, start, stop)
        for stream in self._streams:  # every stream ran a chunk: a capture must join each one it forked
            main.wait_stream(stream)
        return out.view(rows, hq, 1, d)

    def _flash_rows(self, layer: int, queries: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        count = stop - start
        return torch.ops.aten._flash_attention_forward(
            queries[start:stop], self._varlen_view(self.k[layer, start:stop]),
            self._varlen_view(self.v[layer, start:stop]), self._cu_q[:count + 1], self._cu_k[:count + 1], 1,
            self.max_seq_len, 0.0, False, False, seqused_k=self.lengths[start:stop])[0]

    @staticmethod
    def _varlen_view(layer_kv: torch.Tensor) -> torch.Tensor:
        """[rows, H, L, D] as varlen's [total, H, D]: token t of head h at t * D + h * L * D.

        Row r starts at token r * H * L (`_cu_k`), so its position p lands at (r * H * L + p) * D + h * L * D,
        exactly its place in the head-major tensor. The view ends at the last row's last position.
        """
        rows, heads, length, d = layer_kv.shape
        total = (rows - 1) * heads * length + length
        return layer_kv.as_strided((total, heads, d), (d, length * d, 1))
