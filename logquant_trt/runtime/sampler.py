# SPDX-License-Identifier: Apache-2.0
"""Next-token choice per row: greedy, or temperature / top-k / top-p sampling from a per-request generator.

Each request owns its torch.Generator (seeded from SamplingParams.seed), so what it samples depends on
its own logits and seed only, never on the rows it shares a batch with.
"""

from __future__ import annotations

import torch

from logquant_trt.runtime.requests import SamplingParams


def new_generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    if params.greedy:
        return None
    generator = torch.Generator(device=device)
    if params.seed is None:
        generator.seed()
    else:
        generator.manual_seed(params.seed)
    return generator


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """One token id (a 0-d int64 tensor on logits' device) from logits [vocab]."""
    if params.greedy:
        return logits.argmax()
    scores = logits.float() / params.temperature
    if params.top_k and params.top_k < scores.numel():
        threshold = scores.topk(params.top_k).values[-1]
        scores = scores.masked_fill(scores < threshold, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = scores.sort(descending=True)
        sorted_probs = sorted_scores.softmax(-1)
        # Keep every token whose preceding mass is below top_p: the most likely one always stays.
        drop = (sorted_probs.cumsum(-1) - sorted_probs) >= params.top_p
        scores = scores.scatter(0, order[drop], float("-inf"))
    return torch.multinomial(scores.softmax(-1), 1, generator=generator)[0]


def sample_rows(logits: torch.Tensor, rows: list[int], params: list[SamplingParams],
                generators: list[torch.Generator | None]) -> list[int]:
    """Token ids for `rows` of logits [rows_total, vocab], one host sync for the whole batch."""
    if all(p.greedy for p in params):
        picked = logits[rows].argmax(-1)
    else:
        picked = torch.stack([sample(logits[r], p, g) for r, p, g in zip(rows, params, generators)])
    return picked.tolist()
