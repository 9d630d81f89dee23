# SPDX-License-Identifier: Apache-2.0
"""The one perplexity definition (metrics) equals exp(cross-entropy), for flat and batched scores."""

import math

import pytest
import torch

from logquant_trt.eval.metrics import perplexity_of, score_logits, target_logprobs


def exp_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return math.exp(torch.nn.functional.cross_entropy(logits.flatten(0, -2), targets.flatten()).item())


def test_perplexity_is_exp_cross_entropy() -> None:
    gen = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(2, 17, 97, generator=gen), torch.randint(0, 97, (2, 17), generator=gen)
    # fp32 means, summed in another order than cross_entropy's reduction: they agree to a few ulps.
    batched = perplexity_of(target_logprobs(logits.log_softmax(-1), targets))
    assert batched == pytest.approx(exp_cross_entropy(logits, targets), rel=1e-6)
    flat = score_logits(logits[0], targets[0], logits[0].log_softmax(-1))
    assert flat.perplexity == pytest.approx(exp_cross_entropy(logits[0], targets[0]), rel=1e-6)
    assert flat.kl_divergence == pytest.approx(0.0, abs=1e-6) and flat.top1_agreement == 1.0
