# SPDX-License-Identifier: Apache-2.0
"""Attention over the mixed cache: one softmax over the quantized blocks (duplicates
masked), the retained buffer and the tail (docs/kv_format.md §6).
"""

from __future__ import annotations

import torch


def _expand_kv_heads(x: torch.Tensor, query_heads: int) -> torch.Tensor:
    """[B, H, ...] -> [B, Hq, ...]: query head j reads KV head j // (Hq / H)."""
    heads = x.shape[1]
    if query_heads % heads:
        raise ValueError(f"query heads {query_heads} are not a multiple of KV heads {heads}")
    return x.repeat_interleave(query_heads // heads, dim=1)


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Causal attention of the last n positions: q [B, Hq, n, D], k/v [B, H, L, D]."""
    n, length = q.shape[2], k.shape[2]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    k, v = _expand_kv_heads(k, q.shape[1]), _expand_kv_heads(v, q.shape[1])
    scores = torch.einsum("bhqd,bhkd->bhqk", q.float(), k.float()) * scale
    query_pos = torch.arange(length - n, length, device=q.device)[:, None]
    scores = scores.masked_fill(torch.arange(length, device=q.device)[None, :] > query_pos, float("-inf"))
    return torch.einsum("bhqk,bhkd->bhqd", scores.softmax(-1), v.float()).to(q.dtype)


def mixed_attention(
    q: torch.Tensor,
    quant_k: torch.Tensor, quant_v: torch.Tensor, quant_masked: torch.Tensor,
    retained_k: torch.Tensor, retained_v: torch.Tensor, retained_valid: torch.Tensor,
    tail_k: torch.Tensor, tail_v: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention of the newest n tokens over the three segments of the cache.

    Args:
        q: [B, Hq, n, D], queries of positions L-n .. L-1 (all in the tail).
        quant_k, quant_v: [B, H, Q, D] dequantized sealed blocks.
        quant_masked: bool [B, H, Q], True where a full-precision copy exists.
        retained_k, retained_v: [B, H, S, D]; retained_valid: bool [B, H, S].
        tail_k, tail_v: [B, H, T, D], positions Q .. L-1.
    Returns:
        [B, Hq, n, D] in q.dtype; softmax in fp32.
    """
    n, tail_len = q.shape[2], tail_k.shape[2]
    if n > tail_len:
        raise ValueError(f"{n} queries but only {tail_len} tail tokens: queries must be in the tail")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    hq = q.shape[1]
    # Causal inside the tail: query i (position L-n+i) sees tail slots up to tail_len-n+i.
    slots = torch.arange(tail_len, device=q.device)
    tail_hidden = slots[None, :] > slots[tail_len - n:, None]
    batch, heads = tail_k.shape[:2]
    segments = (
        (quant_k, quant_v, quant_masked[:, :, None, :].expand(-1, -1, n, -1)),
        (retained_k, retained_v, ~retained_valid[:, :, None, :].expand(-1, -1, n, -1)),
        (tail_k, tail_v, tail_hidden.expand(batch, heads, -1, -1)),
    )
    scores, values = [], []
    for k, v, hidden in segments:
        s = torch.einsum("bhqd,bhkd->bhqk", q.float(), _expand_kv_heads(k, hq).float()) * scale
        scores.append(s.masked_fill(_expand_kv_heads(hidden, hq), float("-inf")))
        values.append(_expand_kv_heads(v, hq).float())
    probs = torch.cat(scores, dim=-1).softmax(-1)
    return torch.einsum("bhqk,bhkd->bhqd", probs, torch.cat(values, dim=2)).to(q.dtype)
