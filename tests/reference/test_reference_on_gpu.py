# SPDX-License-Identifier: Apache-2.0
"""The reference runs on CUDA tensors and stores what it stores on the CPU."""

import pytest
import torch

from logquant_trt.config import LogQuantConfig
from logquant_trt.reference.layer_state import LayerKVState
from logquant_trt.reference.paged import paged_attention, to_paged


@pytest.mark.gpu
@pytest.mark.parametrize("policy", ["kivi", "logquant", "ott", "logquant_ott"])
def test_cuda_state_matches_cpu_state(policy: str) -> None:
    config = LogQuantConfig(policy=policy, group_size=32, residual=32, window=32, pool_skip_layers=0,
                            dtype="float16")
    gen = torch.Generator().manual_seed(0)
    steps = [torch.randn(1, 2, 70, 64, generator=gen).half()] + [
        torch.randn(1, 2, 1, 64, generator=gen).half() for _ in range(200)]
    states = {}
    for device in ("cpu", "cuda"):
        state = LayerKVState(config, layer_idx=4)
        for k in steps:
            state.append(k.to(device), (k * 0.5).to(device))
        states[device] = state
    cpu, gpu = states["cpu"], states["cuda"]
    assert gpu.num_sealed == cpu.num_sealed and gpu.length == cpu.length
    for h in range(2):
        assert gpu.retained_positions(0, h) == cpu.retained_positions(0, h)
    # Codes are bit-exact: CUDA divides as IEEE does (docs/kv_format.md §3).
    for got, want in zip(gpu.blocks.tensors(), cpu.blocks.tensors()):
        assert torch.equal(got.cpu(), want), policy
    q = torch.randn(1, 6, 1, 64, generator=gen).half()
    gpu_out = paged_attention(q.cuda(), to_paged([gpu]).to("cuda"))
    torch.testing.assert_close(gpu_out.cpu(), paged_attention(q, to_paged([cpu])), atol=2e-3, rtol=2e-3)
