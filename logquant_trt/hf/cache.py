# SPDX-License-Identifier: Apache-2.0
"""`LogQuantCache`: the reference mixed 2-bit cache as a transformers 5 Cache.

    cache = LogQuantCache(LogQuantConfig(policy="logquant_ott", dtype="float32"))
    model.generate(**inputs, past_key_values=cache)

Each layer stores its tokens in the format of docs/kv_format.md and hands the
model's own attention one dense view of the cache: full precision where a
full-precision copy exists, dequantized elsewhere. Keys arrive post-RoPE, so this
is the same softmax as the fused kernel computes over the three segments.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from logquant_trt.config import LogQuantConfig
from logquant_trt.reference.layer_state import LayerKVState


class LogQuantLayer(CacheLayerMixin):
    is_compileable = False
    is_sliding = False

    def __init__(self, config: LogQuantConfig, layer_idx: int) -> None:
        super().__init__()
        self.state = LayerKVState(config, layer_idx)

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[2]
        self.state.append(key_states, value_states)
        keys, values = self.state.effective_kv()
        if self.state.sealed_length > self.state.length - new:
            # Tokens written by this call are read in full precision even when the
            # policy sealed them at once (prefill, or a window shorter than the chunk).
            keys, values = keys.clone(), values.clone()
            keys[:, :, -new:], values[:, :, -new:] = key_states, value_states
        return keys, values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_seq_length(self) -> int:
        return self.state.length

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.state = LayerKVState(self.state.config, self.state.layer_idx)
        self.is_initialized = False

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise NotImplementedError("LogQuantCache does not support beam search (num_beams > 1): "
                                  "its retention state is per sequence and cannot be reordered")

    def offload(self) -> None:
        raise NotImplementedError("LogQuantCache does not support offloading")


class LogQuantCache(Cache):
    """A mixed 2-bit / full-precision KV cache for Llama-family models (GQA, RoPE)."""

    def __init__(self, config: LogQuantConfig) -> None:
        if not isinstance(config, LogQuantConfig):
            raise TypeError(f"config must be a LogQuantConfig, got {type(config).__name__}")
        self.config = config
        # Layers are created on first use; they are appended in order, so the
        # current length is the new layer's index.
        super().__init__(layer_class_to_replicate=lambda: LogQuantLayer(config, len(self.layers)))

    def nbytes(self, element_bytes: int = 2) -> dict[str, int]:
        """Storage by component, summed over layers (docs/kv_format.md §7)."""
        total: dict[str, int] = {}
        for layer in self.layers:
            for key, value in layer.state.nbytes(element_bytes).items():
                total[key] = total.get(key, 0) + value
        return total
