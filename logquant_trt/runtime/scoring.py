# SPDX-License-Identifier: Apache-2.0
"""Teacher-forced scoring through the runtime: perplexity exactly as generation computes it.

Each text gets a row: its first `prefill` tokens are prefilled (quantized on write), then every later
token is fed as a decode step through the same DecodeStep (kernels, CUDA graph) that generation uses.
The logits of step t predict token t + 1, so the perplexity measures the served cache, not a simulation.
"""

from __future__ import annotations

import torch

from logquant_trt.config import LogQuantConfig
from logquant_trt.eval.metrics import perplexity_of, target_logprobs
from logquant_trt.runtime.cache import CacheBackend
from logquant_trt.runtime.executor import ModelExecutor
from logquant_trt.runtime.model import DecoderModel


@torch.no_grad()
def teacher_forced_logits(model: DecoderModel, config: LogQuantConfig, token_ids: torch.Tensor, prefill: int,
                          backend: CacheBackend | str | None = None, cuda_graphs: bool = True) -> torch.Tensor:
    """Logits [B, N - prefill, vocab] (fp32, on the CPU) predicting tokens prefill .. N-1 of token_ids [B, N].

    Row 0 of the result comes from the prefill; row j > 0 from the decode step that fed token prefill + j - 1.
    """
    batch, total = token_ids.shape
    if not 1 <= prefill < total:
        raise ValueError(f"prefill={prefill} must be in [1, {total}) for {total} tokens")
    # The serving executor, so scoring runs the cache, page layout and decode step that generation runs.
    executor = ModelExecutor(model, config, max_batch=batch, max_seq_len=total, backend=backend,
                             cuda_graphs=cuda_graphs)
    pages_per_row = executor.pages_for(total)
    out = torch.empty(batch, total - prefill, executor.vocab_size, dtype=torch.float32)
    for row, ids in enumerate(token_ids.tolist()):
        pages = list(range(row * pages_per_row, (row + 1) * pages_per_row))
        out[row, 0] = executor.prefill(row, pages, tuple(ids[:prefill])).float().cpu()
    rows = list(range(batch))
    for t in range(prefill, total - 1):
        out[:, t - prefill + 1] = executor.decode(rows, token_ids[:, t].tolist(), [t] * batch).float().cpu()
    return out


def perplexity(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """exp(mean NLL) of targets [B, n] under logits [B, n, vocab]."""
    return perplexity_of(target_logprobs(logits.float().log_softmax(-1), targets.to(logits.device)))
