# SPDX-License-Identifier: Apache-2.0
"""Serving: a real Triton Inference Server (PyTriton) over the GenerationEngine, a tritonclient
example, and a Triton model repository for the TensorRT engine (docs/serving.md).

Modules import PyTriton, tritonclient and TensorRT only where they are used, so that the package
imports where they are absent (the GPU machine has no PyTriton; nothing here has TensorRT).
"""

from logquant_trt.serve.protocol import INPUTS, MODEL_NAME, OUTPUTS, STREAM_MODEL_NAME, TRT_MODEL_NAME

__all__ = ["INPUTS", "MODEL_NAME", "OUTPUTS", "STREAM_MODEL_NAME", "TRT_MODEL_NAME"]
