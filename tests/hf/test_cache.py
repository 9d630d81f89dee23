# SPDX-License-Identifier: Apache-2.0
"""LogQuantCache inside HF generate, on tiny random Llama-family models and SmolLM2."""

import pytest
import torch
from transformers import DynamicCache

from logquant_trt.config import LogQuantConfig, Policy
from logquant_trt.hf import LogQuantCache

POLICIES = [p.value for p in Policy]


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
@pytest.mark.parametrize("policy", POLICIES)
def test_generate_runs_with_every_policy(tiny_hf, small_config, family: str, policy: str) -> None:
    model = tiny_hf(family)
    prompt = torch.randint(0, 300, (2, 90), generator=torch.Generator().manual_seed(1))
    cache = LogQuantCache(small_config(policy))
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), past_key_values=cache,
                         max_new_tokens=40, min_new_tokens=40, do_sample=False)
    assert out.shape == (2, 130)
    assert cache.get_seq_length() == 129  # the last token is never fed back
    state = cache.layers[2].state
    if policy == "fp16":
        assert state.num_sealed == 0
    else:
        assert state.num_sealed >= 2, "a 129-token cache with R/W = 32 must have sealed blocks"
        assert cache.nbytes()["codes"] > 0


def test_fp16_policy_matches_the_dynamic_cache_exactly(tiny_hf, small_config) -> None:
    model = tiny_hf("llama")
    prompt = torch.randint(0, 300, (1, 50), generator=torch.Generator().manual_seed(2))
    expected = model.generate(prompt, past_key_values=DynamicCache(), max_new_tokens=30, do_sample=False)
    got = model.generate(prompt, past_key_values=LogQuantCache(small_config("fp16")), max_new_tokens=30,
                         do_sample=False)
    assert torch.equal(got, expected)


def test_quantized_cache_changes_logits_but_not_the_prefill(tiny_hf, small_config) -> None:
    model = tiny_hf("llama")
    ids = torch.randint(0, 300, (1, 120), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        dense = model(ids).logits
        cache = LogQuantCache(small_config("kivi"))
        prefill = model(ids[:, :100], past_key_values=cache).logits
        step = model(ids[:, 100:101], past_key_values=cache).logits
    torch.testing.assert_close(prefill, dense[:, :100], atol=1e-5, rtol=1e-5)  # prefill reads full precision
    assert (step[0, -1] - dense[0, 100]).abs().max() > 1e-4, "decode must read the 2-bit blocks"


def test_rejects_a_dtype_mismatch_and_beam_search(tiny_hf) -> None:
    model = tiny_hf("llama")
    prompt = torch.randint(0, 300, (1, 10))
    with pytest.raises(TypeError, match="float16"):
        model.generate(prompt, past_key_values=LogQuantCache(LogQuantConfig(policy="kivi")), max_new_tokens=2)
    with pytest.raises(TypeError, match="LogQuantConfig"):
        LogQuantCache({"policy": "kivi"})
