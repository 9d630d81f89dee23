# SPDX-License-Identifier: Apache-2.0
"""HF transformers' own decode beside the runtime: LlamaForCausalLM, eager attention, a StaticCache.

The model gets random fp16 weights drawn on the GPU (built on the meta device, then materialized: no 32 GB
fp32 CPU copy), the StaticCache is sized for `rows` sequences of context + steps tokens and filled with random
K/V as if every row held `context` tokens, and each step feeds one token per row at the next position.
Eager attention repeats the KV heads (repeat_kv) for every layer, so it needs more transient memory than the
cache it reads: on OOM the batch shrinks and the attempt is recorded.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

import torch

from logquant_trt.bench.oom import empty_cache, retry_with_fewer_rows
from logquant_trt.models.checkpoint import head_dim_of


@dataclasses.dataclass
class HFResult:
    context: int
    requested_rows: int
    rows: int
    oom_fallbacks: list[int]
    steps: int
    step_ms_median: float
    step_ms_all: list[float]
    tokens_per_s: float
    cache_bytes: int
    attn_implementation: str = "eager"
    cache: str = "StaticCache"
    transformers_version: str = ""
    error: str | None = None


def random_hf_llama(config: Any, dtype: torch.dtype, device: torch.device, seed: int) -> torch.nn.Module:
    """LlamaForCausalLM(config) with N(0, 0.02) weights and unit norms, drawn on `device`."""
    from transformers import LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model = model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02, generator=generator)
    # to_empty left the non-persistent inv_freq buffer uninitialized: rebuild the rotary module.
    model.model.rotary_emb = LlamaRotaryEmbedding(config).to(device)
    return model.eval()


def _static_cache(config: Any, rows: int, context: int, max_cache_len: int, dtype: torch.dtype,
                  device: torch.device, generator: torch.Generator) -> Any:
    from transformers import StaticCache

    cache = StaticCache(config=config, max_cache_len=max_cache_len)
    cache.early_initialization(rows, config.num_key_value_heads, head_dim_of(config), dtype, device)
    for layer in cache.layers:
        layer.keys[:, :, :context].normal_(generator=generator)
        layer.values[:, :, :context].normal_(generator=generator)
        layer.cumulative_length.fill_(context)
    return cache


def _cache_bytes(cache: Any) -> int:
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(model: torch.nn.Module, cache: Any, rows: int, context: int, steps: int,
                generator: torch.Generator) -> list[float]:
    """Milliseconds of each of 1 + steps decode steps (the first is the warm-up)."""
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    times = []
    with torch.no_grad():
        for i in range(steps + 1):
            tokens = torch.randint(vocab, (rows, 1), device=device, generator=generator)
            positions = torch.full((rows, 1), context + i, dtype=torch.int64, device=device)
            sync(device)
            start = time.perf_counter()
            model(input_ids=tokens, position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=1)
            sync(device)
            times.append((time.perf_counter() - start) * 1e3)
    return times


def run_hf_baseline(config: Any, rows: int, context: int, steps: int, seed: int = 0,
                    dtype: torch.dtype = torch.float16, device: torch.device | str = "cuda") -> HFResult:
    """Decode tokens/s of HF eager + StaticCache at `rows` x `context` (fewer rows if that OOMs)."""
    import transformers

    device = torch.device(device)
    config._attn_implementation = "eager"
    model = random_hf_llama(config, dtype, device, seed)
    generator = torch.Generator(device=device).manual_seed(seed + 1)

    def attempt(batch: int) -> HFResult:
        cache = _static_cache(config, batch, context, context + steps + 2, dtype, device, generator)
        times = _time_steps(model, cache, batch, context, steps, generator)
        median = statistics.median(times[1:])
        return HFResult(context, rows, batch, [], steps, median, times, batch / (median * 1e-3), _cache_bytes(cache),
                        transformers_version=transformers.__version__)

    try:
        fitted = retry_with_fewer_rows(attempt, rows, lambda batch: max(1, batch // 8), device)
    finally:
        del model
        empty_cache(device)
    if fitted.result is None:
        return HFResult(context, rows, 0, fitted.oom_rows, steps, float("nan"), [], 0.0, 0,
                        transformers_version=transformers.__version__, error="out of memory at every batch size")
    return dataclasses.replace(fitted.result, oom_fallbacks=fitted.oom_rows)
