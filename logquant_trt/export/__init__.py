# SPDX-License-Identifier: Apache-2.0
"""ONNX export of patched models with the LogQuantAttention custom op (needs onnx and onnxscript)."""

from logquant_trt.export.export import ExportResult, export_onnx

__all__ = ["ExportResult", "export_onnx"]
