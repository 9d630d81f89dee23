# SPDX-License-Identifier: Apache-2.0
"""One LogQuantAttention call (docs/plugin.md) over the paged layout, functionally.

The plugin's contract in PyTorch: read one layer's cache tensors (docs/kv_format.md §4),
append the new tokens (a prefill of an empty cache when n > 1, else one decode step),
attend, and return new cache tensors. Each sequence is rebuilt as a `LayerKVState` from the
layout alone (the format stores no policy state beyond its tables), advanced by the
reference, and laid out again with `to_paged`, so `LayerKVState` stays the only oracle.
"""

from __future__ import annotations

import dataclasses

import torch

from logquant_trt.config import LogQuantConfig
from logquant_trt.format import PAGE_TENSOR_NAMES
from logquant_trt.reference.attention import dense_attention
from logquant_trt.reference.blocks import QuantizedBlocks
from logquant_trt.reference.layer_state import LayerKVState
from logquant_trt.reference.outlier_pool import key_l1_scores
from logquant_trt.reference.paged import PagedLayer, paged_attention, tail_slots, to_paged
from logquant_trt.reference.retention import LayerRetention


def attention_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, paged: PagedLayer,
                   context_lengths: torch.Tensor, layer_idx: int) -> tuple[torch.Tensor, PagedLayer]:
    """The plugin's outputs for q [B, Hq, n, D] and k/v [B, H, n, D] (post-RoPE).

    Returns the attention [B, Hq, n, D] and the updated cache; `paged` is left untouched.
    Prefill rows past context_lengths[b] are zero, as the plugin writes them.
    """
    batch, n = q.shape[0], q.shape[2]
    new = PagedLayer(paged.config, **{f.name: getattr(paged, f.name).clone()
                                      for f in dataclasses.fields(PagedLayer) if f.name != "config"})
    out = torch.zeros_like(q)
    for b in range(batch):
        state = layer_state_from_paged(paged, b, layer_idx)
        if n > 1:
            if state.length:
                raise NotImplementedError(f"{n} new tokens on a cache of {state.length}: chunked prefill is "
                                          "not in LogQuantAttention v1 (docs/plugin.md)")
            length = int(context_lengths[b])
            if not 1 <= length <= n:
                raise ValueError(f"context_lengths[{b}]={length} must be in [1, {n}]")
            kb, vb = k[b:b + 1, :, :length], v[b:b + 1, :, :length]
            state.append(kb, vb)
            # A prefill attends over its own unquantized K/V (docs/kv_format.md §5).
            out[b:b + 1, :, :length] = dense_attention(q[b:b + 1, :, :length], kb, vb)
        else:
            state.append(k[b:b + 1], v[b:b + 1])
        # In block order: the op must not draw from torch's global generator (callers' sampling seeds).
        single = to_paged([state], shuffle=False)
        if n == 1:
            out[b:b + 1] = paged_attention(q[b:b + 1], single)
        _write_sequence(new, b, single)
    return out, new


def layer_state_from_paged(paged: PagedLayer, b: int, layer_idx: int) -> LayerKVState:
    """Sequence b of the layout as a single-sequence LayerKVState (empty when seq_len[b] == 0)."""
    config = paged.config
    if config.uses_log_window and config.sink_tokens:
        # The sparse region omits positions below sink_tokens (docs/kv_format.md §4.4), yet
        # LogQuant's thinning needs the whole ordered set, so the layout alone cannot restore it.
        raise NotImplementedError(f"sink_tokens={config.sink_tokens} with policy {config.policy.value}: "
                                  "the functional reference needs sink_tokens=0")
    state = LayerKVState(config, layer_idx)
    length, sealed = int(paged.seq_len[b]), int(paged.num_sealed[b])
    if length == 0:
        return state
    g, heads = config.group_size, paged.tail_k.shape[1]
    state.length, state.num_sealed = length, sealed
    if sealed:
        pages = paged.block_table[b, :sealed].long()
        if bool((pages < 0).any()):
            raise ValueError(f"block_table[{b}, :{sealed}] = {pages.tolist()} maps a sealed block to no page")
        state.blocks = QuantizedBlocks(config.key_axis, *(getattr(paged, name)[pages].unsqueeze(0)
                                                           for name in PAGE_TENSOR_NAMES[:4]))
    slots = tail_slots(sealed * g, length, paged.tail_k.shape[2], paged.tail_k.device)
    state.tail_k, state.tail_v = paged.tail_k[b:b + 1, :, slots], paged.tail_v[b:b + 1, :, slots]
    state.policy = _retention_from_paged(paged, b, layer_idx, heads)
    state._last_sparse = state.policy.window.sparse
    for h in range(heads):
        pos = paged.retained_pos[b, h]
        state.retained[(0, h)] = {int(pos[i]): (paged.retained_k[b, h, i], paged.retained_v[b, h, i])
                                  for i in torch.nonzero(pos >= 0).flatten().tolist()}
    return state


def _retention_from_paged(paged: PagedLayer, b: int, layer_idx: int, heads: int) -> LayerRetention:
    config: LogQuantConfig = paged.config
    policy = LayerRetention(config, layer_idx, 1, heads)
    window = policy.window
    window.length = int(paged.seq_len[b])
    regions = config.retained_regions()
    sparse_at, pool_at = regions["sinks"], regions["sinks"] + regions["sparse"]
    extra_at = pool_at + regions["pool"]
    if config.uses_log_window:
        # LogQuant's window starts at Q (docs/kv_format.md §4.2); the sparse set is head-independent,
        # shadowed entries (-(p) - 2) included.
        window.window_start = int(paged.num_sealed[b]) * config.group_size
        entries = paged.retained_pos[b, 0, sparse_at:pool_at].tolist()
        window.sparse = [p if p >= 0 else -p - 2 for p in entries if p != -1]
    if policy.pool is not None:
        for h in range(heads):
            pos = paged.retained_pos[b, h]
            slots = [i for i in range(pool_at, extra_at) if int(pos[i]) >= 0]
            scores = key_l1_scores(paged.retained_k[b, h, slots]).tolist() if slots else []
            # Ties go to the older position, as the stable sort at seal time leaves them.
            policy.pool.pool[0][h] = sorted(zip(scores, (int(pos[i]) for i in slots)))
            policy.pool.extra[0][h] = sorted(int(p) for p in pos[extra_at:extra_at + regions["extra"]] if p >= 0)
    return policy


def _write_sequence(dst: PagedLayer, b: int, single: PagedLayer) -> None:
    """Copy a one-sequence layout into row b of dst, its pages through dst's block table."""
    sealed = int(single.num_sealed[0])
    for n in range(sealed):
        page = int(dst.block_table[b, n])
        if page < 0:
            raise ValueError(f"block_table[{b}, {n}] = -1: the caller must map every block this call seals")
        src = int(single.block_table[0, n])
        for name in PAGE_TENSOR_NAMES:
            getattr(dst, name)[page] = getattr(single, name)[src]
    dst.num_sealed[b], dst.seq_len[b] = single.num_sealed[0], single.seq_len[0]
    for name in ("tail_k", "tail_v", "retained_pos", "retained_k", "retained_v"):
        getattr(dst, name)[b] = getattr(single, name)[0]
