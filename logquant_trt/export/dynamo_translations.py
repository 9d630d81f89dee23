# SPDX-License-Identifier: Apache-2.0
"""onnxscript translation of `logquant::attention` for torch.onnx.export(dynamo=True).

The op maps to one LogQuantAttention node: same inputs, same outputs, the plugin fields as
attributes, plus plugin_version/plugin_namespace, which TensorRT's ONNX parser reads to pick the
plugin (docs/plugin.md).
"""

from __future__ import annotations

from typing import Any

import onnxscript
import torch

from logquant_trt.export.onnx_custom_schemas import DOMAIN, OPSET_VERSION, register_schemas
from logquant_trt.ops.logquant_attention import FIELDS, PLUGIN_INPUTS, PLUGIN_NAMESPACE, PLUGIN_VERSION

register_schemas()  # onnxscript builds the node from the registered schema (13 outputs)
_LOGQUANT = onnxscript.values.Opset(DOMAIN, OPSET_VERSION)


def logquant_attention(q, k, v, k_codes, k_params, v_codes, v_params, dup_mask, block_table, num_sealed,  # noqa: ANN001
                       seq_len, tail_k, tail_v, retained_pos, retained_k, retained_v, context_lengths,
                       policy: str, bits: int, group_size: int, residual: int, window: int, sink_tokens: int,
                       pool_size: int, extra_pool_size: int, pool_skip_layers: int, layer_idx: int,
                       key_axis: str, dtype: str, num_q_heads: int, num_kv_heads: int, head_dim: int) -> Any:
    # The exporter reads inputs and attributes off this signature (annotated parameters are attributes, and it
    # takes no *args), so the names are spelled out; tests/export checks them against PLUGIN_INPUTS and FIELDS,
    # and the node is built from those.
    arguments = locals()
    return _LOGQUANT.LogQuantAttention(*(arguments[name] for name in PLUGIN_INPUTS),
                                       **{field: arguments[field] for field in FIELDS},
                                       plugin_version=PLUGIN_VERSION, plugin_namespace=PLUGIN_NAMESPACE)


def custom_translation_table() -> dict[Any, Any]:
    """The `custom_translation_table` argument of torch.onnx.export."""
    return {torch.ops.logquant.attention.default: logquant_attention}
