# SPDX-License-Identifier: Apache-2.0
"""Next-token metrics of a policy against the fp16 cache."""

from __future__ import annotations

import dataclasses
import math

import torch


@dataclasses.dataclass(frozen=True)
class TokenMetrics:
    perplexity: float
    kl_divergence: float  # mean KL(p_fp16 || p_policy), nats per token
    top1_agreement: float  # argmax equal to the fp16 cache's argmax


def target_logprobs(logprobs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) [...] from logprobs [..., V] (a log-softmax) and the targets [...] they predict."""
    return logprobs.gather(-1, targets[..., None]).squeeze(-1)


def perplexity_of(token_logprobs: torch.Tensor) -> float:
    """exp(mean NLL) of the log-probabilities the targets got (see target_logprobs)."""
    return math.exp(-token_logprobs.mean().item())


def score_logits(logits: torch.Tensor, targets: torch.Tensor, reference_logprobs: torch.Tensor
                 ) -> TokenMetrics:
    """logits [N, V] predicting targets [N]; reference_logprobs [N, V] of the fp16 cache."""
    logprobs = logits.float().log_softmax(-1)
    kl = (reference_logprobs.exp() * (reference_logprobs - logprobs)).sum(-1).mean().item()
    agree = (logprobs.argmax(-1) == reference_logprobs.argmax(-1)).float().mean().item()
    return TokenMetrics(perplexity=perplexity_of(target_logprobs(logprobs, targets)), kl_divergence=kl,
                        top1_agreement=agree)


def greedy_agreement(tokens: torch.Tensor, reference: torch.Tensor) -> tuple[float, int]:
    """(share of positions equal, length of the common prefix) of two greedy continuations."""
    equal = (tokens == reference).tolist()
    prefix = next((i for i, same in enumerate(equal) if not same), len(equal))
    return sum(equal) / len(equal), prefix
