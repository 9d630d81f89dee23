# SPDX-License-Identifier: Apache-2.0
"""ctypes mirrors of the C++ structs the kernels take, and builders that validate CUDA tensors.

Mirrors (must match, field for field):
  KvGeometry, KvCacheView  <-> cpp/include/logquant/kvCacheView.h
  PolicyParams             <-> cpp/include/logquant/policyParams.h
Every check raises before any kernel runs: TypeError for a wrong type or dtype, ValueError for a
wrong shape, device or layout, each naming the argument.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from logquant_trt.config import KeyAxis, LogQuantConfig
from logquant_trt.format import CACHE_TENSOR_NAMES, GROUP_SIZES, KEY_AXIS_IDS, MASK_WORD_BITS, POLICY_IDS

HEAD_DIMS = (64, 128)
# logquant::DataType
DTYPE_IDS = {torch.float16: 0, torch.bfloat16: 1}


class KvGeometry(ctypes.Structure):
    _fields_ = [("batch", ctypes.c_int32), ("numKvHeads", ctypes.c_int32), ("headDim", ctypes.c_int32),
                ("groupSize", ctypes.c_int32), ("numPages", ctypes.c_int32), ("maxBlocksPerSeq", ctypes.c_int32),
                ("tailCapacity", ctypes.c_int32), ("retainedCapacity", ctypes.c_int32),
                ("keyAxis", ctypes.c_int32), ("dtype", ctypes.c_int32)]


class KvCacheView(ctypes.Structure):
    _fields_ = [("geometry", KvGeometry)] + [
        (name, ctypes.c_void_p) for name in ("kCodes", "kParams", "vCodes", "vParams", "dupMask", "blockTable",
                                             "numSealed", "seqLen", "tailK", "tailV", "retainedPos",
                                             "retainedK", "retainedV")]


class PolicyParams(ctypes.Structure):
    _fields_ = [("policy", ctypes.c_int32), ("residual", ctypes.c_int32), ("window", ctypes.c_int32),
                ("sinkTokens", ctypes.c_int32), ("poolSize", ctypes.c_int32), ("poolSlots", ctypes.c_int32),
                ("extraPoolSize", ctypes.c_int32)]


def check_shape_dtype_device(x: Any, name: str, shape: Sequence[int] | None, dtype: torch.dtype | Sequence[torch.dtype],
                             device: torch.device | None) -> None:
    """Check one kernel argument: a contiguous CUDA tensor of this dtype, shape and device.

    shape None skips the shape check; device None accepts any CUDA device.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    dtypes = (dtype,) if isinstance(dtype, torch.dtype) else tuple(dtype)
    if x.dtype not in dtypes:
        expected = " or ".join(str(d) for d in dtypes)
        raise TypeError(f"{name} must have dtype {expected}, got {x.dtype}")
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")
    if x.device.type != "cuda":
        raise ValueError(f"{name} must be a CUDA tensor, got device {x.device}")
    if device is not None and x.device != device:
        raise ValueError(f"{name} is on {x.device}, but the other arguments are on {device}")
    if not x.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def check_aligned(x: torch.Tensor, name: str, alignment: int = 16) -> None:
    """Kernels move rows with 16-byte loads; a view starting mid-row would fault."""
    if x.data_ptr() % alignment:
        raise ValueError(f"{name} must start at a {alignment}-byte aligned address (a view with an odd storage "
                         f"offset?); pass a fresh .contiguous() copy")


def _key_axis(key_axis: KeyAxis | str | int) -> KeyAxis:
    if isinstance(key_axis, int):
        return next(a for a in KeyAxis if KEY_AXIS_IDS[a.value] == key_axis)
    return KeyAxis(key_axis)


def make_cache_view(tensors: Mapping[str, torch.Tensor], group_size: int,
                    key_axis: KeyAxis | str | int) -> KvCacheView:
    """Validate one layer's cache tensors (docs/kv_format.md §4) and view them as a KvCacheView.

    Args:
        tensors: every name of CACHE_TENSOR_NAMES. Geometry comes from the shapes: B, H, T, D from
            tail_k, P from k_codes, max_blocks from block_table, S from retained_pos.
        group_size: G. key_axis: KeyAxis, its value, or its C++ id.
    The view holds raw pointers: keep the tensors alive while it is in use.
    """
    missing = [n for n in CACHE_TENSOR_NAMES if n not in tensors]
    if missing:
        raise ValueError(f"cache tensors missing: {missing}")
    if group_size not in GROUP_SIZES:
        raise ValueError(f"group_size must be one of {GROUP_SIZES}, got {group_size}")
    axis = _key_axis(key_axis)
    tail_k = tensors["tail_k"]
    check_shape_dtype_device(tail_k, "tail_k", None, tuple(DTYPE_IDS), None)
    if tail_k.dim() != 4:
        raise ValueError(f"tail_k must be [B, H, T, D], got shape {tuple(tail_k.shape)}")
    batch, heads, tail_cap, d = tail_k.shape
    if d not in HEAD_DIMS:
        raise ValueError(f"tail_k: head_dim must be one of {HEAD_DIMS}, got {d}")
    dtype, device, g, c = tail_k.dtype, tail_k.device, group_size, min(group_size, d)
    for name, rank in (("k_codes", None), ("block_table", 2), ("retained_pos", 3)):
        t = tensors[name]
        if not isinstance(t, torch.Tensor) or t.dim() < 1 or (rank is not None and t.dim() != rank):
            raise ValueError(f"{name} must be a tensor of rank {rank or 'at least 1'}")
    pages = tensors["k_codes"].shape[0]
    max_blocks = tensors["block_table"].shape[1]
    slots = tensors["retained_pos"].shape[2]
    channel = axis is KeyAxis.CHANNEL
    expected = {
        "k_codes": ((pages, heads, d, g // 4) if channel else (pages, heads, g, d // 4), torch.uint8),
        "k_params": ((pages, heads, d, 2) if channel else (pages, heads, g, d // c, 2), dtype),
        "v_codes": ((pages, heads, g, d // 4), torch.uint8),
        "v_params": ((pages, heads, g, d // c, 2), dtype),
        "dup_mask": ((pages, heads, g // MASK_WORD_BITS), torch.int32),
        "block_table": ((batch, max_blocks), torch.int32),
        "num_sealed": ((batch,), torch.int32),
        "seq_len": ((batch,), torch.int32),
        "tail_k": ((batch, heads, tail_cap, d), dtype),
        "tail_v": ((batch, heads, tail_cap, d), dtype),
        "retained_pos": ((batch, heads, slots), torch.int32),
        "retained_k": ((batch, heads, slots, d), dtype),
        "retained_v": ((batch, heads, slots, d), dtype),
    }
    for name in CACHE_TENSOR_NAMES:
        shape, want = expected[name]
        check_shape_dtype_device(tensors[name], name, shape, want, device)
        check_aligned(tensors[name], name)
    geometry = KvGeometry(batch=batch, numKvHeads=heads, headDim=d, groupSize=g, numPages=pages,
                          maxBlocksPerSeq=max_blocks, tailCapacity=tail_cap, retainedCapacity=slots,
                          keyAxis=KEY_AXIS_IDS[axis.value], dtype=DTYPE_IDS[dtype])
    return KvCacheView(geometry, *(tensors[name].data_ptr() for name in CACHE_TENSOR_NAMES))


def cache_tensors(paged: Any) -> dict[str, torch.Tensor]:
    """The cache tensors of a logquant_trt.reference.paged.PagedLayer-shaped object, by name."""
    return {name: getattr(paged, name) for name in CACHE_TENSOR_NAMES}


def cache_view_from_paged(paged: Any) -> KvCacheView:
    """make_cache_view for a PagedLayer-shaped object (its .config gives G and the key axis)."""
    return make_cache_view(cache_tensors(paged), paged.config.group_size, paged.config.key_axis)


def policy_params(config: LogQuantConfig, layer_idx: int) -> PolicyParams:
    """The PolicyParams of layer `layer_idx` under `config`."""
    regions = config.retained_regions()
    return PolicyParams(policy=POLICY_IDS[config.policy.value], residual=config.residual, window=config.window,
                        sinkTokens=config.sink_tokens, poolSize=config.pool_size_for_layer(layer_idx),
                        poolSlots=regions["pool"], extraPoolSize=regions["extra"])
