# SPDX-License-Identifier: Apache-2.0
"""2-bit code packing (docs/kv_format.md §2).

Four codes per byte, code i of a byte in bits [2i, 2i+1]. Read as a little-endian
uint32, a word holds codes 16w .. 16w+15 with code i in bits [2i, 2i+1], which is
what the CUDA kernels load.
"""

import torch

from logquant_trt.format import CODES_PER_BYTE

_SHIFTS = (0, 2, 4, 6)


def pack_2bit(codes: torch.Tensor) -> torch.Tensor:
    """Pack uint8 codes in [0, 3] along the last dim: [..., n] -> uint8 [..., n/4]."""
    if codes.dtype != torch.uint8:
        raise TypeError(f"codes must be uint8, got {codes.dtype}")
    if codes.shape[-1] % CODES_PER_BYTE:
        raise ValueError(f"codes.shape[-1]={codes.shape[-1]} is not a multiple of 4")
    quads = codes.reshape(*codes.shape[:-1], codes.shape[-1] // CODES_PER_BYTE, CODES_PER_BYTE)
    packed = torch.zeros(quads.shape[:-1], dtype=torch.uint8, device=codes.device)
    for i, shift in enumerate(_SHIFTS):
        packed |= (quads[..., i] & 3) << shift
    return packed


def unpack_2bit(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of pack_2bit: uint8 [..., m] -> uint8 codes [..., 4m]."""
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed must be uint8, got {packed.dtype}")
    codes = torch.stack([(packed >> shift) & 3 for shift in _SHIFTS], dim=-1)
    return codes.reshape(*packed.shape[:-1], packed.shape[-1] * CODES_PER_BYTE)
