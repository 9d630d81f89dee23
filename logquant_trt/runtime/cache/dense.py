# SPDX-License-Identifier: Apache-2.0
"""The fp16 baseline cache: every token of every row in full precision, [rows, max_seq_len, H, D] per layer.

Decode attention is FlashAttention-2's variable-length kernel (the one torch SDPA uses), reading each row's
first `lengths[row]` tokens through `seqused_k`: lengths stay on the device, so a step is graph-safe, and
the baseline reads exactly the bytes it needs. Off CUDA it falls back to masked SDPA.

`key_splits` > 1 (opt-in, set before the first decode step) cuts every row's keys into that many
contiguous parts, attends to each part as its own varlen sequence and merges the parts by their
log-sum-exp: more, shorter work items where many rows of medium length leave the kernel's own split
heuristic at one split (bench e2e: 60 rows x 8k). The part bounds are computed on the device.
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
        self.key_splits = 1
        self._parts: KeyParts | None = None

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
        if self.key_splits > 1:
            if self._parts is None or self._parts.splits != self.key_splits:
                self._parts = KeyParts(self.rows, self.key_splits, self.max_seq_len, self.device)
            self._parts.update(self.lengths)

    def decode(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        self.k[layer].index_put_((self._row_ids, self._write_at), k[:, :, 0])
        self.v[layer].index_put_((self._row_ids, self._write_at), v[:, :, 0])
        if self.device.type == "cuda":
            return self._flash_decode(layer, q) if self._parts is None else self._flash_decode_parts(layer, q)
        keys, values = self.k[layer].transpose(1, 2), self.v[layer].transpose(1, 2)  # [rows, H, L, D]
        if self._parts is not None:
            return self._parts.attend_reference(q, keys, values)
        visible = torch.arange(self.max_seq_len, device=self.device) < self.lengths[:, None]
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=visible[:, None, None, :], enable_gqa=True)

    def _flash_decode(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        rows, hq, _, d = q.shape
        s = self.shape
        out = torch.ops.aten._flash_attention_forward(
            q.view(rows, hq, d), self.k[layer].view(-1, s.num_kv_heads, d), self.v[layer].view(-1, s.num_kv_heads, d),
            self._cu_q, self._cu_k, 1, self.max_seq_len, 0.0, False, False, seqused_k=self.lengths)[0]
        return out.view(rows, hq, 1, d)

    def _flash_decode_parts(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        rows, hq, _, d = q.shape
        parts, heads = self._parts, self.shape.num_kv_heads
        assert parts is not None
        queries = q.view(rows, hq, d).repeat_interleave(parts.splits, dim=0)  # one copy per part
        out, lse = torch.ops.aten._flash_attention_forward(
            queries, self.k[layer].view(-1, heads, d), self.v[layer].view(-1, heads, d), parts.cu_q, parts.cu_k, 1,
            self.max_seq_len, 0.0, False, False, seqused_k=parts.used.view(-1))[:2]
        # The log-sum-exp comes back as [Hq, total_q] (unpadded) or [total_q, Hq, 1], by torch version.
        lse = lse.transpose(0, 1) if lse.dim() == 2 else lse.reshape(rows * parts.splits, hq)
        return parts.merge(out.view(rows, parts.splits, hq, d), lse.view(rows, parts.splits, hq)).unsqueeze(2)


class KeyParts:
    """Bounds of `splits` contiguous key parts per row, as varlen sequences, and their merge."""

    def __init__(self, rows: int, splits: int, max_seq_len: int, device: torch.device) -> None:
        if splits < 1:
            raise ValueError(f"key_splits must be >= 1, got {splits}")
        self.rows, self.splits, self.max_seq_len = rows, splits, max_seq_len
        self.start = torch.zeros(rows, splits, dtype=torch.int32, device=device)  # within the row
        self.used = torch.zeros(rows, splits, dtype=torch.int32, device=device)
        self.cu_q = torch.arange(rows * splits + 1, dtype=torch.int32, device=device)
        self.cu_k = torch.zeros(rows * splits + 1, dtype=torch.int32, device=device)
        self.cu_k[-1] = rows * max_seq_len
        self._row_base = torch.arange(rows, dtype=torch.int32, device=device)[:, None] * max_seq_len
        self._index = torch.arange(splits, dtype=torch.int32, device=device)[None]

    def update(self, lengths: torch.Tensor) -> None:
        """Part j of row r: positions [j*c, min((j+1)*c, len)) with c = ceil(len / splits); later parts may be empty."""
        chunk = (lengths[:, None] + self.splits - 1) // self.splits
        start = torch.minimum(self._index * chunk, lengths[:, None])
        self.start.copy_(start)
        self.used.copy_(torch.minimum(lengths[:, None] - start, chunk))
        self.cu_k[:-1].copy_((self._row_base + start).view(-1))

    def merge(self, out: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
        """out [rows, S, Hq, D], lse [rows, S, Hq] of each part -> [rows, Hq, D]; empty parts weigh nothing."""
        lse = lse.float().masked_fill((self.used == 0)[:, :, None], float("-inf"))
        weight = torch.softmax(lse, dim=1)  # exp(lse_j - logsumexp over parts)
        return (weight[..., None] * out.float()).sum(1).to(out.dtype)

    def attend_reference(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """The same parts and merge in plain PyTorch (CPU): q [rows, Hq, 1, D], keys/values [rows, H, L, D]."""
        rows, hq, _, d = q.shape
        group = hq // keys.shape[1]
        keys, values = keys.repeat_interleave(group, 1).float(), values.repeat_interleave(group, 1).float()
        scores = torch.einsum("rhd,rhld->rhl", q[:, :, 0].float(), keys) * d ** -0.5  # [rows, Hq, L]
        positions = torch.arange(self.max_seq_len, device=q.device)
        outs, lses = [], []
        for j in range(self.splits):
            start, used = self.start[:, j:j + 1], self.used[:, j:j + 1]
            inside = (positions >= start) & (positions < start + used)  # [rows, L]
            part = scores.masked_fill(~inside[:, None, :], float("-inf"))
            lse = torch.logsumexp(part, dim=-1)  # -inf for an empty part
            probs = torch.exp(part - lse[..., None]).nan_to_num(0.0)
            outs.append(torch.einsum("rhl,rhld->rhd", probs, values))
            lses.append(lse)
        merged = self.merge(torch.stack(outs, 1), torch.stack(lses, 1))
        return merged.to(q.dtype).unsqueeze(2)
