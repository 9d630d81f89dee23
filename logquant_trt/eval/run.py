# SPDX-License-Identifier: Apache-2.0
"""`logquant-trt eval`: perplexity, KL, agreement and bytes per token of each policy."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from rich.progress import Progress
from transformers import PreTrainedModel

from logquant_trt.config import LogQuantConfig
from logquant_trt.eval.budget import fp16_bytes_per_token
from logquant_trt.eval.metrics import greedy_agreement, score_logits
from logquant_trt.eval.simulate import simulate_policy
from logquant_trt.hf.cache import LogQuantCache


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    num_tokens: int = 4096  # evaluated text length
    prefill_len: int = 512  # positions before this are a prefill; the rest decode one by one
    gen_context: int = 1024  # context for the greedy-generation comparison
    gen_tokens: int = 32  # greedy tokens compared with the fp16 cache's


@dataclasses.dataclass(frozen=True)
class PolicyRow:
    name: str
    config: LogQuantConfig


@dataclasses.dataclass
class PolicyResult:
    name: str
    config: dict[str, Any]
    perplexity: float
    ppl_ratio: float
    kl_divergence: float
    top1_agreement: float
    greedy_match: float
    greedy_prefix: int
    bytes_per_token: float
    compression: float
    full_precision_tokens: float  # per (layer, head), at the end of the text
    bytes_breakdown: dict[str, int]
    seconds: float


def _model_geometry(model: PreTrainedModel) -> tuple[int, int, int]:
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return cfg.num_hidden_layers, cfg.num_key_value_heads, head_dim


@torch.no_grad()
def evaluate(model: PreTrainedModel, token_ids: torch.Tensor, rows: list[PolicyRow],
             settings: EvalSettings) -> list[PolicyResult]:
    """Evaluate each row on token_ids [1, T]. The first row must be the fp16 policy."""
    if rows[0].config.quantized:
        raise ValueError(f"the first row must be the fp16 baseline, got {rows[0].name!r}")
    total = token_ids.shape[1]
    if total < settings.prefill_len + 2:
        raise ValueError(f"num_tokens={total} must exceed prefill_len={settings.prefill_len} + 1")
    layers, kv_heads, head_dim = _model_geometry(model)
    fp16_bytes = fp16_bytes_per_token(layers, kv_heads, head_dim)
    # Rows prefill_len .. T-2 are decode steps predicting tokens prefill_len+1 .. T-1.
    rows_slice = slice(settings.prefill_len, total - 1)
    targets = token_ids[0, settings.prefill_len + 1:]
    gen_prompt = token_ids[:, :settings.gen_context]
    reference_logprobs = reference_tokens = None
    results: list[PolicyResult] = []
    with Progress() as progress:
        task = progress.add_task("policies", total=len(rows))
        for row in rows:
            progress.update(task, description=f"eval {row.name}")
            start = time.perf_counter()
            with simulate_policy(model, row.config, settings.prefill_len) as states:
                logits = model(token_ids).logits[0, rows_slice]
            generated = model.generate(
                gen_prompt, attention_mask=torch.ones_like(gen_prompt),
                past_key_values=LogQuantCache(row.config), max_new_tokens=settings.gen_tokens,
                min_new_tokens=settings.gen_tokens, do_sample=False)[0, settings.gen_context:]
            if reference_logprobs is None:
                reference_logprobs = logits.float().log_softmax(-1)
                reference_tokens = generated
            metrics = score_logits(logits, targets, reference_logprobs)
            match, prefix = greedy_agreement(generated, reference_tokens)
            breakdown: dict[str, int] = {}
            for state in states.values():
                for key, value in state.nbytes().items():
                    breakdown[key] = breakdown.get(key, 0) + value
            bytes_per_token = sum(breakdown.values()) / total
            fp_tokens = sum(
                state.length - state.sealed_length + sum(len(e) for e in state.retained.values()) / kv_heads
                for state in states.values()) / len(states)
            base_ppl = results[0].perplexity if results else metrics.perplexity
            results.append(PolicyResult(
                name=row.name, config=row.config.to_dict(), perplexity=metrics.perplexity,
                ppl_ratio=metrics.perplexity / base_ppl, kl_divergence=metrics.kl_divergence,
                top1_agreement=metrics.top1_agreement, greedy_match=match, greedy_prefix=prefix,
                bytes_per_token=bytes_per_token, compression=fp16_bytes / bytes_per_token,
                full_precision_tokens=fp_tokens, bytes_breakdown=breakdown,
                seconds=time.perf_counter() - start))
            progress.advance(task)
    return results
