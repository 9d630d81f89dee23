# SPDX-License-Identifier: Apache-2.0
"""logquant-trt: a 2-bit LogQuant/OTT KV cache for TensorRT and HF transformers."""

from logquant_trt.config import ConfigError, KeyAxis, LogQuantConfig, Policy

__all__ = ["ConfigError", "KeyAxis", "LogQuantConfig", "Policy"]
__version__ = "0.1.0"
