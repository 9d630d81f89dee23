# SPDX-License-Identifier: Apache-2.0
"""The ONNX schema of LogQuantAttention (domain `logquant`, version 1): docs/plugin.md as an OpSchema.

Registering it lets onnx.checker and shape inference type the node, and lets onnxscript build it
with all 13 outputs. TensorRT ignores it: its ONNX parser hands any node whose op_type equals a
plugin name to that plugin, picked by the plugin_version/plugin_namespace attributes.
"""

from __future__ import annotations

import onnx
from onnx.defs import OpSchema

from logquant_trt.ops.logquant_attention import (CACHE_OUTPUTS, FIELDS, PLUGIN_INPUTS, PLUGIN_NAME,
                                                 PLUGIN_NAMESPACE, STRING_FIELDS)

__all__ = ["DOMAIN", "OPSET_VERSION", "logquant_attention_schema", "register_schemas"]

DOMAIN = PLUGIN_NAMESPACE
OPSET_VERSION = 1
ACT = "T"  # the `dtype` field: activations, scales and full-precision tokens

# PLUGIN_INPUTS' (type, description) by name, as docs/plugin.md gives them; outputs 1..12 alias the cache inputs.
_INPUT_DOCS = {
    "q": (ACT, "[B, Hq, n, D] queries, post-RoPE"),
    "k": (ACT, "[B, H, n, D] new keys, post-RoPE"),
    "v": (ACT, "[B, H, n, D] new values"),
    "k_codes": ("tensor(int8)", "[P, H, D, G/4] (channel axis) or [P, H, G, D/4] (token axis) 2-bit key codes"),
    "k_params": (ACT, "[P, H, D, 2] (channel) or [P, H, G, D/C, 2] (token) key (scale, min)"),
    "v_codes": ("tensor(int8)", "[P, H, G, D/4] 2-bit value codes"),
    "v_params": (ACT, "[P, H, G, D/C, 2] value (scale, min)"),
    "dup_mask": ("tensor(int32)", "[P, H, G/32] slots with a full-precision copy"),
    "block_table": ("tensor(int32)", "[B, M] page of each block, -1 = none (read only)"),
    "num_sealed": ("tensor(int32)", "[B] sealed blocks"),
    "seq_len": ("tensor(int32)", "[B] cached tokens"),
    "tail_k": (ACT, "[B, H, T, D] full-precision key ring"),
    "tail_v": (ACT, "[B, H, T, D] full-precision value ring"),
    "retained_pos": ("tensor(int32)", "[B, H, S] retained positions, -1 = empty, -(p)-2 = shadowed"),
    "retained_k": (ACT, "[B, H, S, D] retained keys"),
    "retained_v": (ACT, "[B, H, S, D] retained values"),
    "context_lengths": ("tensor(int32)", "[B] valid prompt tokens per sequence (prefill only)"),
}
assert tuple(_INPUT_DOCS) == PLUGIN_INPUTS

_FIELD_DOCS = {
    "policy": "fp16 | kivi | logquant | ott | logquant_ott",
    "bits": "code width, 2",
    "group_size": "G: 32, 64 or 128",
    "residual": "R, the KIVI/OTT full-precision window",
    "window": "W, LogQuant's window; a multiple of G for the LogQuant policies",
    "sink_tokens": "first tokens kept in full precision",
    "pool_size": "OTT outlier pool per (sequence, KV head)",
    "extra_pool_size": "OTT overflow pool",
    "pool_skip_layers": "first layers without a pool",
    "layer_idx": "this layer",
    "key_axis": "channel | token",
    "dtype": "float16 | bfloat16, the type T",
    "num_q_heads": "Hq, a multiple of num_kv_heads",
    "num_kv_heads": "H",
    "head_dim": "D: 64 or 128",
}
assert tuple(_FIELD_DOCS) == FIELDS


def logquant_attention_schema() -> OpSchema:
    string, integer = OpSchema.AttrType.STRING, OpSchema.AttrType.INT
    attributes = [OpSchema.Attribute(name, string if name in STRING_FIELDS else integer, doc, required=True)
                  for name, doc in _FIELD_DOCS.items()]
    attributes += [OpSchema.Attribute("plugin_version", string, "TensorRT plugin version, '1'", required=True),
                   OpSchema.Attribute("plugin_namespace", string, "TensorRT plugin namespace, 'logquant'",
                                      required=True)]
    outputs = [OpSchema.FormalParameter("attention", ACT, "[B, Hq, n, D]; prefill rows past context_lengths are 0")]
    outputs += [OpSchema.FormalParameter(f"{name}_out", _INPUT_DOCS[name][0], f"updated {name} (aliases the input)")
                for name in CACHE_OUTPUTS]
    return OpSchema(
        PLUGIN_NAME, DOMAIN, OPSET_VERSION,
        doc="LogQuant 2-bit KV-cache attention of one layer: prefill of an empty cache (n > 1) or one decode "
            "step (n == 1), updating the cache (docs/plugin.md).",
        inputs=[OpSchema.FormalParameter(name, *_INPUT_DOCS[name]) for name in PLUGIN_INPUTS],
        outputs=outputs,
        type_constraints=[(ACT, ["tensor(float16)", "tensor(bfloat16)"], "activation and cache dtype")],
        attributes=attributes,
    )


def register_schemas() -> None:
    """Register the schema once per process (onnx refuses a second registration)."""
    try:
        onnx.defs.get_schema(PLUGIN_NAME, OPSET_VERSION, DOMAIN)
    except onnx.defs.SchemaError:
        onnx.defs.register_schema(logquant_attention_schema())
