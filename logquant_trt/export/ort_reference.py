# SPDX-License-Identifier: Apache-2.0
"""Run an exported graph in ONNX Runtime on CPU, LogQuantAttention computed by the PyTorch reference.

The plugin node becomes an onnxruntime-extensions Python op calling `logquant::attention`'s eager
implementation, so an exported graph can be checked against PyTorch where no TensorRT exists.
onnxruntime-extensions serves Python ops from its own domain only, so the session gets a copy
of the graph with the node moved there; the file on disk keeps the plugin's domain. Its Python
ops take no float16 tensors either, so the copy casts the activations to float32 around the node
and the op casts them back to float16 (exact both ways) before calling the reference.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from logquant_trt.ops.logquant_attention import (CACHE_OUTPUTS, FIELDS, PLUGIN_INPUTS, PLUGIN_NAME, STRING_FIELDS,
                                                 attention)

ACT_INPUTS = {"q", "k", "v", "k_params", "v_params", "tail_k", "tail_v", "retained_k", "retained_v"}
INT8_INPUTS = {"k_codes", "v_codes"}


@functools.cache
def _register_python_op() -> str:
    """Register the op once per process (float16 activations); returns the Python-op domain."""
    from onnxruntime_extensions import PyCustomOpDef, default_opset_domain, onnx_op

    def dtype_of(name: str) -> int:
        if name in ACT_INPUTS:
            return PyCustomOpDef.dt_float
        return PyCustomOpDef.dt_int8 if name in INT8_INPUTS else PyCustomOpDef.dt_int32

    attrs = {f: PyCustomOpDef.dt_string if f in STRING_FIELDS else PyCustomOpDef.dt_int64 for f in FIELDS}
    attrs.update(plugin_version=PyCustomOpDef.dt_string, plugin_namespace=PyCustomOpDef.dt_string)

    @onnx_op(op_type=PLUGIN_NAME, inputs=[dtype_of(n) for n in PLUGIN_INPUTS],
             outputs=[dtype_of("q"), *(dtype_of(n) for n in CACHE_OUTPUTS)], attrs=attrs)
    def _logquant_attention(*arrays: np.ndarray, **fields: int | str) -> tuple[np.ndarray, ...]:
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
        tensors = [t.half() if t.dtype == torch.float32 else t for t in tensors]
        outputs = attention(*tensors, *(fields[f] for f in FIELDS))
        return tuple((t.float() if t.dtype == torch.float16 else t).numpy() for t in outputs)

    return default_opset_domain()


def reference_session(onnx_path: str | Path, threads: int = 1) -> "onnxruntime.InferenceSession":  # noqa: F821
    """A CPU InferenceSession of the graph with LogQuantAttention run by the reference."""
    import onnx
    import onnxruntime
    from onnxruntime_extensions import get_library_path

    domain = _register_python_op()
    model = onnx.load(str(onnx_path))
    nodes = []
    for node in model.graph.node:
        if node.op_type == PLUGIN_NAME:
            nodes.extend(_as_python_op(node, domain))
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.opset_import.append(onnx.helper.make_opsetid(domain, 1))
    options = onnxruntime.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _as_python_op(node: "onnx.NodeProto", domain: str) -> list["onnx.NodeProto"]:  # noqa: F821
    """The plugin node in the Python-op domain, float16 activations cast to and from float32."""
    import onnx
    from onnx import TensorProto, helper

    dtype = next(a.s.decode() for a in node.attribute if a.name == "dtype")
    if dtype != "float16":
        raise ValueError(f"{node.name}: dtype={dtype!r}; the ONNX Runtime reference runs float16 graphs only")
    casts, inputs, outputs = [], [], []
    for name, value in zip(PLUGIN_INPUTS, node.input):
        if name in ACT_INPUTS:
            inputs.append(f"{value}.f32")
            casts.append(helper.make_node("Cast", [value], [inputs[-1]], to=TensorProto.FLOAT))
        else:
            inputs.append(value)
    after = []
    for name, value in zip(["q", *CACHE_OUTPUTS], node.output):
        if name in ACT_INPUTS:
            outputs.append(f"{value}.f32")
            after.append(helper.make_node("Cast", [outputs[-1]], [value], to=TensorProto.FLOAT16))
        else:
            outputs.append(value)
    op = onnx.NodeProto()
    op.CopyFrom(node)
    op.domain = domain
    del op.input[:], op.output[:]
    op.input.extend(inputs)
    op.output.extend(outputs)
    return [*casts, op, *after]
