# SPDX-License-Identifier: Apache-2.0
import pytest
import torch

from logquant_trt.reference.quantize import dequantize_groups, quantize_groups


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_error_is_at_most_half_a_step(dtype: torch.dtype) -> None:
    x = (torch.randn(4, 8, 64, generator=torch.Generator().manual_seed(1)) * 3).to(dtype)
    codes, params = quantize_groups(x, dim=-1)
    x_hat = dequantize_groups(codes, params, dim=-1)
    scale = params[..., 0].float().unsqueeze(-1)
    error = (x_hat.float() - x.float()).abs()
    # s/2 from rounding, plus one rounding of x_hat to the storage dtype and the
    # rounding of scale itself (3 steps of it span the range): a few ulps of the range.
    ulp = torch.finfo(dtype).eps * x.float().abs().amax(-1, keepdim=True) * 4
    assert bool((error <= scale / 2 + ulp).all())
    assert int(codes.max()) <= 3


def test_levels_and_params_by_hand() -> None:
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0, 1.4, 1.6]])
    codes, params = quantize_groups(x, dim=-1)
    assert params.tolist() == [[1.0, 0.0]]  # (scale, min)
    assert codes.tolist() == [[0, 1, 2, 3, 1, 2]]


def test_round_half_to_even() -> None:
    x = torch.tensor([[0.0, 0.5, 1.5, 2.5, 3.0]])
    codes, _ = quantize_groups(x, dim=-1)
    assert codes.tolist() == [[0, 0, 2, 2, 3]]


def test_constant_group_stores_zero_scale() -> None:
    x = torch.full((2, 16), 0.75)
    codes, params = quantize_groups(x, dim=-1)
    assert params[..., 0].eq(0).all() and params[..., 1].eq(0.75).all()
    assert codes.eq(0).all()
    assert torch.equal(dequantize_groups(codes, params, dim=-1), x)


def test_excluded_slots_leave_the_min_max() -> None:
    x = torch.tensor([[-100.0, 0.0, 1.0, 2.0, 3.0]])
    excluded = torch.tensor([[True, False, False, False, False]])
    codes, params = quantize_groups(x, dim=-1, excluded=excluded)
    assert params.tolist() == [[1.0, 0.0]]
    assert codes[0, 1:].tolist() == [0, 1, 2, 3]
    assert codes[0, 0] == 0  # clamped, never read
    all_excluded = torch.ones_like(excluded)
    _, params = quantize_groups(x, dim=-1, excluded=all_excluded)
    assert params.tolist() == [[0.0, 0.0]]
