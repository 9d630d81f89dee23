# SPDX-License-Identifier: Apache-2.0
"""The one-forward simulation equals feeding tokens one by one through LogQuantCache."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from logquant_trt.config import LogQuantConfig
from logquant_trt.eval.simulate import simulate_policy
from logquant_trt.hf import LogQuantCache


@pytest.mark.parametrize("policy", ["fp16", "kivi", "logquant", "ott", "logquant_ott"])
def test_simulation_equals_token_by_token_decode(policy: str) -> None:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=256, intermediate_size=256, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                                         vocab_size=300)).eval()
    ids = torch.randint(0, 300, (1, 260), generator=torch.Generator().manual_seed(1))
    config = LogQuantConfig(policy=policy, group_size=32, residual=32, window=32, pool_skip_layers=1,
                            dtype="float32", sink_tokens=1 if policy == "kivi" else 0)
    prefill = 45
    with torch.no_grad():
        with simulate_policy(model, config, prefill) as states:
            simulated = model(ids).logits
        cache = LogQuantCache(config)
        stepped = [model(ids[:, :prefill], past_key_values=cache).logits]
        for t in range(prefill, ids.shape[1]):
            stepped.append(model(ids[:, t:t + 1], past_key_values=cache).logits)
    # fp32 on both sides; only the summation order of attention differs.
    torch.testing.assert_close(simulated, torch.cat(stepped, dim=1), atol=2e-5, rtol=1e-5)
    assert states[2].nbytes() == cache.layers[2].state.nbytes()
    assert model.config._attn_implementation != "logquant_simulated", "the context restores attention"
