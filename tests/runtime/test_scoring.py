# SPDX-License-Identifier: Apache-2.0
"""Teacher-forced scoring through the runtime equals the eval's exact decode simulation."""

import pytest
import torch

from logquant_trt.eval.simulate import simulate_policy
from logquant_trt.runtime.model import DecoderModel
from logquant_trt.runtime.scoring import perplexity, teacher_forced_logits


@pytest.mark.parametrize("policy", ["kivi", "logquant_ott"])
def test_runtime_logits_equal_the_simulation(tiny_hf, small_config, policy) -> None:
    hf = tiny_hf("llama")
    config = small_config(policy)
    ids = torch.randint(0, 300, (1, 150), generator=torch.Generator().manual_seed(2))
    prefill = 40
    ours = teacher_forced_logits(DecoderModel.from_hf(hf), config, ids, prefill)
    with torch.no_grad(), simulate_policy(hf, config, prefill):
        reference = hf(ids).logits[:, prefill - 1:-1]
    torch.testing.assert_close(ours, reference, atol=2e-4, rtol=1e-4)
    assert perplexity(ours, ids[:, prefill:]) == pytest.approx(perplexity(reference, ids[:, prefill:]), rel=1e-5)
