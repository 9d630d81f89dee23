# SPDX-License-Identifier: Apache-2.0
"""The executable spec: pure PyTorch, CPU or GPU, no native code."""

from logquant_trt.reference.attention import dense_attention, mixed_attention
from logquant_trt.reference.blocks import QuantizedBlocks, dequantize_blocks, seal_block
from logquant_trt.reference.layer_state import LayerKVState
from logquant_trt.reference.packing import pack_2bit, unpack_2bit
from logquant_trt.reference.quantize import dequantize_groups, quantize_groups

__all__ = [
    "LayerKVState", "QuantizedBlocks", "dense_attention", "dequantize_blocks", "dequantize_groups",
    "mixed_attention", "pack_2bit", "quantize_groups", "seal_block", "unpack_2bit",
]
