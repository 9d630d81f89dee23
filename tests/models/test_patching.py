# SPDX-License-Identifier: Apache-2.0
"""The patched model (LogQuantAttention op) against the unpatched model with LogQuantCache."""

import copy

import pytest
import torch
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

from logquant_trt.config import LogQuantConfig
from logquant_trt.hf import LogQuantCache
from logquant_trt.models.paged_lm import PagedCausalLM, greedy_generate, prefill_inputs
from logquant_trt.models.patching import patch_model

TINY = dict(hidden_size=256, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=64, vocab_size=300)
FAMILIES = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
            "mistral": (MistralConfig, MistralForCausalLM)}
CONFIG = LogQuantConfig(policy="logquant_ott", group_size=32, residual=32, window=32, pool_skip_layers=1,
                        dtype="float32")


def tiny(family: str, **overrides: int) -> torch.nn.Module:
    torch.manual_seed(0)
    config_cls, model_cls = FAMILIES[family]
    return model_cls(config_cls(**{**TINY, **overrides})).eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_logquant_cache_step_by_step(family: str) -> None:
    model = tiny(family)
    patched = PagedCausalLM(copy.deepcopy(model), CONFIG)
    prompt = torch.randint(0, 300, (1, 40), generator=torch.Generator().manual_seed(1))
    hf_cache, cache = LogQuantCache(CONFIG), patched.empty_cache(1, 80)
    ids, (positions, lengths) = prompt, prefill_inputs(prompt)
    with torch.no_grad():
        for step in range(30):  # crosses block seals and LogQuant's first thinning (G = W = 32)
            expected = model(ids, past_key_values=hf_cache, use_cache=True).logits
            got, cache = patched.step(ids, positions, lengths, cache)
            # Same cache contents; only the softmax differs (SDPA over a dense view vs the reference's
            # three-segment fp32 softmax), a few float32 ulps of the logits.
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4, msg=f"{family} step {step}")
            ids = expected[:, -1:].argmax(-1)
            positions = torch.full((1, 1), 40 + step, dtype=torch.int64)


def test_generates_the_same_tokens_on_smollm2() -> None:
    from logquant_trt.models.embedded import load_embedded_model

    model, tokenizer = load_embedded_model()
    config = LogQuantConfig(policy="logquant_ott", group_size=32, window=32, dtype="float32")
    # 60 prompt tokens + 10 new: LogQuant (W = G = 32) seals its first block at 65 tokens. Thinning is covered by
    # the tiny models above; more tokens here cost ~2 s each on CPU.
    text = "Red, green and blue are the primary colors of light; mixing them gives every other color. " * 4
    prompt = tokenizer(text, return_tensors="pt").input_ids[:, :60]
    assert prompt.shape[1] == 60
    expected = model.generate(prompt, attention_mask=torch.ones_like(prompt), past_key_values=LogQuantCache(config),
                              max_new_tokens=10, do_sample=False)
    got = greedy_generate(PagedCausalLM(model, config), prompt, 10)
    assert torch.equal(got, expected), tokenizer.batch_decode([got[0], expected[0]])


def test_unsupported_model_type_is_refused_by_name() -> None:
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=64, n_head=2, vocab_size=50))
    with pytest.raises(ValueError, match=r"model_type='gpt2'.*llama, qwen2, mistral"):
        patch_model(model, CONFIG)


def test_unsupported_head_dim_is_refused_by_value() -> None:
    with pytest.raises(ValueError, match="head_dim=32"):
        patch_model(tiny("llama", head_dim=32), CONFIG)


def test_unpatched_forward_without_cache_tensors_is_refused() -> None:
    model = tiny("llama")
    patch_model(model, CONFIG)
    with pytest.raises(RuntimeError, match="only inside PagedCausalLM"):
        model(torch.zeros(1, 3, dtype=torch.int64))
