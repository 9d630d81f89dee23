# SPDX-License-Identifier: Apache-2.0
"""Sealing G-token blocks into 2-bit codes and reading them back (docs/kv_format.md §2-3).

Per-sequence storage stacks blocks on dim 1; a page of the paged layout is one
block of one sequence, [H, ...] (docs/kv_format.md §4).
"""

from __future__ import annotations

import dataclasses

import torch

from logquant_trt.config import KeyAxis
from logquant_trt.reference.packing import pack_2bit, unpack_2bit
from logquant_trt.reference.quantize import dequantize_groups, quantize_groups


@dataclasses.dataclass
class QuantizedBlocks:
    """n sealed blocks of B sequences.

    k_codes: uint8 [B, n, H, D, G/4] (channel axis) or [B, n, H, G, D/4] (token axis)
    k_params: [B, n, H, D, 2] (channel) or [B, n, H, G, D/C, 2] (token); (scale, min)
    v_codes: uint8 [B, n, H, G, D/4]
    v_params: [B, n, H, G, D/C, 2]
    """

    key_axis: KeyAxis
    k_codes: torch.Tensor
    k_params: torch.Tensor
    v_codes: torch.Tensor
    v_params: torch.Tensor

    @property
    def num_blocks(self) -> int:
        return self.k_codes.shape[1]

    def cat(self, other: "QuantizedBlocks") -> "QuantizedBlocks":
        return QuantizedBlocks(self.key_axis, *(
            torch.cat([a, b], dim=1) for a, b in zip(self.tensors(), other.tensors())))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.k_codes, self.k_params, self.v_codes, self.v_params

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())


def _quantize_per_token(x: torch.Tensor, channel_group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, H, G, D] -> codes uint8 [B, H, G, D/4], params [B, H, G, D/C, 2]."""
    b, h, g, d = x.shape
    codes, params = quantize_groups(x.reshape(b, h, g, d // channel_group, channel_group), dim=-1)
    return pack_2bit(codes.reshape(b, h, g, d)), params


def _dequantize_per_token(codes: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """[..., G, D/4], [..., G, D/C, 2] -> [..., G, D]."""
    flat = unpack_2bit(codes)
    groups = params.shape[-2]
    grouped = flat.unflatten(-1, (groups, flat.shape[-1] // groups))
    return dequantize_groups(grouped, params, dim=-1).flatten(-2)


def seal_block(k: torch.Tensor, v: torch.Tensor, excluded: torch.Tensor,
               key_axis: KeyAxis, channel_group: int) -> QuantizedBlocks:
    """Quantize one block of G tokens.

    Args:
        k, v: [B, H, G, D] full-precision keys (post-RoPE) and values.
        excluded: bool [B, H, G]; tokens pinned in full precision forever. They
            are left out of the per-channel key min/max (OTT); per-token groups
            are unaffected.
        key_axis: see KeyAxis.
        channel_group: C, channels per per-token group.
    Returns:
        QuantizedBlocks with n = 1.
    """
    if key_axis is KeyAxis.CHANNEL:
        codes, k_params = quantize_groups(k.transpose(-1, -2), dim=-1, excluded=excluded[:, :, None, :])
        k_codes = pack_2bit(codes)
    else:
        k_codes, k_params = _quantize_per_token(k, channel_group)
    v_codes, v_params = _quantize_per_token(v, channel_group)
    return QuantizedBlocks(key_axis, *(t.unsqueeze(1) for t in (k_codes, k_params, v_codes, v_params)))


def dequantize_blocks(blocks: QuantizedBlocks) -> tuple[torch.Tensor, torch.Tensor]:
    """All blocks back to [B, H, n*G, D] keys and values."""
    if blocks.key_axis is KeyAxis.CHANNEL:
        k = dequantize_groups(unpack_2bit(blocks.k_codes), blocks.k_params, dim=-1)  # [B,n,H,D,G]
        k = k.transpose(-1, -2)
    else:
        k = _dequantize_per_token(blocks.k_codes, blocks.k_params)
    v = _dequantize_per_token(blocks.v_codes, blocks.v_params)
    # [B, n, H, G, D] -> [B, H, n*G, D]
    return tuple(x.transpose(1, 2).flatten(2, 3) for x in (k, v))  # type: ignore[return-value]
