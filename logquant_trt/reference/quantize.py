# SPDX-License-Identifier: Apache-2.0
"""Asymmetric min/max 2-bit group quantization (docs/kv_format.md §3).

The arithmetic is specified exactly so that kernels can match the codes bit for
bit: statistics in the input dtype, scale = (max - min) / 3 rounded once to the
storage dtype, codes = clamp(rint((x - min) / scale), 0, 3) in fp32 with IEEE
division and round-half-to-even. A constant group stores scale 0 and codes 0.
"""

import torch

from logquant_trt.format import LEVELS



def group_min_max(x: torch.Tensor, dim: int, excluded: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Min and max of x along dim, ignoring slots where `excluded` is True.

    A group whose slots are all excluded gets min = max = 0.
    """
    if excluded is None:
        return x.amin(dim=dim), x.amax(dim=dim)
    excluded = excluded.expand_as(x)
    inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
    lo = torch.where(excluded, inf, x).amin(dim=dim)
    hi = torch.where(excluded, -inf, x).amax(dim=dim)
    empty = excluded.all(dim=dim)
    return lo.masked_fill(empty, 0), hi.masked_fill(empty, 0)


def quantize_groups(x: torch.Tensor, dim: int, excluded: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize x with one (scale, min) per slice along `dim`.

    Args:
        x: values, any float dtype; the statistics are stored in x.dtype.
        dim: the axis a group runs along (reduced away in the params).
        excluded: bool, broadcastable to x. Excluded slots are left out of the
            min/max; their own codes are computed as usual (clamped) and never read.

    Returns:
        codes: uint8 in [0, 3], shape of x.
        params: x.dtype, shape of x without `dim`, plus a last dim of 2 holding
            (scale, min).
    """
    lo, hi = group_min_max(x, dim, excluded)
    scale = ((hi.float() - lo.float()) / LEVELS).to(x.dtype)
    scale32 = scale.float().unsqueeze(dim)
    safe = torch.where(scale32 > 0, scale32, torch.ones_like(scale32))
    q = torch.round((x.float() - lo.float().unsqueeze(dim)) / safe).clamp_(0, LEVELS)
    q = torch.where(scale32 > 0, q, torch.zeros_like(q))
    return q.to(torch.uint8), torch.stack([scale, lo], dim=-1)


def dequantize_groups(codes: torch.Tensor, params: torch.Tensor, dim: int) -> torch.Tensor:
    """x_hat = code * scale + min, computed in fp32, returned in params.dtype."""
    scale = params[..., 0].float().unsqueeze(dim)
    lo = params[..., 1].float().unsqueeze(dim)
    return (codes.float() * scale + lo).to(params.dtype)
