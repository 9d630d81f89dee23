# SPDX-License-Identifier: Apache-2.0
"""GPU generation with the 2-bit cache: continuous batching, CUDA-graph decode, CPU reference fallback."""

from logquant_trt.runtime.cache import CacheBackend
from logquant_trt.runtime.engine import GenerationEngine
from logquant_trt.runtime.handle import EngineError, RequestHandle
from logquant_trt.runtime.model import DecoderModel, DecoderShape
from logquant_trt.runtime.requests import FinishReason, GenerationResult, RequestError, SamplingParams

__all__ = ["CacheBackend", "DecoderModel", "DecoderShape", "EngineError", "FinishReason", "GenerationEngine",
           "GenerationResult", "RequestError", "RequestHandle", "SamplingParams"]
