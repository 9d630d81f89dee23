# SPDX-License-Identifier: Apache-2.0
"""Storage invariants of every policy, and attention over the mixed cache."""

import dataclasses

import pytest
import torch

from logquant_trt.config import LogQuantConfig
from logquant_trt.reference.attention import dense_attention, mixed_attention
from logquant_trt.reference.layer_state import LayerKVState
from logquant_trt.reference.paged import paged_attention, to_paged, unpack_mask_bits


@dataclasses.dataclass(frozen=True)
class Case:
    policy: str
    key_axis: str = "channel"
    group_size: int = 32
    prefill: int = 100
    steps: int = 150
    heads: int = 2
    head_dim: int = 64

    @property
    def tag(self) -> str:
        return "-".join(f"{k}={v}" for k, v in dataclasses.asdict(self).items())

    def config(self) -> LogQuantConfig:
        return LogQuantConfig(policy=self.policy, key_axis=self.key_axis, group_size=self.group_size,
                              residual=24, window=self.group_size, pool_skip_layers=0, pool_size=3,
                              extra_pool_size=6, sink_tokens=1 if self.policy == "kivi" else 0,
                              dtype="float32")


CASES = [Case(p, axis) for p in ("kivi", "logquant", "ott", "logquant_ott") for axis in ("channel", "token")] + [
    Case("logquant_ott", prefill=1, steps=400),
    Case("logquant_ott", prefill=17, steps=0),
    Case("ott", group_size=64, prefill=500, steps=97, head_dim=128),
    Case("kivi", prefill=31, steps=1),
]


def build(case: Case, seed: int = 0) -> LayerKVState:
    gen = torch.Generator().manual_seed(seed)
    state = LayerKVState(case.config(), layer_idx=3)
    shape = (1, case.heads, case.prefill, case.head_dim)
    state.append(torch.randn(shape, generator=gen), torch.randn(shape, generator=gen))
    for _ in range(case.steps):
        shape = (1, case.heads, 1, case.head_dim)
        state.append(torch.randn(shape, generator=gen), torch.randn(shape, generator=gen))
    return state


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.tag)
def test_storage_invariants(case: Case) -> None:
    state = build(case)
    config = case.config()
    assert state.length == case.prefill + case.steps, case.tag
    assert state.sealed_length % config.group_size == 0
    assert state.length - state.sealed_length <= config.tail_capacity(), case.tag
    for h in range(case.heads):
        retained = state.retained_positions(0, h)
        assert all(p < state.sealed_length for p in retained), case.tag
        assert len(retained) <= config.retained_capacity(), case.tag
    if config.uses_log_window:
        kept = state.full_precision_mask()[0, 0].sum().item()
        assert kept <= 3 * config.window + config.retained_regions()["pool"] + config.extra_pool_size
        if state.sealed_length:
            assert state.full_precision_mask()[0, :, 0].all(), "token 0 is always kept"
    bytes_ = state.nbytes(element_bytes=4)
    if state.blocks is not None:
        assert bytes_["codes"] + bytes_["params"] == state.blocks.nbytes(), case.tag


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.tag)
def test_mixed_attention_equals_dense_over_the_effective_cache(case: Case) -> None:
    state = build(case)
    k_eff, v_eff = state.effective_kv()
    query_heads = case.heads * 3
    q = torch.randn(1, query_heads, 2, case.head_dim, generator=torch.Generator().manual_seed(9))
    expected = dense_attention(q, k_eff, v_eff)
    quant_k, quant_v = state.dequantized_blocks()
    masked = state.full_precision_mask()[:, :, :state.sealed_length]  # True where a copy exists
    ret_k = torch.zeros(1, case.heads, 64, case.head_dim)
    ret_v, ret_valid = torch.zeros_like(ret_k), torch.zeros(1, case.heads, 64, dtype=torch.bool)
    for h in range(case.heads):
        for i, p in enumerate(state.retained_positions(0, h)):
            ret_k[0, h, i], ret_v[0, h, i] = state.retained[(0, h)][p]
            ret_valid[0, h, i] = True
    out = mixed_attention(q, quant_k, quant_v, masked, ret_k, ret_v, ret_valid, state.tail_k, state.tail_v)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5, msg=case.tag)


def test_paged_layout_reads_back_the_same_attention() -> None:
    states = [build(case, seed=i) for i, case in enumerate(
        [Case("logquant_ott", prefill=150, steps=60), Case("logquant_ott", prefill=1, steps=300),
         Case("logquant_ott", prefill=5, steps=0)])]
    paged = to_paged(states, num_pages=40, generator=torch.Generator().manual_seed(3))
    q = torch.randn(3, 6, 1, 64, generator=torch.Generator().manual_seed(4))
    expected = torch.cat([dense_attention(q[b:b + 1], *s.effective_kv()) for b, s in enumerate(states)])
    torch.testing.assert_close(paged_attention(q, paged), expected, atol=1e-5, rtol=1e-5)
    # The masks mark exactly the retained copies.
    for b, state in enumerate(states):
        for n in range(state.num_sealed):
            bits = unpack_mask_bits(paged.dup_mask[paged.block_table[b, n]])
            for h in range(2):
                marked = {n * 32 + i for i in bits[h].nonzero().flatten().tolist()}
                assert marked == {p for p in state.retained_positions(0, h) if n * 32 <= p < (n + 1) * 32}


def test_every_position_is_read_once() -> None:
    state = build(Case("logquant_ott", prefill=64, steps=300))
    paged = to_paged([state])
    readable = paged.retained_pos[paged.retained_pos >= 0]
    for h in range(2):
        positions = paged.retained_pos[0, h]
        valid = positions[positions >= 0].tolist()
        assert len(valid) == len(set(valid)) == len(state.retained_positions(0, h))
    assert readable.numel() > 0


def test_rejects_mismatched_appends() -> None:
    state = build(Case("kivi"))
    with pytest.raises(ValueError, match=r"\[B, H, \*, D\]"):
        state.append(torch.randn(1, 3, 1, 64), torch.randn(1, 3, 1, 64))
    with pytest.raises(TypeError, match="float16"):
        state.append(torch.randn(1, 2, 1, 64, dtype=torch.float16), torch.randn(1, 2, 1, 64, dtype=torch.float16))
