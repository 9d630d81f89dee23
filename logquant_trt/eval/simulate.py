# SPDX-License-Identifier: Apache-2.0
"""Token-by-token decode semantics of a policy, computed in one forward pass.

Decoding T tokens one at a time through LogQuantCache costs T forwards. But a
sealed token's dequantized value never changes after its seal, and the set of
positions a query reads in full precision only changes when the cache compacts.
So each layer replays its cache's compactions (LayerKVState, the same code as
LogQuantCache) to find runs of consecutive queries that see the same cache state,
and attends each run with one masked SDPA call. The result equals feeding the
tokens one by one after a prefill of `prefill_len` (tests/eval/test_simulate.py).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, PreTrainedModel

from logquant_trt.config import LogQuantConfig
from logquant_trt.reference.layer_state import LayerKVState

ATTN_IMPLEMENTATION = "logquant_simulated"


@dataclasses.dataclass(frozen=True)
class _Plan:
    config: LogQuantConfig
    prefill_len: int
    states: dict[int, LayerKVState]


_PLAN: contextvars.ContextVar[_Plan | None] = contextvars.ContextVar("logquant_plan", default=None)


def simulate_layer(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, config: LogQuantConfig,
                   layer_idx: int, prefill_len: int, scale: float | None = None
                   ) -> tuple[torch.Tensor, LayerKVState]:
    """Attention of every position under the policy.

    Args:
        q: [B, Hq, T, D]; k, v: [B, H, T, D] post-RoPE, the whole sequence.
        prefill_len: positions [0, prefill_len) are a prefill (full-precision
            attention); each later position is one decode step.
    Returns:
        ([B, Hq, T, D] attention output, the layer's cache after position T-1).
    """
    total = q.shape[2]
    if not 1 <= prefill_len <= total:
        raise ValueError(f"prefill_len={prefill_len} must be in [1, {total}]")
    out = torch.empty_like(q)
    out[:, :, :prefill_len] = F.scaled_dot_product_attention(
        q[:, :, :prefill_len], k[:, :, :prefill_len], v[:, :, :prefill_len],
        is_causal=True, scale=scale, enable_gqa=True)
    state = LayerKVState(config, layer_idx)
    state.append(k[:, :, :prefill_len], v[:, :, :prefill_len])
    runs: list[tuple[int, torch.Tensor]] = []  # (first query, full-precision mask [B, H, T])
    seen = None
    for t in range(prefill_len, total):
        state.append(k[:, :, t:t + 1], v[:, :, t:t + 1])
        key = (state.num_sealed, state.retained_version)
        if key != seen:
            # Positions after t are hidden by causality; pad them as full precision.
            runs.append((t, F.pad(state.full_precision_mask(), (0, total - state.length), value=True)))
            seen = key
    if not runs:
        return out, state
    # Every token reads either its original value or its final dequantized one:
    # a block's codes never change after its seal.
    k_quant, v_quant = (torch.cat([deq, x[:, :, state.sealed_length:]], dim=2)
                        for deq, x in zip(state.dequantized_blocks(), (k, v)))
    for i, (start, fp_mask) in enumerate(runs):
        end = runs[i + 1][0] if i + 1 < len(runs) else total
        keep = fp_mask[:, :, :end, None]
        k_seen = torch.where(keep, k[:, :, :end], k_quant[:, :, :end])
        v_seen = torch.where(keep, v[:, :, :end], v_quant[:, :, :end])
        causal = torch.arange(end, device=q.device)[None, :] <= torch.arange(start, end, device=q.device)[:, None]
        out[:, :, start:end] = F.scaled_dot_product_attention(
            q[:, :, start:end], k_seen, v_seen, attn_mask=causal, scale=scale, enable_gqa=True)
    return out, state


def _simulated_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                         value: torch.Tensor, attention_mask: torch.Tensor | None,
                         scaling: float | None = None, dropout: float = 0.0, **kwargs
                         ) -> tuple[torch.Tensor, None]:
    plan = _PLAN.get()
    if plan is None:
        raise RuntimeError(f"attn_implementation={ATTN_IMPLEMENTATION!r} needs simulate_policy(...)")
    out, state = simulate_layer(query, key, value, plan.config, module.layer_idx, plan.prefill_len, scaling)
    plan.states[module.layer_idx] = state
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTN_IMPLEMENTATION, _simulated_attention)


@contextlib.contextmanager
def simulate_policy(model: PreTrainedModel, config: LogQuantConfig, prefill_len: int
                    ) -> Iterator[dict[int, LayerKVState]]:
    """Inside the block, a forward over a whole sequence behaves as prefill + decode
    under `config`. Yields {layer_idx: final LayerKVState}, filled by the forward."""
    previous = model.config._attn_implementation
    plan = _Plan(config, prefill_len, {})
    token = _PLAN.set(plan)
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    try:
        yield plan.states
    finally:
        model.set_attn_implementation(previous)
        _PLAN.reset(token)
