# SPDX-License-Identifier: Apache-2.0
"""DecoderModel (fused weights, RoPE table) computes the HF model's logits."""

import pytest
import torch
import torch.nn.functional as F

from logquant_trt.runtime.model import DecoderModel


def causal(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_logits_equal_hf(family: str, tiny_hf) -> None:
    hf = tiny_hf(family)
    model = DecoderModel.from_hf(hf)
    ids = torch.randint(0, 300, (2, 37), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(37).expand(2, 37)
    with torch.no_grad():
        ours = model.forward(ids, positions, causal, last_only=False)
        theirs = hf(ids).logits
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-5)


def test_weight_bytes_counts_a_tied_head_once(tiny_hf) -> None:
    hf = tiny_hf("llama")
    model = DecoderModel.from_hf(hf)
    params = sum(p.numel() for p in hf.parameters()) * 4  # HF counts the tied head once too
    assert model.weight_bytes() == params


def test_unsupported_model_type_is_named(tiny_hf) -> None:
    hf = tiny_hf("llama")
    hf.config.model_type = "gpt2"
    with pytest.raises(ValueError, match="model_type='gpt2'"):
        DecoderModel.from_hf(hf)


def test_random_weights_follow_the_config(tiny_hf) -> None:
    hf = tiny_hf("qwen2")
    model = DecoderModel.random(hf.config, torch.float32, "cpu", max_positions=128)
    assert model.shape.max_positions == 128 and model.rope_cos.shape == (128, 64)
    assert model.layers[0].qkv_bias is not None and model.layers[0].qkv.shape == ((4 + 2 * 2) * 64, 256)
