# SPDX-License-Identifier: Apache-2.0
"""KV cache backends of the runtime, chosen by name; each is imported only when used."""

from __future__ import annotations

import enum
import importlib

import torch

from logquant_trt.config import LogQuantConfig
from logquant_trt.runtime.cache.base import KVCache


class CacheBackend(str, enum.Enum):
    """Values are qualified class paths."""

    PAGED = "logquant_trt.runtime.cache.paged:PagedKVCache"  # 2-bit pages, CUDA kernels
    DENSE = "logquant_trt.runtime.cache.dense:DenseKVCache"  # fp16 baseline, FlashAttention
    REFERENCE = "logquant_trt.runtime.cache.reference:ReferenceKVCache"  # PyTorch reference, any device

    @classmethod
    def parse(cls, name: "CacheBackend | str") -> "CacheBackend":
        if isinstance(name, cls):
            return name
        by_name = {m.name.lower(): m for m in cls}
        if str(name).lower() not in by_name:
            raise ValueError(f"cache backend {name!r} is unknown; choose one of {sorted(by_name)}")
        return by_name[str(name).lower()]

    def load(self) -> type[KVCache]:
        module, cls = self.value.split(":")
        return getattr(importlib.import_module(module), cls)


def default_backend(config: LogQuantConfig, device: torch.device) -> CacheBackend:
    """The kernels on CUDA (FlashAttention for the fp16 policy); the reference elsewhere."""
    if device.type != "cuda":
        return CacheBackend.REFERENCE
    return CacheBackend.PAGED if config.quantized else CacheBackend.DENSE


__all__ = ["CacheBackend", "KVCache", "default_backend"]
