# SPDX-License-Identifier: Apache-2.0
"""Benchmarks (`logquant-trt bench ...`). kernels: the decode-attention kernel vs torch SDPA."""
