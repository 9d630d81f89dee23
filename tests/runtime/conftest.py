# SPDX-License-Identifier: Apache-2.0
"""Tiny random Llama-family models for the runtime tests (seconds on a CPU)."""

from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from logquant_trt.config import LogQuantConfig

TINY = dict(hidden_size=256, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=64, vocab_size=300, max_position_embeddings=512)
FAMILIES = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
            "mistral": (MistralConfig, MistralForCausalLM)}
EOS = 299


def _tiny_hf(family: str = "llama", dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    config_cls, model_cls = FAMILIES[family]
    model = model_cls(config_cls(**TINY)).eval()
    if family == "qwen2":  # random q/k/v biases, so the fused bias path is exercised
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                torch.nn.init.normal_(proj.bias, std=0.5)
    return model.to(dtype)


def _small_config(policy: str, dtype: str = "float32") -> LogQuantConfig:
    return LogQuantConfig(policy=policy, group_size=32, residual=32, window=32, pool_skip_layers=1, dtype=dtype)


@pytest.fixture(scope="module")
def tokenizer() -> SimpleNamespace:
    """The engine reads only eos_token_id from a tokenizer."""
    return SimpleNamespace(eos_token_id=EOS)


@pytest.fixture(scope="session")
def tiny_hf():
    """tiny_hf(family="llama", dtype=float32): a seeded random HF model (llama, qwen2 or mistral)."""
    return _tiny_hf


@pytest.fixture(scope="session")
def small_config():
    """small_config(policy, dtype="float32"): G=32, R=W=32, pool from layer 1."""
    return _small_config
