# SPDX-License-Identifier: Apache-2.0
"""`logquant-trt eval`: perplexity, KL, agreement and bytes per token of each policy."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from transformers import PreTrainedModel

from logquant_trt.config import LogQuantConfig
from logquant_trt.eval.budget import fp16_bytes_per_token
from logquant_trt.eval.metrics import greedy_agreement, score_logits
from logquant_trt.eval.simulate import simulate_policy
from logquant_trt.hf.cache import LogQuantCache
from logquant_trt.models.checkpoint import head_dim_of


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
    pool_tokens: float  # mean pool + extra pool occupancy per (layer with a pool, head)
    seconds: float


def _model_geometry(model: PreTrainedModel) -> tuple[int, int, int]:
    cfg = model.config
    return cfg.num_hidden_layers, cfg.num_key_value_heads, head_dim_of(cfg)


class Evaluator:
    """Scores policies on one text against the fp16 cache, one row at a time."""

    def __init__(self, model: PreTrainedModel, token_ids: torch.Tensor, settings: EvalSettings) -> None:
        total = token_ids.shape[1]
        if total < settings.prefill_len + 2:
            raise ValueError(f"num_tokens={total} must exceed prefill_len={settings.prefill_len} + 1")
        self.model, self.token_ids, self.settings = model, token_ids, settings
        self.layers, self.kv_heads, self.head_dim = _model_geometry(model)
        self.results: list[PolicyResult] = []
        self._reference: tuple[torch.Tensor, torch.Tensor] | None = None

    @torch.no_grad()
    def run(self, row: PolicyRow) -> PolicyResult:
        """Evaluate one row; the first row must be the fp16 baseline."""
        if self._reference is None and row.config.quantized:
            raise ValueError(f"the first row must be the fp16 baseline, got {row.name!r}")
        settings, total = self.settings, self.token_ids.shape[1]
        start = time.perf_counter()
        # Rows prefill_len .. T-2 are decode steps predicting tokens prefill_len+1 .. T-1.
        with simulate_policy(self.model, row.config, settings.prefill_len) as states:
            logits = self.model(self.token_ids).logits[0, settings.prefill_len:total - 1]
        prompt = self.token_ids[:, :settings.gen_context]
        generated = self.model.generate(
            prompt, attention_mask=torch.ones_like(prompt), past_key_values=LogQuantCache(row.config),
            max_new_tokens=settings.gen_tokens, min_new_tokens=settings.gen_tokens,
            do_sample=False)[0, settings.gen_context:]
        if self._reference is None:
            self._reference = (logits.float().log_softmax(-1), generated)
        metrics = score_logits(logits, self.token_ids[0, settings.prefill_len + 1:], self._reference[0])
        match, prefix = greedy_agreement(generated, self._reference[1])
        breakdown: dict[str, int] = {}
        for state in states.values():
            for key, value in state.nbytes().items():
                breakdown[key] = breakdown.get(key, 0) + value
        bytes_per_token = sum(breakdown.values()) / total
        fp_tokens = sum(state.length - state.sealed_length
                        + sum(len(e) for e in state.retained.values()) / self.kv_heads
                        for state in states.values()) / len(states)
        base_ppl = self.results[0].perplexity if self.results else metrics.perplexity
        result = PolicyResult(
            name=row.name, config=row.config.to_dict(), perplexity=metrics.perplexity,
            ppl_ratio=metrics.perplexity / base_ppl, kl_divergence=metrics.kl_divergence,
            top1_agreement=metrics.top1_agreement, greedy_match=match, greedy_prefix=prefix,
            bytes_per_token=bytes_per_token,
            compression=fp16_bytes_per_token(self.layers, self.kv_heads, self.head_dim) / bytes_per_token,
            full_precision_tokens=fp_tokens, bytes_breakdown=breakdown,
            pool_tokens=_pool_tokens(states, self.kv_heads), seconds=time.perf_counter() - start)
        self.results.append(result)
        return result


def _pool_tokens(states: dict, kv_heads: int) -> float:
    """Mean outlier-pool + extra-pool occupancy per (layer with a pool, head)."""
    counts = [len(state.policy.pool.positions(0, h)) for state in states.values()
              if state.policy is not None and state.policy.pool is not None for h in range(kv_heads)]
    return sum(counts) / len(counts) if counts else 0.0
