# SPDX-License-Identifier: Apache-2.0
"""The fp16 baseline cache: every token of every row in full precision, [rows, max_seq_len, H, D] per layer.

Decode attention is FlashAttention-2's variable-length kernel (the one torch SDPA uses), reading each row's
first `lengths[row]` tokens through `seqused_k`: lengths stay on the device, so a step is graph-safe, and
the baseline reads exactly the bytes it needs at the kernel's full bandwidth. Off CUDA it falls back to
masked SDPA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from logquant_trt.runtime.cache.base import KVCache, causal_self_attention


class DenseKVCache(KVCache):
    graph_safe = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        s = self.shape
        size = (s.num_layers, self.rows, self.max_seq_len, s.num_kv_heads, s.head_dim)
        self.k = torch.zeros(size, dtype=self.dtype, device=self.device)
        self.v = torch.zeros(size, dtype=self.dtype, device=self.device)
        self.lengths = torch.zeros(self.rows, dtype=torch.int32, device=self.device)
        self._write_at = torch.zeros(self.rows, dtype=torch.int64, device=self.device)
        self._row_ids = torch.arange(self.rows, device=self.device)
        # FlashAttention varlen: row r's queries and keys start at r and r * max_seq_len.
        self._cu_q = torch.arange(self.rows + 1, dtype=torch.int32, device=self.device)
        self._cu_k = self._cu_q * self.max_seq_len

    @classmethod
    def bytes_per_row(cls, config, shape, max_seq_len: int) -> int:
        itemsize = getattr(torch, config.dtype).itemsize
        return shape.num_layers * 2 * max_seq_len * shape.num_kv_heads * shape.head_dim * itemsize + 4

    def assign(self, row: int, pages: list[int]) -> None:
        self.lengths[row] = 0

    def prefill(self, row: int, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n = k.shape[2]
        self.k[layer, row, :n] = k[0].transpose(0, 1)
        self.v[layer, row, :n] = v[0].transpose(0, 1)
        if layer == self.shape.num_layers - 1:
            self.lengths[row] = n
        return causal_self_attention(q, k, v)

    def begin_decode(self, active: torch.Tensor, active_rows: list[int]) -> None:
        # Idle rows restart empty: they write slot 0 and attend over that one token.
        self._write_at.copy_(self.lengths * active)
        self.lengths.copy_(self._write_at + 1)

    def decode(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        self.k[layer].index_put_((self._row_ids, self._write_at), k[:, :, 0])
        self.v[layer].index_put_((self._row_ids, self._write_at), v[:, :, 0])
        if self.device.type == "cuda":
            return self._flash_decode(layer, q)
        keys, values = self.k[layer].transpose(1, 2), self.v[layer].transpose(1, 2)  # [rows, H, L, D]
        visible = torch.arange(self.max_seq_len, device=self.device) < self.lengths[:, None]
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=visible[:, None, None, :], enable_gqa=True)

    def _flash_decode(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        rows, hq, _, d = q.shape
        s = self.shape
        out = torch.ops.aten._flash_attention_forward(
            q.view(rows, hq, d), self.k[layer].view(-1, s.num_kv_heads, d), self.v[layer].view(-1, s.num_kv_heads, d),
            self._cu_q, self._cu_k, 1, self.max_seq_len, 0.0, False, False, seqused_k=self.lengths)[0]
        return out.view(rows, hq, 1, d)
