# SPDX-License-Identifier: Apache-2.0
"""Predicted bytes per token equal what the caches measure (docs/kv_format.md §7)."""

import pytest
import torch

from logquant_trt.config import LogQuantConfig
from logquant_trt.eval.budget import fp16_bytes_per_token, match_residual, predicted_bytes_per_token
from logquant_trt.reference.layer_state import LayerKVState


def measured_bytes_per_token(config: LogQuantConfig, prefill: int, length: int) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(0)
    state = LayerKVState(config, layer_idx=5)
    state.append(torch.randn(1, 2, prefill, 64, generator=gen), torch.randn(1, 2, prefill, 64, generator=gen))
    for _ in range(length - prefill):
        state.append(torch.randn(1, 2, 1, 64, generator=gen), torch.randn(1, 2, 1, 64, generator=gen))
    pools = [len(state.policy.pool.positions(0, h)) for h in range(2)] if state.policy.pool else [0]
    return sum(state.nbytes().values()) / length, sum(pools) / len(pools)


@pytest.mark.parametrize("config", [
    LogQuantConfig(policy="kivi", group_size=32, residual=40, dtype="float32"),
    LogQuantConfig(policy="kivi", group_size=64, residual=64, sink_tokens=1, dtype="float32"),
    LogQuantConfig(policy="logquant", group_size=32, window=32, dtype="float32"),
    LogQuantConfig(policy="logquant_ott", group_size=32, window=32, pool_skip_layers=0, dtype="float32"),
    LogQuantConfig(policy="fp16", dtype="float32"),
], ids=lambda c: c.policy.value)
def test_prediction_matches_measurement(config: LogQuantConfig) -> None:
    measured, pool_tokens = measured_bytes_per_token(config, prefill=100, length=700)
    predicted = predicted_bytes_per_token(config, 700, 100, layers=1, kv_heads=2, head_dim=64,
                                          pool_tokens=pool_tokens)
    assert predicted == pytest.approx(measured, rel=1e-9)


def test_match_residual_lands_next_to_the_target() -> None:
    base = LogQuantConfig(policy="kivi", group_size=32, dtype="float32")
    target = predicted_bytes_per_token(base.replace(residual=100), 4096, 512, 30, 3, 64)
    matched = match_residual(base, target, 4096, 512, 30, 3, 64)
    assert predicted_bytes_per_token(matched, 4096, 512, 30, 3, 64) == target
    assert fp16_bytes_per_token(30, 3, 64) == 23040
