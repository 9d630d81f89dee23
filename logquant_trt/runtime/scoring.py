# SPDX-License-Identifier: Apache-2.0
"""Teacher-forced scoring through the runtime: perplexity exactly as generation computes it.

Each text gets a row: its first `prefill` tokens are prefilled (quantized on write), then every later
token is fed as a decode step through the same DecodeStep (kernels, CUDA graph) that generation uses.
The logits of step t predict token t + 1, so the perplexity measures the served cache, not a simulation.
"""

from __future__ import annotations

import math

import torch

from logquant_trt.config import LogQuantConfig
from logquant_trt.runtime.cache import CacheBackend, default_backend
from logquant_trt.runtime.decode_step import DecodeStep
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
    device = model.device
    backend = default_backend(config, device) if backend is None else CacheBackend.parse(backend)
    cache_cls = backend.load()
    pages_per_row = cache_cls.pages_for(config, total)
    cache = cache_cls(config, model.shape, batch, total, batch * pages_per_row, device)
    tokens = token_ids.to(device)
    out = torch.empty(batch, total - prefill, model.shape.vocab_size, dtype=torch.float32)
    for row in range(batch):
        cache.assign(row, list(range(row * pages_per_row, (row + 1) * pages_per_row)))
        positions = torch.arange(prefill, device=device)[None]
        logits = model.forward(tokens[row:row + 1, :prefill], positions,
                               lambda layer, q, k, v: cache.prefill(row, layer, q, k, v))
        out[row, 0] = logits[0].float().cpu()
    step = DecodeStep(model, cache, cuda_graphs)
    rows = list(range(batch))
    for t in range(prefill, total - 1):
        step.set_inputs(rows, tokens[:, t].tolist(), [t] * batch)
        out[:, t - prefill + 1] = step.run().float().cpu()
    return out


def perplexity(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """exp(mean NLL) of targets [B, n] under logits [B, n, vocab]."""
    nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten().to(logits.device))
    return math.exp(nll.item())
