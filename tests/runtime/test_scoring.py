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


def test_check_runtime_agrees_with_the_reference_on_the_cpu(tiny_hf, small_config) -> None:
    from logquant_trt.eval.runtime_check import check_policies

    ids = torch.randint(0, 300, (1, 150), generator=torch.Generator().manual_seed(2))
    checks = check_policies(tiny_hf("llama"), ids, 40, small_config("kivi"), device="cpu", dtype=torch.float32,
                            policies=("fp16", "logquant_ott"))
    assert [c.policy for c in checks] == ["fp16", "logquant_ott"]
    # fp32 on both sides: logits agree to 2e-4 (above), so log-probs move by < 1e-3 and perplexity by < 1e-5;
    # a near-tie may still flip one of the 110 argmaxes.
    for check in checks:
        assert abs(check.relative_diff) < 1e-5 and check.max_abs_logprob_diff < 1e-3, check
        assert check.top1_agreement > 0.98, check
