# SPDX-License-Identifier: Apache-2.0
"""Export a patched Llama-family model to one ONNX graph with a LogQuantAttention node per layer.

The graph is PagedCausalLM: inputs `input_ids`, `position_ids` (int64 [B, n]), `context_lengths`
(int32 [B]) and each layer's cache `past.<layer>.<name>` (docs/kv_format.md §4, the plugin's
types: codes int8); outputs `logits` and `present.<layer>.<name>` for every cache tensor but
block_table. Batch, new tokens, pages and blocks per sequence are dynamic, so one graph serves
the prefill (n > 1) and decode (n == 1) that the plugin picks from the runtime shapes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from logquant_trt.format import PAGE_TENSOR_NAMES
from logquant_trt.models.paged_lm import PagedCausalLM
from logquant_trt.ops.logquant_attention import (CACHE_INPUTS, CACHE_OUTPUTS, PLUGIN_NAME, PLUGIN_NAMESPACE,
                                                 PLUGIN_VERSION, plugin_config_problems)

__all__ = ["ExportResult", "export_onnx"]

ONNX_OPSET = 18
MODEL_FILENAME = "model.onnx"
METADATA_FILENAME = "logquant_export.json"


@dataclasses.dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    metadata_path: Path
    seconds: float


def cache_names(prefix: str, layers: int, names: tuple[str, ...]) -> list[str]:
    return [f"{prefix}.{i}.{name}" for i in range(layers) for name in names]


def export_onnx(lm: PagedCausalLM, out_dir: str | Path) -> ExportResult:
    """Write out_dir/model.onnx: `lm`, a model patched by PagedCausalLM(model, config).

    Also writes out_dir/logquant_export.json: the plugin's name/version/namespace, the config and
    the cache geometry a runtime needs to allocate the graph's cache inputs.
    """
    problems = plugin_config_problems(lm.config)
    if problems:
        raise ValueError(f"cannot export for the plugin: {'; '.join(problems)}")
    from logquant_trt.export.dynamo_translations import custom_translation_table

    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lm.eval()
    args, dynamic_shapes = _example_inputs(lm)
    input_names = ["input_ids", "position_ids", "context_lengths", *cache_names("past", lm.num_layers, CACHE_INPUTS)]
    output_names = ["logits", *cache_names("present", lm.num_layers, CACHE_OUTPUTS)]
    with torch.no_grad():
        program = torch.onnx.export(lm, args, dynamo=True, input_names=input_names, output_names=output_names,
                                    dynamic_shapes=dynamic_shapes, opset_version=ONNX_OPSET,
                                    custom_translation_table=custom_translation_table(), optimize=True,
                                    verbose=False)
    onnx_path = out_dir / MODEL_FILENAME
    program.save(onnx_path)
    _check_graph(onnx_path, lm.num_layers)
    metadata_path = out_dir / METADATA_FILENAME
    metadata_path.write_text(json.dumps(_metadata(lm, input_names, output_names), indent=2) + "\n")
    return ExportResult(onnx_path, metadata_path, time.perf_counter() - start)


def _example_inputs(lm: PagedCausalLM) -> tuple[tuple[torch.Tensor, ...], dict[str, Any]]:
    # Sizes of 2+ everywhere: torch.export specializes dimensions of size 0 and 1.
    batch, tokens = 2, 3
    cache = lm.empty_cache(batch, 2 * lm.config.group_size)
    input_ids = torch.zeros(batch, tokens, dtype=torch.int64)
    position_ids = torch.arange(tokens, dtype=torch.int64).expand(batch, tokens).contiguous()
    context_lengths = torch.full((batch,), tokens, dtype=torch.int32)
    dim = torch.export.Dim
    b, n, pages, blocks = dim("batch"), dim("num_tokens"), dim("num_pages"), dim("max_blocks")
    per_tensor = {name: {0: pages} for name in PAGE_TENSOR_NAMES}
    per_tensor.update({name: {0: b} for name in CACHE_INPUTS if name not in PAGE_TENSOR_NAMES})
    per_tensor["block_table"] = {0: b, 1: blocks}
    shapes = {"input_ids": {0: b, 1: n}, "position_ids": {0: b, 1: n}, "context_lengths": {0: b},
              "cache": tuple(per_tensor[name] for _ in cache for name in CACHE_INPUTS)}
    return (input_ids, position_ids, context_lengths, *(t for layer in cache for t in layer.tensors)), shapes


def _check_graph(path: Path, layers: int) -> None:
    """onnx.checker, one plugin node per layer with the plugin's selectors, and every dtype explicit
    (TensorRT 11 builds strongly typed networks only)."""
    import onnx

    onnx.checker.check_model(str(path))
    model = onnx.load(str(path), load_external_data=False)
    nodes = [n for n in model.graph.node if n.op_type == PLUGIN_NAME]
    if len(nodes) != layers:
        raise RuntimeError(f"{path}: {len(nodes)} {PLUGIN_NAME} nodes for {layers} layers")
    for node in nodes:
        attrs = {a.name: a.s.decode() for a in node.attribute if a.type == onnx.AttributeProto.STRING}
        if (attrs.get("plugin_version"), attrs.get("plugin_namespace")) != (PLUGIN_VERSION, PLUGIN_NAMESPACE):
            raise RuntimeError(f"{path}: node {node.name} selects plugin {attrs.get('plugin_namespace')!r}/"
                               f"{attrs.get('plugin_version')!r}, expected {PLUGIN_NAMESPACE!r}/{PLUGIN_VERSION!r}")
    untyped = [v.name for v in (*model.graph.input, *model.graph.output, *model.graph.value_info)
               if v.type.tensor_type.elem_type == onnx.TensorProto.UNDEFINED]
    if untyped:
        raise RuntimeError(f"{path}: values without a dtype: {untyped[:10]}")


def _metadata(lm: PagedCausalLM, input_names: list[str], output_names: list[str]) -> dict[str, Any]:
    config = lm.config
    return {
        "plugin": {"name": PLUGIN_NAME, "version": PLUGIN_VERSION, "namespace": PLUGIN_NAMESPACE},
        "logquant_config": config.to_dict(),
        "cache_geometry": {
            "num_layers": lm.num_layers, "num_kv_heads": lm.num_kv_heads, "head_dim": lm.head_dim,
            "num_q_heads": lm.attention[0].fields["num_q_heads"], "group_size": config.group_size,
            "tail_capacity": config.tail_capacity(), "retained_capacity": config.retained_slots(),
            "dynamic_dims": ["batch", "num_tokens", "num_pages", "max_blocks"],
        },
        "inputs": input_names,
        "outputs": output_names,
    }
