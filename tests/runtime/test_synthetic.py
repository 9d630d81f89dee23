# SPDX-License-Identifier: Apache-2.0
"""The benchmark's synthetic cache fill is a state the format allows and a real prefill would reach."""

import dataclasses

import pytest
import torch

from logquant_trt.config import LogQuantConfig
from logquant_trt.reference.layer_state import LayerKVState
from logquant_trt.reference.paged import PagedLayer, empty_paged, to_paged, unpack_mask_bits
from logquant_trt.reference.paged_step import attention_step
from logquant_trt.runtime.cache.synthetic import fill_paged_layers

HEADS, HEAD_DIM, ROWS, LAYERS = 2, 64, 2, 3


def model_layers(config: LogQuantConfig, max_blocks: int) -> list[PagedLayer]:
    """LAYERS layers sharing one block table, with spare pages."""
    pages = ROWS * max_blocks + 7
    shared = empty_paged(config, ROWS, HEADS, HEAD_DIM, max_blocks).block_table
    layers = []
    for _ in range(LAYERS):
        fields = {f.name: getattr(empty_paged(config, ROWS, HEADS, HEAD_DIM, max_blocks), f.name)
                  for f in dataclasses.fields(PagedLayer) if f.name != "config"}
        for name in ("k_codes", "k_params", "v_codes", "v_params", "dup_mask"):
            fields[name] = torch.zeros((pages, *fields[name].shape[1:]), dtype=fields[name].dtype)
        layers.append(PagedLayer(config, **{**fields, "block_table": shared}))
    return layers


@pytest.mark.parametrize("policy", ["kivi", "logquant", "ott", "logquant_ott"])
@pytest.mark.parametrize("length", [5, 200, 777])
def test_fill_matches_a_prefill_and_keeps_the_invariants(policy: str, length: int) -> None:
    config = LogQuantConfig(policy=policy, group_size=32, residual=32, window=32, dtype="float32")
    g = config.group_size
    layers = model_layers(config, -(-(length + 5) // g))
    fill_paged_layers(layers, length, torch.Generator().manual_seed(1))
    real = LayerKVState(config, LAYERS - 1)
    real.append(torch.randn(1, HEADS, length, HEAD_DIM), torch.randn(1, HEADS, length, HEAD_DIM))
    real = to_paged([real])
    regions = config.retained_regions()
    sparse = slice(regions["sinks"], regions["sinks"] + regions["sparse"])

    def decoded(entries: list[int]) -> list[int]:
        return [p if p >= 0 else -p - 2 for p in entries if p != -1]

    for layer in layers:
        assert layer.num_sealed.tolist() == [int(real.num_sealed[0])] * ROWS
        assert layer.seq_len.tolist() == [length] * ROWS
        assert decoded(layer.retained_pos[0, 0, sparse].tolist()) == decoded(real.retained_pos[0, 0, sparse].tolist())
        valid = layer.retained_pos >= 0
        for b in range(ROWS):
            sealed_end = int(layer.num_sealed[b]) * g
            for h in range(HEADS):
                positions = layer.retained_pos[b, h][valid[b, h]].tolist()
                assert len(positions) == len(set(positions)) and all(p < sealed_end for p in positions)
                for p in positions:  # every readable copy masks its code
                    assert unpack_mask_bits(layer.dup_mask[int(layer.block_table[b, p // g]), h])[p % g]
        assert int(unpack_mask_bits(layer.dup_mask).sum()) == int(valid.sum())
    # The functional reference accepts the layout and steps it.
    q = torch.randn(ROWS, 4, 1, HEAD_DIM)
    k, v = torch.randn(ROWS, HEADS, 1, HEAD_DIM), torch.randn(ROWS, HEADS, 1, HEAD_DIM)
    out, new = attention_step(q, k, v, layers[-1], torch.ones(ROWS, dtype=torch.int32), LAYERS - 1)
    assert torch.isfinite(out).all() and new.seq_len.tolist() == [length + 1] * ROWS
