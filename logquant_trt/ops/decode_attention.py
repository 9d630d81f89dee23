# SPDX-License-Identifier: Apache-2.0
"""Fused decode attention over the mixed cache: `logquant::decode_attention`.

The newest n query tokens of every sequence attend over its sealed 2-bit blocks (dup_mask-ed slots skipped),
its retained buffer (retained_pos >= 0) and its tail ring, in one fp32 softmax (docs/kv_format.md §6). The
oracle is logquant_trt.reference.paged.paged_attention. Arguments are checked before the kernel runs (TypeError /
ValueError naming the argument). The launch goes on torch's current stream and reads every length on the device,
so `DecodeAttentionRunner.run` can be captured in a CUDA graph.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

import torch

from logquant_trt.format import KEY_AXIS_IDS
from logquant_trt.ops._cache_view import (CACHE_TENSOR_NAMES, KvCacheView, cache_tensors, check_shape_dtype_device,
                                          make_cache_view)
from logquant_trt.ops._library import check, current_stream, load_library, set_device

MAX_QUERIES = 8  # must match logquant::kernel::DecodeAttentionParams::kMAX_QUERIES


@functools.cache
def _functions() -> Any:
    lib = load_library()
    ptr = ctypes.c_void_p
    lib.logquant_decode_attention_workspace_size.argtypes = [ptr, ctypes.c_int32, ctypes.c_int32,
                                                             ctypes.POINTER(ctypes.c_uint64)]
    lib.logquant_decode_attention_workspace_size.restype = ctypes.c_int32
    lib.logquant_decode_attention.argtypes = [ptr, ptr, ptr, ctypes.c_int32, ctypes.c_int32, ctypes.c_float, ptr,
                                              ctypes.c_uint64, ptr]
    lib.logquant_decode_attention.restype = ctypes.c_int32
    return lib


def _check_query(q: torch.Tensor, tail_k: torch.Tensor) -> tuple[int, int]:
    """q must be [B, Hq, n, D] in the cache dtype on the cache's device; returns (Hq, n)."""
    check_shape_dtype_device(q, "q", None, tail_k.dtype, tail_k.device)
    batch, heads, _, d = tail_k.shape
    if q.dim() != 4 or q.shape[0] != batch or q.shape[3] != d:
        raise ValueError(f"q must have shape ({batch}, Hq, n, {d}), got {tuple(q.shape)}")
    hq, n = q.shape[1], q.shape[2]
    if hq % heads:
        raise ValueError(f"q: {hq} query heads are not a multiple of the cache's {heads} KV heads")
    if not 1 <= n <= MAX_QUERIES:
        raise ValueError(f"q: n={n} query tokens per sequence; supported 1..{MAX_QUERIES}")
    return hq, n


def _check_scale(scale: float, head_dim: int) -> float:
    scale = head_dim ** -0.5 if scale is None else float(scale)
    if not scale > 0 or scale == float("inf"):
        raise ValueError(f"scale must be finite and > 0, got {scale}")
    return scale


def workspace_size(view: KvCacheView, num_query_heads: int, num_queries: int) -> int:
    """Bytes of zeroed scratch one launch needs on the current device."""
    size = ctypes.c_uint64()
    check(_functions().logquant_decode_attention_workspace_size(ctypes.byref(view.geometry), num_query_heads,
                                                                num_queries, ctypes.byref(size)))
    return size.value


def _launch(view: KvCacheView, q: torch.Tensor, out: torch.Tensor, scale: float, workspace: torch.Tensor | None,
            workspace_bytes: int) -> None:
    ptr = workspace.data_ptr() if workspace is not None else None
    check(_functions().logquant_decode_attention(ctypes.byref(view), q.data_ptr(), out.data_ptr(), q.shape[1],
                                                 q.shape[2], scale, ptr, workspace_bytes,
                                                 current_stream(q.device)))


@torch.library.custom_op("logquant::decode_attention", mutates_args=())
def _decode_attention(q: torch.Tensor, k_codes: torch.Tensor, k_params: torch.Tensor, v_codes: torch.Tensor,
                      v_params: torch.Tensor, dup_mask: torch.Tensor, block_table: torch.Tensor,
                      num_sealed: torch.Tensor, seq_len: torch.Tensor, tail_k: torch.Tensor, tail_v: torch.Tensor,
                      retained_pos: torch.Tensor, retained_k: torch.Tensor, retained_v: torch.Tensor,
                      group_size: int, key_axis: int, scale: float) -> torch.Tensor:
    """q: [B, Hq, n, D] post-RoPE, cache dtype; returns [B, Hq, n, D] in the cache dtype."""
    cache = dict(zip(CACHE_TENSOR_NAMES, (k_codes, k_params, v_codes, v_params, dup_mask, block_table, num_sealed,
                                          seq_len, tail_k, tail_v, retained_pos, retained_k, retained_v)))
    view = make_cache_view(cache, group_size, key_axis)
    hq, n = _check_query(q, tail_k)
    scale = _check_scale(scale, tail_k.shape[3])
    set_device(q.device)
    size = workspace_size(view, hq, n)
    # A fresh zeroed workspace per call keeps concurrent streams apart; DecodeAttentionRunner reuses one.
    workspace = torch.zeros(size, dtype=torch.uint8, device=q.device) if size else None
    out = torch.empty_like(q)
    _launch(view, q, out, scale, workspace, size)
    return out


@_decode_attention.register_fake
def _(q: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return torch.empty_like(q)


def decode_attention(q: torch.Tensor, paged: Any, scale: float | None = None) -> torch.Tensor:
    """Attention of the newest n tokens of each sequence over its cache.

    Args:
        q: [B, Hq, n, D] post-RoPE queries in the cache dtype; query token t of sequence b is position
            seq_len[b] - n + t. Hq must be a multiple of the cache's H (GQA); n in 1..8.
        paged: a logquant_trt.reference.paged.PagedLayer-shaped object whose tensors are on q's device.
        scale: softmax scale; default 1/sqrt(D).
    Returns:
        [B, Hq, n, D] in the cache dtype.
    """
    tensors = cache_tensors(paged)
    axis = KEY_AXIS_IDS[paged.config.key_axis.value]
    scale = _check_scale(scale, tensors["tail_k"].shape[3])
    return torch.ops.logquant.decode_attention(q, *tensors.values(), paged.config.group_size, axis, scale)


class DecodeAttentionRunner:
    """Checks a cache once and then launches with no per-call checks or allocations (benchmarks, CUDA graphs).

    The runner keeps its own zeroed workspace; launches on one runner must not overlap (one stream at a time).
    """

    def __init__(self, paged: Any, num_query_heads: int, num_queries: int, scale: float | None = None) -> None:
        self._tensors = cache_tensors(paged)
        tail_k = self._tensors["tail_k"]
        self.view = make_cache_view(self._tensors, paged.config.group_size,
                                    KEY_AXIS_IDS[paged.config.key_axis.value])
        probe = torch.empty(tail_k.shape[0], num_query_heads, num_queries, tail_k.shape[3], dtype=tail_k.dtype,
                            device=tail_k.device)
        _check_query(probe, tail_k)
        self.scale = _check_scale(scale, tail_k.shape[3])
        self.shape = tuple(probe.shape)
        set_device(tail_k.device)
        self.workspace_bytes = workspace_size(self.view, num_query_heads, num_queries)
        self.workspace = (torch.zeros(self.workspace_bytes, dtype=torch.uint8, device=tail_k.device)
                          if self.workspace_bytes else None)

    def run(self, q: torch.Tensor, out: torch.Tensor) -> None:
        """out <- attention(q); both [B, Hq, n, D] contiguous in the cache dtype on the cache's device."""
        if tuple(q.shape) != self.shape or tuple(out.shape) != self.shape:
            raise ValueError(f"q and out must have shape {self.shape}, got {tuple(q.shape)} and {tuple(out.shape)}")
        _launch(self.view, q, out, self.scale, self.workspace, self.workspace_bytes)
