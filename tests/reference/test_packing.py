# SPDX-License-Identifier: Apache-2.0
import pytest
import torch

from logquant_trt.reference.packing import pack_2bit, unpack_2bit


def test_round_trip_is_bit_exact() -> None:
    codes = torch.randint(0, 4, (3, 5, 128), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    packed = pack_2bit(codes)
    assert packed.shape == (3, 5, 32)
    assert torch.equal(unpack_2bit(packed), codes)


def test_code_i_sits_in_bits_2i() -> None:
    # docs/kv_format.md §2: code i of a byte in bits [2i, 2i+1]; as a little-endian
    # uint32, code i of 16 in bits [2i, 2i+1].
    codes = torch.tensor([1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3], dtype=torch.uint8)
    packed = pack_2bit(codes)
    assert packed.tolist() == [0b00111001, 0, 0, 0b11000000]
    word = int.from_bytes(bytes(packed.tolist()), "little")
    assert [(word >> (2 * i)) & 3 for i in range(16)] == codes.tolist()


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="6"):
        pack_2bit(torch.zeros(6, dtype=torch.uint8))
    with pytest.raises(TypeError, match="int32"):
        pack_2bit(torch.zeros(8, dtype=torch.int32))
