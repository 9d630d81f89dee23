# SPDX-License-Identifier: Apache-2.0
"""attention_step (the plugin's contract over the paged layout) against LayerKVState + to_paged."""

import dataclasses

import pytest
import torch

from logquant_trt.config import LogQuantConfig, Policy
from logquant_trt.reference.attention import dense_attention
from logquant_trt.reference.layer_state import LayerKVState
from logquant_trt.reference.paged import empty_paged, paged_attention, to_paged
from logquant_trt.reference.paged_step import attention_step


@dataclasses.dataclass(frozen=True)
class StepCase:
    policy: str
    key_axis: str
    prompt: tuple[int, ...]  # per sequence; rows are padded to the longest

    @property
    def tag(self) -> str:
        return f"{self.policy}-{self.key_axis}-{'x'.join(map(str, self.prompt))}"


CASES = [StepCase(p.value, "channel", (50, 37)) for p in Policy if p is not Policy.FP16] + [
    StepCase("logquant_ott", "token", (97, 1 + 32)), StepCase("fp16", "channel", (17, 5))]
DECODE_STEPS = 45  # crosses a seal and LogQuant's thinning for G = W = 32


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.tag)
def test_steps_match_the_layer_state(case: StepCase) -> None:
    config = LogQuantConfig(policy=case.policy, group_size=32, residual=32, window=32, pool_skip_layers=0,
                            key_axis=case.key_axis, dtype="float32")
    heads, q_heads, d, batch, n = 2, 4, 64, len(case.prompt), max(case.prompt)
    gen = torch.Generator().manual_seed(0)
    paged = empty_paged(config, batch, heads, d, max_blocks=(n + DECODE_STEPS) // 32 + 1)
    # Random page order: the step must honour the block table.
    paged.block_table = torch.randperm(paged.block_table.numel(), generator=gen).to(torch.int32).view_as(
        paged.block_table)
    states = [LayerKVState(config, 1) for _ in range(batch)]
    lengths = torch.tensor(case.prompt, dtype=torch.int32)
    for step in range(DECODE_STEPS + 1):
        tokens = n if step == 0 else 1
        q = torch.randn(batch, q_heads, tokens, d, generator=gen)
        k, v = torch.randn(batch, heads, tokens, d, generator=gen), torch.randn(batch, heads, tokens, d, generator=gen)
        out, paged = attention_step(q, k, v, paged, lengths, layer_idx=1)
        for b, state in enumerate(states):
            valid = int(lengths[b]) if step == 0 else 1
            state.append(k[b:b + 1, :, :valid], v[b:b + 1, :, :valid])
            expected = to_paged([state])
            if step == 0:
                ref = dense_attention(q[b:b + 1, :, :valid], k[b:b + 1, :, :valid], v[b:b + 1, :, :valid])
                assert not out[b, :, valid:].any(), f"{case.tag}: prefill rows past context_lengths must be 0"
            else:
                ref = paged_attention(q[b:b + 1], expected)
            # Same arithmetic on the same tensors: equal, not close.
            assert torch.equal(out[b:b + 1, :, :valid], ref), f"{case.tag} step {step} sequence {b}"
            for name in ("num_sealed", "seq_len", "retained_pos", "retained_k", "tail_k"):
                assert torch.equal(getattr(paged, name)[b], getattr(expected, name)[0]), \
                    f"{case.tag} step {step} sequence {b}: {name}"
            pages = paged.block_table[b, :state.num_sealed].long()
            assert torch.equal(paged.dup_mask[pages], expected.dup_mask[expected.block_table[0, :state.num_sealed]
                                                                         .long()]), f"{case.tag} step {step}: dup_mask"


def test_chunked_prefill_is_refused() -> None:
    config = LogQuantConfig(policy="kivi", group_size=32, residual=32, dtype="float32")
    paged = empty_paged(config, 1, 2, 64, max_blocks=2)
    x = torch.randn(1, 2, 3, 64)
    _, paged = attention_step(x, x, x, paged, torch.tensor([3], dtype=torch.int32), layer_idx=0)
    with pytest.raises(NotImplementedError, match="chunked prefill"):
        attention_step(x, x, x, paged, torch.tensor([3], dtype=torch.int32), layer_idx=0)
