# SPDX-License-Identifier: Apache-2.0
"""Shared pytest setup: the `gpu` marker skips cleanly on machines without CUDA, and tiny random
Llama-family models for the tests that run one (seconds on a CPU)."""

import pytest
import torch

from logquant_trt.config import LogQuantConfig

TINY = dict(hidden_size=256, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=64, vocab_size=300, max_position_embeddings=512)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA device (and, for ops, the compiled kernels)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _tiny_hf(family: str = "llama", dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    # Imported here: most test folders never build a model and need not pay for importing transformers.
    from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM)

    families = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
                "mistral": (MistralConfig, MistralForCausalLM)}
    torch.manual_seed(0)
    config_cls, model_cls = families[family]
    model = model_cls(config_cls(**TINY)).eval()
    if family == "qwen2":  # random q/k/v biases, so the fused bias path is exercised
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                torch.nn.init.normal_(proj.bias, std=0.5)
    return model.to(dtype)


def _small_config(policy: str, dtype: str = "float32") -> LogQuantConfig:
    return LogQuantConfig(policy=policy, group_size=32, residual=32, window=32, pool_skip_layers=1, dtype=dtype)


@pytest.fixture(scope="session")
def tiny_hf():
    """tiny_hf(family="llama", dtype=float32): a seeded random HF model (llama, qwen2 or mistral)."""
    return _tiny_hf


@pytest.fixture(scope="session")
def small_config():
    """small_config(policy, dtype="float32"): G=32, R=W=32, pool from layer 1."""
    return _small_config
