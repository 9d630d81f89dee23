# SPDX-License-Identifier: Apache-2.0
"""The cache write path on the GPU: `logquant::quantize_prefill` and `logquant::append_decode`.

Both mutate one layer's cache tensors (docs/kv_format.md §4) in place, producing exactly the state that
logquant_trt.reference (LayerKVState, then to_paged) produces for the same tokens. Arguments are checked
before the kernels run (TypeError / ValueError naming the argument). Launches go on torch's current stream;
nothing synchronizes with the host, so both ops can be captured in a CUDA graph.
"""

import ctypes
import functools
from typing import Any

import torch

from logquant_trt.format import KEY_AXIS_IDS
from logquant_trt.ops._cache_view import (CACHE_TENSOR_NAMES, KvCacheView, PolicyParams, cache_tensors,
                                          check_aligned, check_shape_dtype_device, make_cache_view, policy_params)
from logquant_trt.ops._library import check, current_stream, load_library, set_device

# Every cache tensor but block_table, which the caller fills.
MUTATED = tuple(n for n in CACHE_TENSOR_NAMES if n != "block_table")


@functools.cache
def _functions() -> Any:
    lib = load_library()
    ptr = ctypes.c_void_p
    lib.logquant_quantize_prefill.argtypes = [ptr, ptr, ptr, ptr, ptr, ctypes.c_int32, ptr]
    lib.logquant_quantize_prefill.restype = ctypes.c_int32
    lib.logquant_append_decode.argtypes = [ptr, ptr, ptr, ptr, ptr]
    lib.logquant_append_decode.restype = ctypes.c_int32
    return lib


def _view_and_policy(cache: dict[str, torch.Tensor], policy: list[int], group_size: int,
                     key_axis: int) -> tuple[KvCacheView, PolicyParams]:
    view = make_cache_view(cache, group_size, key_axis)
    if len(policy) != len(PolicyParams._fields_):
        raise ValueError(f"policy must hold the {len(PolicyParams._fields_)} PolicyParams fields, got {len(policy)}")
    return view, PolicyParams(*policy)


@torch.library.custom_op("logquant::quantize_prefill", mutates_args=MUTATED)
def _quantize_prefill(k_codes: torch.Tensor, k_params: torch.Tensor, v_codes: torch.Tensor, v_params: torch.Tensor,
                      dup_mask: torch.Tensor, block_table: torch.Tensor, num_sealed: torch.Tensor,
                      seq_len: torch.Tensor, tail_k: torch.Tensor, tail_v: torch.Tensor, retained_pos: torch.Tensor,
                      retained_k: torch.Tensor, retained_v: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      lengths: torch.Tensor, policy: list[int], group_size: int, key_axis: int) -> None:
    """k, v: [B, H, max_length, D] post-RoPE, cache dtype; lengths: int32 [B]; policy: PolicyParams fields."""
    cache = dict(zip(CACHE_TENSOR_NAMES, (k_codes, k_params, v_codes, v_params, dup_mask, block_table, num_sealed,
                                          seq_len, tail_k, tail_v, retained_pos, retained_k, retained_v)))
    view, params = _view_and_policy(cache, policy, group_size, key_axis)
    batch, heads, _, d = tail_k.shape
    check_shape_dtype_device(k, "k", None, tail_k.dtype, tail_k.device)
    if k.dim() != 4 or (k.shape[0], k.shape[1], k.shape[3]) != (batch, heads, d):
        raise ValueError(f"k must have shape ({batch}, {heads}, max_length, {d}), got {tuple(k.shape)}")
    check_shape_dtype_device(v, "v", k.shape, tail_k.dtype, tail_k.device)
    check_shape_dtype_device(lengths, "lengths", (batch,), torch.int32, tail_k.device)
    check_aligned(k, "k")
    check_aligned(v, "v")
    set_device(tail_k.device)
    check(_functions().logquant_quantize_prefill(ctypes.byref(view), ctypes.byref(params), k.data_ptr(),
                                                 v.data_ptr(), lengths.data_ptr(), k.shape[2],
                                                 current_stream(tail_k.device)))


@_quantize_prefill.register_fake
def _(*args: Any, **kwargs: Any) -> None:
    return None


@torch.library.custom_op("logquant::append_decode", mutates_args=MUTATED)
def _append_decode(k_codes: torch.Tensor, k_params: torch.Tensor, v_codes: torch.Tensor, v_params: torch.Tensor,
                   dup_mask: torch.Tensor, block_table: torch.Tensor, num_sealed: torch.Tensor, seq_len: torch.Tensor,
                   tail_k: torch.Tensor, tail_v: torch.Tensor, retained_pos: torch.Tensor, retained_k: torch.Tensor,
                   retained_v: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor, policy: list[int],
                   group_size: int, key_axis: int) -> None:
    """k_new, v_new: [B, H, 1, D] post-RoPE, cache dtype; policy: PolicyParams fields."""
    cache = dict(zip(CACHE_TENSOR_NAMES, (k_codes, k_params, v_codes, v_params, dup_mask, block_table, num_sealed,
                                          seq_len, tail_k, tail_v, retained_pos, retained_k, retained_v)))
    view, params = _view_and_policy(cache, policy, group_size, key_axis)
    batch, heads, _, d = tail_k.shape
    check_shape_dtype_device(k_new, "k_new", (batch, heads, 1, d), tail_k.dtype, tail_k.device)
    check_shape_dtype_device(v_new, "v_new", (batch, heads, 1, d), tail_k.dtype, tail_k.device)
    check_aligned(k_new, "k_new")
    check_aligned(v_new, "v_new")
    set_device(tail_k.device)
    check(_functions().logquant_append_decode(ctypes.byref(view), ctypes.byref(params), k_new.data_ptr(),
                                              v_new.data_ptr(), current_stream(tail_k.device)))


@_append_decode.register_fake
def _(*args: Any, **kwargs: Any) -> None:
    return None


def _op_args(paged: Any, layer_idx: int) -> tuple[list[torch.Tensor], list[int], int, int]:
    config = paged.config
    tensors = cache_tensors(paged)
    if tensors["tail_k"].dtype != getattr(torch, config.dtype):
        raise TypeError(f"tail_k has dtype {tensors['tail_k'].dtype}, but config.dtype is {config.dtype!r}")
    p = policy_params(config, layer_idx)
    policy = [getattr(p, name) for name, _ in PolicyParams._fields_]
    axis = KEY_AXIS_IDS[config.key_axis.value]
    return list(tensors.values()), policy, config.group_size, axis


def quantize_prefill(paged: Any, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor, layer_idx: int) -> None:
    """Prefill a fresh cache in place.

    Args:
        paged: a logquant_trt.reference.paged.PagedLayer-shaped object (its tensors on one CUDA device, its
            block_table holding a page for every block the prefill seals).
        k, v: [B, H, max_length, D] post-RoPE keys and values in the cache dtype; sequence b uses its first
            lengths[b] positions.
        lengths: int32 [B] on the same device.
        layer_idx: the layer's index (OTT's pool_skip_layers).
    """
    tensors, policy, group_size, axis = _op_args(paged, layer_idx)
    torch.ops.logquant.quantize_prefill(*tensors, k, v, lengths, policy, group_size, axis)


def append_decode(paged: Any, k_new: torch.Tensor, v_new: torch.Tensor, layer_idx: int) -> None:
    """Append one token per sequence ([B, H, 1, D] post-RoPE, cache dtype) and compact, in place.

    block_table must already hold the pages this step may seal (num_sealed[b] .. + W/G - 1 for LogQuant).
    """
    tensors, policy, group_size, axis = _op_args(paged, layer_idx)
    torch.ops.logquant.append_decode(*tensors, k_new, v_new, policy, group_size, axis)
