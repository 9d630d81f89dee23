# SPDX-License-Identifier: Apache-2.0
"""Custom ops backed by the CUDA kernels of cpp/ (liblogquant_kernels.so, built by `make kernels`).

Importing this package needs no GPU and no compiled library; the library is loaded on first use.
"""

from logquant_trt.ops.decode_attention import DecodeAttentionRunner, decode_attention
from logquant_trt.ops.kv_write import append_decode, quantize_prefill

__all__ = ["DecodeAttentionRunner", "append_decode", "decode_attention", "quantize_prefill"]
