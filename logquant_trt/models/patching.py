# SPDX-License-Identifier: Apache-2.0
"""Swap the attention of HF Llama-family models for one that calls `logquant::attention`.

The patched module keeps the model's projections and RoPE and hands q/k/v, post-RoPE in
[B, heads, n, D], to the LogQuantAttention op together with its layer's cache tensors, so the
model exports to ONNX with the plugin node in place of attention (logquant_trt.export). The
cache travels outside HF's Cache API: `PagedCausalLM` sets each module's `step` before a
forward and collects the new cache from it afterwards.
"""

from __future__ import annotations

import dataclasses
import importlib

import torch
from torch import nn

from logquant_trt.config import LogQuantConfig
from logquant_trt.models.checkpoint import SUPPORTED_MODEL_TYPES, check_model_type, head_dim_of
from logquant_trt.ops._cache_view import HEAD_DIMS  # the kernels' and the plugin's (docs/plugin.md, head_dim)
from logquant_trt.ops.logquant_attention import FIELDS, attention, plugin_fields

# model_type -> (module, attention class). All share Llama's projections and rotate_half RoPE.
ATTENTION_CLASSES = {
    "llama": ("transformers.models.llama.modeling_llama", "LlamaAttention"),
    "qwen2": ("transformers.models.qwen2.modeling_qwen2", "Qwen2Attention"),
    "mistral": ("transformers.models.mistral.modeling_mistral", "MistralAttention"),
}
assert tuple(ATTENTION_CLASSES) == SUPPORTED_MODEL_TYPES


@dataclasses.dataclass
class AttentionStep:
    """One forward's cache I/O of one layer: the 13 cache tensors in, the op's 12 updated ones out."""

    cache: tuple[torch.Tensor, ...]
    context_lengths: torch.Tensor
    outputs: tuple[torch.Tensor, ...] | None = None


def check_patchable(hf_config: object, config: LogQuantConfig) -> None:
    """Raise ValueError naming the bad value if the model cannot run LogQuantAttention."""
    model_type = check_model_type(hf_config)
    heads, kv_heads = hf_config.num_attention_heads, hf_config.num_key_value_heads
    head_dim = head_dim_of(hf_config)
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"head_dim={head_dim} of this {model_type} model is not supported by the kernels; "
                         f"supported: {HEAD_DIMS}")
    if heads % kv_heads:
        raise ValueError(f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}")
    config.check_head_dim(head_dim)


class LogQuantAttention(nn.Module):
    """Drop-in for LlamaAttention/Qwen2Attention/MistralAttention running the LogQuantAttention op.

    The op applies causal masking itself (prefill) or reads the whole cache (decode), so the
    model's attention_mask is ignored; it also has no sliding window (Mistral's and Qwen2's
    windowed layers attend over the whole cache).
    """

    def __init__(self, original: nn.Module, config: LogQuantConfig) -> None:
        super().__init__()
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        self._rope = apply_rotary_pos_emb
        self.layer_idx = original.layer_idx
        self.head_dim = original.head_dim
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (original.q_proj, original.k_proj, original.v_proj,
                                                              original.o_proj)
        hf = original.config
        self.cache_dtype = getattr(torch, config.dtype)
        self.fields = plugin_fields(config, self.layer_idx, hf.num_attention_heads, hf.num_key_value_heads,
                                    self.head_dim)
        self.step: AttentionStep | None = None

    def forward(self, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                attention_mask: torch.Tensor | None = None, past_key_values: object = None, **kwargs: object
                ) -> tuple[torch.Tensor, None]:
        if self.step is None:
            raise RuntimeError(f"layer {self.layer_idx}: LogQuantAttention runs only inside PagedCausalLM "
                               "(no cache tensors were handed over)")
        shape = (*hidden_states.shape[:-1], -1, self.head_dim)
        q = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        k = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        q, k = self._rope(q, k, *position_embeddings)
        # The cache dtype is the op's; an fp32 model (CPU validation) casts around it, as the ONNX does.
        outputs = attention(q.to(self.cache_dtype), k.to(self.cache_dtype), v.to(self.cache_dtype),
                            *self.step.cache, self.step.context_lengths, *(self.fields[f] for f in FIELDS))
        self.step.outputs = outputs[1:]
        out = outputs[0].to(hidden_states.dtype).transpose(1, 2).reshape(*hidden_states.shape[:-1], -1)
        return self.o_proj(out), None


def patch_model(model: nn.Module, config: LogQuantConfig) -> list[LogQuantAttention]:
    """Replace every decoder layer's self_attn in place; returns the new modules by layer."""
    check_patchable(model.config, config)
    module_name, class_name = ATTENTION_CLASSES[model.config.model_type]
    expected = getattr(importlib.import_module(module_name), class_name)
    patched = []
    for layer in model.model.layers:
        if not isinstance(layer.self_attn, expected):
            raise ValueError(f"layer {layer.self_attn.layer_idx}: self_attn is {type(layer.self_attn).__name__}, "
                             f"expected {class_name} for model_type={model.config.model_type!r}")
        layer.self_attn = LogQuantAttention(layer.self_attn, config)
        patched.append(layer.self_attn)
    return patched
