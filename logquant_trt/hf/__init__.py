# SPDX-License-Identifier: Apache-2.0
"""HF transformers integration."""

from logquant_trt.hf.cache import LogQuantCache

__all__ = ["LogQuantCache"]
