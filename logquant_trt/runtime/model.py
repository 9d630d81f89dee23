# SPDX-License-Identifier: Apache-2.0
"""A lean Llama-family decoder for the runtime: weights fused for decode, attention left to the cache.

The HF modules stay the model's definition (we load their weights and their RoPE tables); this
class only reorganizes the forward pass for serving: Q/K/V and gate/up projections are each one
GEMM, RoPE comes from a precomputed table gathered by position (no host values, so a decode step
can be captured in a CUDA graph), and each layer hands (q, k, v) to a caller-supplied attention
function that owns the KV cache.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from logquant_trt.models.checkpoint import SUPPORTED_MODEL_TYPES, check_model_type, head_dim_of

# model_type -> whether q/k/v projections carry a bias. Every entry is a Llama-shaped decoder.
QKV_BIAS = {"llama": False, "mistral": False, "qwen2": True}
assert sorted(QKV_BIAS) == sorted(SUPPORTED_MODEL_TYPES)

# attend(layer, q [B, Hq, n, D], k [B, H, n, D], v [B, H, n, D]) -> [B, Hq, n, D], all post-RoPE.
AttendFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class DecoderShape:
    """The dimensions the runtime sizes caches and benchmarks by."""

    num_layers: int
    hidden_size: int
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_positions: int

    @classmethod
    def from_hf_config(cls, config: Any) -> "DecoderShape":
        check_model_type(config)
        return cls(config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
                   config.num_key_value_heads, head_dim_of(config), config.intermediate_size, config.vocab_size,
                   config.max_position_embeddings)


@dataclasses.dataclass
class LayerWeights:
    input_norm: torch.Tensor  # [hidden]
    qkv: torch.Tensor  # [(Hq + 2H) * D, hidden]
    qkv_bias: torch.Tensor | None
    o_proj: torch.Tensor  # [hidden, Hq * D]
    post_norm: torch.Tensor
    gate_up: torch.Tensor  # [2 * intermediate, hidden]
    down: torch.Tensor  # [hidden, intermediate]


class DecoderModel:
    """Embedding -> layers (RMSNorm, fused QKV, RoPE, attend, O, RMSNorm, SwiGLU) -> norm -> LM head."""

    def __init__(self, shape: DecoderShape, embed: torch.Tensor, layers: list[LayerWeights], norm: torch.Tensor,
                 lm_head: torch.Tensor, rope_cos: torch.Tensor, rope_sin: torch.Tensor, eps: float) -> None:
        self.shape, self.embed, self.layers, self.norm, self.lm_head = shape, embed, layers, norm, lm_head
        self.rope_cos, self.rope_sin, self.eps = rope_cos, rope_sin, eps  # [max_positions, D] each

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.dtype

    @property
    def device(self) -> torch.device:
        return self.embed.device

    def weight_bytes(self) -> int:
        """Bytes one forward pass reads from weights (the tied LM head counted once)."""
        # Not dataclasses.astuple: it deep-copies every field, i.e. every weight, on the device.
        tensors = [self.embed, self.norm, *(t for layer in self.layers for f in dataclasses.fields(layer)
                                            if (t := getattr(layer, f.name)) is not None)]
        if self.lm_head.data_ptr() != self.embed.data_ptr():
            tensors.append(self.lm_head)
        return sum(t.numel() * t.element_size() for t in tensors)

    # -- construction -----------------------------------------------------------------------------------------

    @classmethod
    @torch.no_grad()
    def from_hf(cls, model: torch.nn.Module, dtype: torch.dtype | None = None,
                device: torch.device | str | None = None) -> "DecoderModel":
        """Take the weights of a loaded HF causal LM (Llama, Mistral, Qwen2)."""
        config = model.config
        shape = DecoderShape.from_hf_config(config)
        dtype = dtype or next(model.parameters()).dtype
        device = torch.device(device) if device is not None else next(model.parameters()).device

        def take(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(device=device, dtype=dtype).contiguous()

        layers = []
        for block in model.model.layers:
            attn, mlp = block.self_attn, block.mlp
            bias = None
            if QKV_BIAS[config.model_type]:
                bias = take(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
            layers.append(LayerWeights(
                take(block.input_layernorm.weight),
                take(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])), bias,
                take(attn.o_proj.weight), take(block.post_attention_layernorm.weight),
                take(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])), take(mlp.down_proj.weight)))
        embed = take(model.model.embed_tokens.weight)
        tied = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        lm_head = embed if tied else take(model.lm_head.weight)
        cos, sin = _rope_tables(model.model.rotary_emb, shape, device, dtype)
        return cls(shape, embed, layers, take(model.model.norm.weight), lm_head, cos, sin, config.rms_norm_eps)

    @classmethod
    @torch.no_grad()
    def random(cls, config: Any, dtype: torch.dtype, device: torch.device | str, seed: int = 0,
               max_positions: int | None = None) -> "DecoderModel":
        """Random weights of an HF config's architecture, drawn on `device` (speed benchmarks only)."""
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        shape = DecoderShape.from_hf_config(config)
        if max_positions is not None:
            shape = dataclasses.replace(shape, max_positions=max_positions)
        generator = torch.Generator(device=device).manual_seed(seed)

        def normal(*size: int, std: float = 0.02) -> torch.Tensor:
            return torch.empty(size, dtype=dtype, device=device).normal_(0, std, generator=generator)

        def ones(n: int) -> torch.Tensor:
            return torch.ones(n, dtype=dtype, device=device)

        s = shape
        qkv_rows = (s.num_q_heads + 2 * s.num_kv_heads) * s.head_dim
        layers = [LayerWeights(ones(s.hidden_size), normal(qkv_rows, s.hidden_size),
                               normal(qkv_rows) if QKV_BIAS[config.model_type] else None,
                               normal(s.hidden_size, s.num_q_heads * s.head_dim), ones(s.hidden_size),
                               normal(2 * s.intermediate_size, s.hidden_size),
                               normal(s.hidden_size, s.intermediate_size))
                  for _ in range(s.num_layers)]
        embed = normal(s.vocab_size, s.hidden_size)
        lm_head = embed if getattr(config, "tie_word_embeddings", False) else normal(s.vocab_size, s.hidden_size)
        cos, sin = _rope_tables(LlamaRotaryEmbedding(config), shape, device, dtype)
        return cls(shape, embed, layers, ones(s.hidden_size), lm_head, cos, sin, config.rms_norm_eps)

    # -- forward ----------------------------------------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, attend: AttendFn,
                last_only: bool = True) -> torch.Tensor:
        """Logits of [B, n] tokens at positions [B, n] (int64, device tensors).

        attend is called once per layer with post-RoPE q/k/v; it writes k/v into its cache and returns
        the attention output. Returns logits [B, vocab] of the last token (last_only) or [B, n, vocab].
        """
        s = self.shape
        batch, n = input_ids.shape
        hidden = F.embedding(input_ids, self.embed)
        cos, sin = self.rope_cos[positions].unsqueeze(1), self.rope_sin[positions].unsqueeze(1)  # [B, 1, n, D]
        q_width, kv_width = s.num_q_heads * s.head_dim, s.num_kv_heads * s.head_dim
        for index, layer in enumerate(self.layers):
            x = self._rms_norm(hidden, layer.input_norm)
            qkv = F.linear(x, layer.qkv, layer.qkv_bias)
            q, k, v = qkv.split((q_width, kv_width, kv_width), dim=-1)
            q = _apply_rope(q.view(batch, n, s.num_q_heads, s.head_dim).transpose(1, 2), cos, sin)
            k = _apply_rope(k.view(batch, n, s.num_kv_heads, s.head_dim).transpose(1, 2), cos, sin)
            v = v.view(batch, n, s.num_kv_heads, s.head_dim).transpose(1, 2)
            out = attend(index, q.contiguous(), k.contiguous(), v.contiguous())
            hidden = hidden + F.linear(out.transpose(1, 2).reshape(batch, n, q_width), layer.o_proj)
            x = self._rms_norm(hidden, layer.post_norm)
            gate, up = F.linear(x, layer.gate_up).chunk(2, dim=-1)
            hidden = hidden + F.linear(F.silu(gate) * up, layer.down)
        if last_only:
            hidden = hidden[:, -1]
        return F.linear(self._rms_norm(hidden, self.norm), self.lm_head)

    def _rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            # One fused kernel where HF's form is eight: a decode step runs 2 per layer, each a few
            # microseconds of launch-bound work. It applies the weight in fp32 (<= 1 ulp from HF's).
            return F.rms_norm(x, (x.shape[-1],), weight, self.eps)
        # As HF's LlamaRMSNorm: statistics in fp32, scale applied in the activation dtype.
        x32 = x.float()
        return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _rope_tables(rotary: torch.nn.Module, shape: DecoderShape, device: torch.device | str,
                 dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [max_positions, D] from the HF rotary module (so every rope_type it knows is honoured)."""
    rotary = rotary.to(device)
    positions = torch.arange(shape.max_positions, device=device)[None]
    probe = torch.empty(0, dtype=dtype, device=device)
    cos, sin = rotary(probe, positions)
    return cos[0].to(dtype).contiguous(), sin[0].to(dtype).contiguous()
