# SPDX-License-Identifier: Apache-2.0
"""OTT's pool choice on constructed keys (docs/kv_format.md §5.4)."""

import torch

from logquant_trt.config import LogQuantConfig
from logquant_trt.reference.layer_state import LayerKVState
from logquant_trt.reference.outlier_pool import OutlierPool

G, D = 32, 64


def keys_with_norms(norms: dict[int, float], count: int = G, base: float = 1.0) -> torch.Tensor:
    """[1, 1, count, D] keys whose L1 norm is base*D except at the given slots."""
    keys = torch.full((1, 1, count, D), base)
    for slot, norm in norms.items():
        keys[0, 0, slot] = norm / D
    return keys


def test_pool_takes_the_k_smallest_l1_norms() -> None:
    pool = OutlierPool(batch=1, heads=1, pool_size=3, extra_pool_size=4)
    keys = keys_with_norms({5: 1.0, 17: 2.0, 30: 3.0, 9: 4.0})
    chosen = pool.on_seal(0, keys, torch.ones(1, 1, G, dtype=torch.bool))
    assert chosen[0, 0].nonzero().flatten().tolist() == [5, 17, 30]
    assert pool.pool_positions(0, 0) == [5, 17, 30]


def test_l1_not_l2() -> None:
    # Slot 3: L1 = 8, L2 = 8 (one big channel). Slot 4: L1 = 16, L2 = 2 (spread out).
    keys = torch.full((1, 1, G, D), 1.0)
    keys[0, 0, 3] = 0
    keys[0, 0, 3, 0] = 8.0
    keys[0, 0, 4] = 0.25
    pool = OutlierPool(1, 1, pool_size=1, extra_pool_size=0)
    chosen = pool.on_seal(0, keys, torch.ones(1, 1, G, dtype=torch.bool))
    assert chosen[0, 0].nonzero().flatten().tolist() == [3]


def test_evicted_members_move_to_the_extra_pool() -> None:
    pool = OutlierPool(1, 1, pool_size=2, extra_pool_size=2)
    pool.on_seal(0, keys_with_norms({1: 5.0, 2: 6.0}), torch.ones(1, 1, G, dtype=torch.bool))
    chosen = pool.on_seal(G, keys_with_norms({0: 1.0}), torch.ones(1, 1, G, dtype=torch.bool))
    assert chosen[0, 0].nonzero().flatten().tolist() == [0]
    assert pool.pool_positions(0, 0) == [1, G]
    assert pool.extra[0][0] == [2]


def test_a_seal_whose_evictions_do_not_fit_changes_nothing() -> None:
    pool = OutlierPool(1, 1, pool_size=2, extra_pool_size=1)
    pool.on_seal(0, keys_with_norms({1: 5.0, 2: 6.0}), torch.ones(1, 1, G, dtype=torch.bool))
    chosen = pool.on_seal(G, keys_with_norms({0: 1.0, 1: 1.5}), torch.ones(1, 1, G, dtype=torch.bool))
    assert not chosen.any()
    assert pool.pool_positions(0, 0) == [1, 2] and pool.extra[0][0] == []


def test_ties_go_to_the_older_position() -> None:
    pool = OutlierPool(1, 1, pool_size=1, extra_pool_size=4)
    pool.on_seal(0, keys_with_norms({7: 2.0}), torch.ones(1, 1, G, dtype=torch.bool))
    pool.on_seal(G, keys_with_norms({3: 2.0}), torch.ones(1, 1, G, dtype=torch.bool))
    assert pool.pool_positions(0, 0) == [7]


def test_pool_tokens_leave_the_block_min_max_and_stay_full_precision() -> None:
    config = LogQuantConfig(policy="ott", group_size=G, residual=0, pool_size=1, extra_pool_size=0,
                            pool_skip_layers=0, dtype="float32")
    state = LayerKVState(config, layer_idx=0)
    keys = torch.rand(1, 1, G, D) + 1.0
    keys[0, 0, 11] = 0.001  # smallest L1 norm and far below every channel's range
    state.append(keys, torch.randn(1, 1, G, D))
    assert state.num_sealed == 1
    assert state.retained_positions(0, 0) == [11]
    k_params = state.blocks.k_params[0, 0, 0]  # [D, (scale, min)]
    assert bool((k_params[:, 1] >= 1.0).all()), "the outlier's channel values left the min"
    effective_k, _ = state.effective_kv()
    assert torch.equal(effective_k[0, 0, 11], keys[0, 0, 11])


def test_first_layers_have_no_pool() -> None:
    config = LogQuantConfig(policy="ott", group_size=G, residual=0, pool_skip_layers=2, dtype="float32")
    state = LayerKVState(config, layer_idx=1)
    state.append(torch.randn(1, 2, 3 * G, D), torch.randn(1, 2, 3 * G, D))
    assert state.retained_positions(0, 0) == [] and state.retained_positions(0, 1) == []
