# SPDX-License-Identifier: Apache-2.0
"""A patched causal LM as a pure function of (tokens, positions, cache) -> (logits, new cache).

This is the graph that logquant_trt.export writes to ONNX and that TensorRT runs: the cache is
one set of plugin tensors per layer (docs/kv_format.md §4), passed in and returned, and the caller
owns it (allocation, block table, positions). `greedy_generate` drives it in eager PyTorch.
"""

from __future__ import annotations

import torch
from torch import nn

from logquant_trt.config import LogQuantConfig
from logquant_trt.models.patching import AttentionStep, patch_model
from logquant_trt.ops.logquant_attention import CACHE_INPUTS, CACHE_OUTPUTS, LayerCache


class PagedCausalLM(nn.Module):
    """forward(input_ids, position_ids, context_lengths, *cache) -> (logits, *new_cache).

    input_ids, position_ids: int64 [B, n]; context_lengths: int32 [B] (prefill only: valid tokens
    of each row); cache: CACHE_INPUTS of layer 0, then of layer 1, ...; new_cache: CACHE_OUTPUTS per
    layer in the same order (block_table is read only). n > 1 is a prefill of an empty cache, n == 1
    a decode step.
    """

    def __init__(self, model: nn.Module, config: LogQuantConfig) -> None:
        super().__init__()
        self.config = config
        self.attention = patch_model(model, config)
        self.model = model
        hf = model.config
        self.num_kv_heads = hf.num_key_value_heads
        self.head_dim = self.attention[0].head_dim

    @property
    def num_layers(self) -> int:
        return len(self.attention)

    def empty_cache(self, batch: int, max_tokens: int, device: torch.device | str = "cpu") -> list[LayerCache]:
        """A zeroed cache for `batch` sequences of up to max_tokens each, identity block tables."""
        return LayerCache.empty_layers(self.config, self.num_layers, batch, self.num_kv_heads, self.head_dim,
                                       max_tokens, device)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, context_lengths: torch.Tensor,
                *cache: torch.Tensor) -> tuple[torch.Tensor, ...]:
        width = len(CACHE_INPUTS)
        if len(cache) != width * self.num_layers:
            raise ValueError(f"got {len(cache)} cache tensors, expected {width} x {self.num_layers} layers")
        for i, module in enumerate(self.attention):
            module.step = AttentionStep(cache[i * width:(i + 1) * width], context_lengths)
        try:
            logits = self.model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
            new_cache = [t for module in self.attention for t in module.step.outputs]
        finally:
            for module in self.attention:
                module.step = None
        return (logits, *new_cache)

    def step(self, input_ids: torch.Tensor, position_ids: torch.Tensor, context_lengths: torch.Tensor,
             cache: list[LayerCache]) -> tuple[torch.Tensor, list[LayerCache]]:
        """forward() with the cache as LayerCache objects."""
        outputs = self(input_ids, position_ids, context_lengths, *(t for layer in cache for t in layer.tensors))
        width = len(CACHE_OUTPUTS)
        return outputs[0], [layer.updated(outputs[1 + i * width:1 + (i + 1) * width])
                            for i, layer in enumerate(cache)]


def prefill_inputs(prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """position_ids and context_lengths of a prefill of equal-length prompts [B, n]."""
    batch, n = prompt.shape
    positions = torch.arange(n, dtype=torch.int64).expand(batch, n)
    return positions, torch.full((batch,), n, dtype=torch.int32)


@torch.no_grad()
def greedy_generate(lm: PagedCausalLM, prompt: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Greedy decoding of [B, n] prompts (n > 1): returns [B, n + max_new_tokens] token ids."""
    batch, n = prompt.shape
    cache = lm.empty_cache(batch, n + max_new_tokens)
    positions, lengths = prefill_inputs(prompt)
    logits, cache = lm.step(prompt, positions, lengths, cache)
    tokens = [prompt, logits[:, -1:].argmax(-1)]
    for i in range(max_new_tokens - 1):
        position = torch.full((batch, 1), n + i, dtype=torch.int64)
        logits, cache = lm.step(tokens[-1], position, lengths, cache)
        tokens.append(logits[:, -1:].argmax(-1))
    return torch.cat(tokens, dim=1)
